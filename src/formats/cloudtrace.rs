//! Google Cloud Trace: `X-Cloud-Trace-Context: {32 hex trace id}[/{decimal span id}][;o={options}]`.

use super::{inject_single_header, Injection, Propagator};
use crate::bytes::split_once;
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{parse_decimal_u64, parse_hex_exact, HexCase, SpanId, TraceId};
use std::fmt::Write;

/// 32 + 1 + 20 + 3 + a few option digits.
const MAX_LEN: usize = 128;
/// Span ids are unsigned 64-bit decimals: at most 20 digits.
const MAX_SPAN_DIGITS: usize = 20;
/// `o` is a small bit field; ten digits already exceed any meaningful value.
const MAX_OPTION_DIGITS: usize = 10;

/// The `x-cloud-trace-context` header.
pub struct CloudTrace;

impl Propagator for CloudTrace {
    type State = ();

    fn extract(headers: &RequestHeaders) -> (Extraction, ()) {
        let extraction = match headers.get(HeaderName::CloudTraceContext) {
            None => Extraction::Absent,
            Some(value) => match parse(value) {
                Some(ctx) => Extraction::Context(ctx),
                None => Extraction::Invalid,
            },
        };
        (extraction, ())
    }

    fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
        inject_single_header(injection, HeaderName::CloudTraceContext, false, encode, edits);
    }
}

/// Accepts `TRACE`, `TRACE/SPAN`, either with `;o=N`. A missing or zero span id leaves the trace
/// id without a parent (as a load balancer's first hop sends it); a missing or empty `o` is no
/// decision. Option bit 0 is "trace enabled".
pub fn parse(value: &[u8]) -> Option<IncomingContext> {
    if value.len() > MAX_LEN {
        return None;
    }
    let (ids, options) = match split_once(value, b';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value, None),
    };
    let (trace, span) = match split_once(ids, b'/') {
        Some((trace, span)) => (trace, Some(span)),
        None => (ids, None),
    };
    let trace_id = TraceId::new(parse_hex_exact(trace, 32, HexCase::Lower)?)?;
    let span_id = match span {
        None | Some(b"") => None,
        Some(digits) => SpanId::new(parse_decimal_u64(digits, MAX_SPAN_DIGITS)?),
    };
    let decision = match options {
        None | Some(b"o=") => None,
        Some(option) => {
            let digits = option.strip_prefix(b"o=")?;
            let bits = parse_decimal_u64(digits, MAX_OPTION_DIGITS)?;
            Some(Decision::from_sampled(bits & 1 == 1))
        }
    };
    Some(IncomingContext {
        trace_id,
        span_id,
        decision,
        random_trace_id: false,
    })
}

pub fn encode(ctx: &TraceContext) -> String {
    let mut out = String::with_capacity(60);
    ctx.trace_id.write_hex(&mut out);
    // Writing to a String cannot fail.
    let _ = write!(out, "/{}", ctx.span_id.value());
    out.push_str(if ctx.decision.is_sampled() {
        ";o=1"
    } else {
        ";o=0"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "105445aa7843bc8bf206b12000100000";

    fn ctx(span: Option<u64>, decision: Option<Decision>) -> Option<IncomingContext> {
        Some(IncomingContext {
            trace_id: TraceId::new(0x105445aa7843bc8bf206b12000100000).unwrap(),
            span_id: span.and_then(SpanId::new),
            decision,
            random_trace_id: false,
        })
    }

    #[test]
    fn parse_table() {
        // The documented example is "105445aa7843bc8bf206b12000100000/1;o=1".
        let cases: Vec<(String, Option<IncomingContext>)> = vec![
            (
                format!("{TRACE}/1;o=1"),
                ctx(Some(1), Some(Decision::Sampled)),
            ),
            (
                format!("{TRACE}/1;o=0"),
                ctx(Some(1), Some(Decision::NotSampled)),
            ),
            (
                format!("{TRACE}/1;o=3"),
                ctx(Some(1), Some(Decision::Sampled)),
            ),
            (
                format!("{TRACE}/1;o=2"),
                ctx(Some(1), Some(Decision::NotSampled)),
            ),
            (format!("{TRACE}/1"), ctx(Some(1), None)),
            (format!("{TRACE}/1;o="), ctx(Some(1), None)),
            (
                format!("{TRACE}/18446744073709551615;o=1"),
                ctx(Some(u64::MAX), Some(Decision::Sampled)),
            ),
            (TRACE.to_string(), ctx(None, None)),
            (format!("{TRACE}/"), ctx(None, None)),
            (format!("{TRACE};o=1"), ctx(None, Some(Decision::Sampled))),
            (format!("{TRACE}/0;o=1"), ctx(None, Some(Decision::Sampled))),
            (format!("{TRACE}/18446744073709551616;o=1"), None),
            (format!("{TRACE}/123456789012345678901"), None),
            (format!("{TRACE}/-1"), None),
            (format!("{TRACE}/12a"), None),
            (format!("{TRACE}/1;o=x"), None),
            (format!("{TRACE}/1;x=1"), None),
            (format!("{}/1;o=1", TRACE.to_uppercase()), None),
            (format!("{}/1;o=1", &TRACE[1..]), None),
            (format!("{}/1;o=1", "0".repeat(32)), None),
            (String::new(), None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input.as_bytes()),
                want,
                "x-cloud-trace-context {input:?}"
            );
        }
    }

    #[test]
    fn encodes_decimal_span() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0x105445aa7843bc8bf206b12000100000).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision: Decision::NotSampled,
            random_trace_id: false,
        };
        // 0x00f067aa0ba902b7 = 67667974448284343
        assert_eq!(encode(&ctx), format!("{TRACE}/67667974448284343;o=0"));
    }
}
