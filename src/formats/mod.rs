//! The trace-header formats: one module each, behind one interface ([`Propagator`]), listed once
//! in the registry at the end of this file. Names follow the `OTEL_PROPAGATORS` convention.
//!
//! The registry is the only list of formats and of the header names the filter knows. It
//! generates [`Format`] (with its configuration name and headers), [`HeaderName`] (with its
//! text and the lookup the header view uses), and [`Extractions`], where a request's formats are
//! read and written through their [`Propagator`]s. Every count and every table indexed by a
//! format or a header name is sized from these generated lists, never by hand.
//!
//! Adding a format: write `src/formats/<module>.rs` with a type implementing [`Propagator`] (and
//! its table tests), then add its entry to the registry below; nothing else in the crate lists
//! formats.

use crate::context::{Extraction, TraceContext, TracestateOut};
use crate::headers::{HeaderEdit, RequestHeaders};
use std::fmt::Debug;

/// What every format module implements: reading the format's headers and writing them.
///
/// Both are associated functions (no `self`): a format is a set of rules, not a value. The
/// registry calls them through [`Extractions`].
pub trait Propagator {
    /// What `extract` learned about the request's headers that `inject` needs again, so that no
    /// header is parsed twice (X-Ray: whether the header was already in canonical form and
    /// whether it carried fields to keep; W3C and Jaeger: whether theirs was canonical, the only
    /// form left byte for byte). `()` for a format that needs nothing.
    type State: Copy + Default + Debug + PartialEq;

    /// Reads this format's headers from the request. Never allocates (tested by
    /// `tests/alloc.rs`): it runs for every configured format on every request.
    fn extract(headers: &RequestHeaders) -> (Extraction, Self::State);

    /// Appends the edits that make the request carry `injection.context` in this format. A
    /// format whose headers already say exactly that is left as it came.
    fn inject(injection: &Injection<'_, '_, Self::State>, edits: &mut Vec<HeaderEdit>);
}

/// Everything a format's [`Propagator::inject`] gets: the same for every format.
#[derive(Clone, Copy, Debug)]
pub struct Injection<'r, 'a, S> {
    /// The one context every injected format carries.
    pub context: &'r TraceContext,
    /// The translator's verdict on `tracestate`, which sampling may rewrite (only W3C Trace
    /// Context writes it).
    pub tracestate: &'r TracestateOut,
    /// The request's headers as they came.
    pub headers: &'r RequestHeaders<'a>,
    /// What this format's `extract` found on the request.
    pub incoming: Extraction,
    /// What this format's `extract` remembered for this call.
    pub state: S,
}

/// Injection for a format that lives in one header: set it to `encode(ctx)`, unless the request
/// already carries exactly this context there on a single line (then it passes byte for byte).
/// `carries_debug`: whether the format can tell debug from sampled.
fn inject_single_header<S>(
    injection: &Injection<'_, '_, S>,
    name: HeaderName,
    carries_debug: bool,
    encode: fn(&TraceContext) -> String,
    edits: &mut Vec<HeaderEdit>,
) {
    let ctx = injection.context;
    let unchanged = injection.headers.count(name) == 1
        && injection
            .incoming
            .context()
            .is_some_and(|inc| ctx.matches(inc, carries_debug));
    if !unchanged {
        edits.push(HeaderEdit::Set(name, encode(ctx)));
    }
}

/// A format's reader in the registry's dispatch table: extracts and stores the result.
type Reader = fn(&RequestHeaders, &mut Extractions);
/// A format's writer in the registry's dispatch table.
type Writer =
    fn(&Extractions, &TraceContext, &TracestateOut, &RequestHeaders, &mut Vec<HeaderEdit>);

