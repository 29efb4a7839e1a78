//! The header formats, one module each. Names follow the `OTEL_PROPAGATORS` convention.

pub mod b3;
pub mod b3multi;
pub mod cloudtrace;
pub mod datadog;
pub mod grpctracebin;
pub mod jaeger;
pub mod tracecontext;
pub mod xray;

use crate::context::{Extraction, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};

/// Injection for a format that lives in one header: set it to `encode(ctx)`, unless the request
/// already carries exactly this context there on a single line (then it passes byte for byte).
/// `carries_debug`: whether the format can tell debug from sampled.
fn inject_single_header(
    ctx: &TraceContext,
    headers: &RequestHeaders,
    incoming: &Extraction,
    name: HeaderName,
    carries_debug: bool,
    encode: fn(&TraceContext) -> String,
    edits: &mut Vec<HeaderEdit>,
) {
    let unchanged = headers.count(name) == 1
        && incoming
            .context()
            .is_some_and(|inc| ctx.matches(inc, carries_debug));
    if !unchanged {
        edits.push(HeaderEdit::Set(name, encode(ctx)));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    TraceContext,
    B3,
    B3Multi,
    XRay,
    CloudTrace,
    Jaeger,
    Datadog,
    GrpcTraceBin,
}

impl Format {
    pub const COUNT: usize = 8;
    /// Every supported format, in the default extraction order.
    pub const ALL: [Format; Format::COUNT] = [
        Format::TraceContext,
        Format::B3,
        Format::B3Multi,
        Format::XRay,
        Format::CloudTrace,
        Format::Jaeger,
        Format::Datadog,
        Format::GrpcTraceBin,
    ];
    pub const DEFAULT_EXTRACT: [Format; Format::COUNT] = Format::ALL;
    pub const DEFAULT_INJECT: [Format; 4] = [
        Format::TraceContext,
        Format::B3Multi,
        Format::XRay,
        Format::CloudTrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::TraceContext => "tracecontext",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::XRay => "xray",
            Format::CloudTrace => "cloudtrace",
            Format::Jaeger => "jaeger",
            Format::Datadog => "datadog",
            Format::GrpcTraceBin => "grpctracebin",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Every header this format reads or writes.
    pub fn headers(self) -> &'static [HeaderName] {
        match self {
            Format::TraceContext => &[HeaderName::Traceparent, HeaderName::Tracestate],
            Format::B3 => &[HeaderName::B3],
            Format::B3Multi => &[
                HeaderName::B3TraceId,
                HeaderName::B3SpanId,
                HeaderName::B3ParentSpanId,
                HeaderName::B3Sampled,
                HeaderName::B3Flags,
            ],
            Format::XRay => &[HeaderName::AmznTraceId],
            Format::CloudTrace => &[HeaderName::CloudTraceContext],
            Format::Jaeger => &[HeaderName::UberTraceId, HeaderName::JaegerDebugId],
            Format::Datadog => &datadog::HEADERS,
            Format::GrpcTraceBin => &[HeaderName::GrpcTraceBin],
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn extract(self, headers: &RequestHeaders) -> Extraction {
        match self {
            Format::TraceContext => tracecontext::extract(headers),
            Format::B3 => b3::extract(headers),
            Format::B3Multi => b3multi::extract(headers),
            Format::XRay => xray::extract(headers),
            Format::CloudTrace => cloudtrace::extract(headers),
            Format::Jaeger => jaeger::extract(headers),
            Format::Datadog => datadog::extract(headers),
            Format::GrpcTraceBin => grpctracebin::extract(headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in Format::ALL {
            assert_eq!(Format::from_name(format.name()), Some(format));
            assert_eq!(Format::ALL[format.index()], format);
        }
        assert_eq!(Format::from_name("zipkin"), None);
        assert_eq!(Format::from_name("B3"), None);
    }
}