/// Generates everything that enumerates formats or header names from one list; see the
/// invocation below for what an entry says.
macro_rules! registry {
    (
        formats {
            $(
                $(#[$format_doc:meta])*
                $format:ident = $module:ident::$propagator:ident, $name:literal [
                    $( $header:ident = $header_name:literal ),+ $(,)?
                ]
            ),+ $(,)?
        }
        other_headers [
            $( $(#[$other_doc:meta])* $other:ident = $other_name:literal ),* $(,)?
        ]
    ) => {
        $( pub mod $module; )+

        /// A trace-context format.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum Format {
            $( $(#[$format_doc])* $format, )+
        }

        impl Format {
            /// How many formats there are.
            pub const COUNT: usize = [$( stringify!($format) ),+].len();
            /// Every format, in the registry's order (the default extraction order).
            pub const ALL: [Format; Format::COUNT] = [$( Format::$format ),+];

            /// The name in the configuration's `extract` and `inject` lists.
            pub fn name(self) -> &'static str {
                match self {
                    $( Format::$format => $name, )+
                }
            }

            pub fn from_name(name: &str) -> Option<Format> {
                match name {
                    $( $name => Some(Format::$format), )+
                    _ => None,
                }
            }

            /// Every header this format reads or writes.
            pub fn headers(self) -> &'static [HeaderName] {
                match self {
                    $( Format::$format => &[$( HeaderName::$header ),+], )+
                }
            }

            /// A dense index in `0..COUNT`, for tables indexed by format.
            pub fn index(self) -> usize {
                self as usize
            }

            /// Reads this format's headers (what [`Extractions::read`] does for each format).
            pub fn extract(self, headers: &RequestHeaders) -> Extraction {
                match self {
                    $( Format::$format => <$module::$propagator as Propagator>::extract(headers).0, )+
                }
            }
        }

        /// Every header name the filter reads or writes (lower-case, as Envoy presents them):
        /// each format's, then the others.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum HeaderName {
            $( $( $header, )+ )+
            $( $(#[$other_doc])* $other, )*
        }

        impl HeaderName {
            /// How many header names there are.
            pub const COUNT: usize =
                [$( $( stringify!($header), )+ )+ $( stringify!($other), )*].len();
            /// Every header name, in the registry's order.
            pub const ALL: [HeaderName; HeaderName::COUNT] =
                [$( $( HeaderName::$header, )+ )+ $( HeaderName::$other, )*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $( HeaderName::$header => $header_name, )+ )+
                    $( HeaderName::$other => $other_name, )*
                }
            }

            /// Envoy hands filters lower-case names (HTTP/2 requires it; the HTTP/1 codec
            /// lower-cases).
            pub fn from_lowercase(name: &str) -> Option<HeaderName> {
                Some(match name {
                    $( $( $header_name => HeaderName::$header, )+ )+
                    $( $other_name => HeaderName::$other, )*
                    _ => return None,
                })
            }

            /// A dense index in `0..COUNT`, for tables indexed by header name.
            pub fn index(self) -> usize {
                self as usize
            }
        }

        /// What each format read from one request, with what its `extract` remembered for its
        /// `inject`. Formats not read stay [`Extraction::Absent`].
        #[derive(Clone, Copy, PartialEq, Debug, Default)]
        pub struct Extractions {
            $( $module: (Extraction, <$module::$propagator as Propagator>::State), )+
        }

        impl Extractions {
            /// Each format's reader, indexed by [`Format::index`]. Dispatch goes through these
            /// tables of function pointers rather than a `match` of inlined calls: measured with
            /// callgrind, the tables take fewer instructions per request.
            const READERS: [Reader; Format::COUNT] = [$(
                |headers, read| {
                    read.$module = <$module::$propagator as Propagator>::extract(headers);
                }
            ),+];
            /// Each format's writer, indexed by [`Format::index`].
            const WRITERS: [Writer; Format::COUNT] = [$(
                |read, context, tracestate, headers, edits| {
                    let (incoming, state) = read.$module;
                    <$module::$propagator as Propagator>::inject(
                        &Injection { context, tracestate, headers, incoming, state },
                        edits,
                    );
                }
            ),+];

            /// Reads each of `formats` (once each: the configuration lists every format at most
            /// once).
            pub fn read(formats: &[Format], headers: &RequestHeaders) -> Extractions {
                let mut read = Extractions::default();
                for &format in formats {
                    if let Some(reader) = Extractions::READERS.get(format.index()) {
                        reader(headers, &mut read);
                    }
                }
                read
            }

            /// What `format` read (`Absent` when it was not read).
            pub fn get(&self, format: Format) -> Extraction {
                match format {
                    $( Format::$format => self.$module.0, )+
                }
            }

            /// Writes `context` (and the `tracestate` verdict) in `format`, given what that
            /// format read from the request.
            pub fn inject(
                &self,
                format: Format,
                context: &TraceContext,
                tracestate: &TracestateOut,
                headers: &RequestHeaders,
                edits: &mut Vec<HeaderEdit>,
            ) {
                if let Some(writer) = Extractions::WRITERS.get(format.index()) {
                    writer(self, context, tracestate, headers, edits);
                }
            }
        }
    };
}

// The registry. An entry: the `Format` variant, the module and its `Propagator` type, the name in
// the configuration, and the headers the format owns (`HeaderName` variant = header name). The
// order is the default extraction order. `other_headers` are the names the filter reads or writes
// that belong to no format.
registry! {
    formats {
        /// W3C Trace Context.
        TraceContext = tracecontext::W3cTraceContext, "tracecontext" [
            Traceparent = "traceparent",
            Tracestate = "tracestate",
        ],
        /// B3 single header.
        B3 = b3::B3Single, "b3" [B3 = "b3"],
        /// B3 multiple headers.
        B3Multi = b3multi::B3Multi, "b3multi" [
            B3TraceId = "x-b3-traceid",
            B3SpanId = "x-b3-spanid",
            B3ParentSpanId = "x-b3-parentspanid",
            B3Sampled = "x-b3-sampled",
            B3Flags = "x-b3-flags",
        ],
        /// AWS X-Ray.
        XRay = xray::XRay, "xray" [AmznTraceId = "x-amzn-trace-id"],
        /// Google Cloud Trace.
        CloudTrace = cloudtrace::CloudTrace, "cloudtrace" [
            CloudTraceContext = "x-cloud-trace-context",
        ],
        /// Jaeger, with its "start a debug trace" header.
        Jaeger = jaeger::Jaeger, "jaeger" [
            UberTraceId = "uber-trace-id",
            JaegerDebugId = "jaeger-debug-id",
        ],
        /// Datadog.
        Datadog = datadog::Datadog, "datadog" [
            DatadogTraceId = "x-datadog-trace-id",
            DatadogParentId = "x-datadog-parent-id",
            DatadogSamplingPriority = "x-datadog-sampling-priority",
            DatadogTags = "x-datadog-tags",
            DatadogOrigin = "x-datadog-origin",
        ],
        /// gRPC's binary trace context (OpenCensus).
        GrpcTraceBin = grpctracebin::GrpcTraceBin, "grpctracebin" [
            GrpcTraceBin = "grpc-trace-bin",
        ],
    }
    other_headers [
        /// W3C `baggage` (its other spellings carry the key in the header name).
        Baggage = "baggage",
        /// Envoy's "force a trace" header, which any client can send.
        ClientTraceId = "x-client-trace-id",
        /// The request line, for sampling rules.
        Authority = ":authority",
        Path = ":path",
        Method = ":method",
    ]
}

impl Format {
    /// The formats read when the configuration does not say.
    pub const DEFAULT_EXTRACT: [Format; Format::COUNT] = Format::ALL;
    /// The formats written when the configuration does not say.
    pub const DEFAULT_INJECT: [Format; 4] = [
        Format::TraceContext,
        Format::B3Multi,
        Format::XRay,
        Format::CloudTrace,
    ];
}

impl Extractions {
    /// Which formats had a present but invalid header.
    pub fn invalid(&self) -> [bool; Format::COUNT] {
        Format::ALL.map(|format| self.get(format) == Extraction::Invalid)
    }
}

// `index()` is the discriminant; tables indexed by it rely on the lists being in declaration
// order, which the macro guarantees and this checks.
const _: () = {
    let mut rest: &[Format] = &Format::ALL;
    let mut i = 0;
    while let [format, tail @ ..] = rest {
        assert!(*format as usize == i);
        (rest, i) = (tail, i + 1);
    }
    let mut rest: &[HeaderName] = &HeaderName::ALL;
    let mut i = 0;
    while let [name, tail @ ..] = rest {
        assert!(*name as usize == i);
        (rest, i) = (tail, i + 1);
    }
};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What the registry's inject writes for `format` on `headers` (after reading them), with
    /// `tracestate` left as it came.
    pub(crate) fn inject_edits(
        format: Format,
        ctx: &TraceContext,
        headers: &RequestHeaders,
    ) -> Vec<HeaderEdit> {
        let read = Extractions::read(&[format], headers);
        let mut edits = Vec::new();
        read.inject(format, ctx, &TracestateOut::Keep, headers, &mut edits);
        edits
    }

    #[test]
    fn names_round_trip() {
        for format in Format::ALL {
            assert_eq!(Format::from_name(format.name()), Some(format));
            assert_eq!(Format::ALL[format.index()], format);
        }
        assert_eq!(Format::from_name("zipkin"), None);
        assert_eq!(Format::from_name("B3"), None);
        assert_eq!(Format::from_name("baggage"), None);
    }

    #[test]
    fn header_names_round_trip_and_belong_to_one_format() {
        for name in HeaderName::ALL {
            assert_eq!(HeaderName::from_lowercase(name.as_str()), Some(name));
            assert_eq!(HeaderName::ALL[name.index()], name);
            let owners = Format::ALL
                .into_iter()
                .filter(|f| f.headers().contains(&name))
                .count();
            assert!(owners <= 1, "{name:?} belongs to {owners} formats");
        }
        assert_eq!(HeaderName::from_lowercase("Traceparent"), None);
        assert_eq!(HeaderName::from_lowercase("x-unknown"), None);
    }

    /// The names the README's format table documents (and users configure).
    #[test]
    fn names_and_headers_are_the_documented_ones() {
        let table: Vec<(&str, Vec<&str>)> = Format::ALL
            .into_iter()
            .map(|f| (f.name(), f.headers().iter().map(|h| h.as_str()).collect()))
            .collect();
        let want: Vec<(&str, Vec<&str>)> = vec![
            ("tracecontext", vec!["traceparent", "tracestate"]),
            ("b3", vec!["b3"]),
            (
                "b3multi",
                vec![
                    "x-b3-traceid",
                    "x-b3-spanid",
                    "x-b3-parentspanid",
                    "x-b3-sampled",
                    "x-b3-flags",
                ],
            ),
            ("xray", vec!["x-amzn-trace-id"]),
            ("cloudtrace", vec!["x-cloud-trace-context"]),
            ("jaeger", vec!["uber-trace-id", "jaeger-debug-id"]),
            (
                "datadog",
                vec![
                    "x-datadog-trace-id",
                    "x-datadog-parent-id",
                    "x-datadog-sampling-priority",
                    "x-datadog-tags",
                    "x-datadog-origin",
                ],
            ),
            ("grpctracebin", vec!["grpc-trace-bin"]),
        ];
        assert_eq!(table, want);
    }

    #[test]
    fn extractions_read_only_the_listed_formats() {
        let pairs: &[(&str, &[u8])] = &[
            ("b3", b"1"),
            ("x-cloud-trace-context", b"not a trace"),
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ];
        let headers = RequestHeaders::from_pairs(pairs.iter().copied());
        let read = Extractions::read(&[Format::B3, Format::CloudTrace], &headers);
        assert_eq!(
            read.get(Format::B3),
            Extraction::DecisionOnly(crate::context::Decision::Sampled)
        );
        assert_eq!(read.get(Format::CloudTrace), Extraction::Invalid);
        // Present, but not asked for.
        assert_eq!(read.get(Format::TraceContext), Extraction::Absent);
        let mut want = [false; Format::COUNT];
        want[Format::CloudTrace.index()] = true;
        assert_eq!(read.invalid(), want);
    }
}
