//! B3 single header: `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or the sampling
//! state alone (<https://github.com/openzipkin/b3-propagation#single-header>).

use super::{inject_single_header, Injection, Propagator};
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{parse_span_id_16, parse_trace_id_16_or_32, HexCase};

/// 32 + 1 + 16 + 1 + 1 + 1 + 16 characters.
const MAX_LEN: usize = 68;

/// The `b3` header.
pub struct B3Single;

impl Propagator for B3Single {
    type State = ();

    fn extract(headers: &RequestHeaders) -> (Extraction, ()) {
        let extraction = match headers.get(HeaderName::B3) {
            None => Extraction::Absent,
            Some(value) => parse(value).unwrap_or(Extraction::Invalid),
        };
        (extraction, ())
    }

    fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
        inject_single_header(injection, HeaderName::B3, true, encode, edits);
    }
}

fn parse_sampling_state(state: &[u8]) -> Option<Decision> {
    match state {
        b"0" => Some(Decision::NotSampled),
        b"1" => Some(Decision::Sampled),
        b"d" => Some(Decision::Debug),
        _ => None,
    }
}

/// Strict widths: trace id 16 or 32 hex, span and parent 16 hex, state exactly one character.
/// `{TraceId}-{SpanId}-{ParentSpanId}` without a state is invalid.
pub fn parse(value: &[u8]) -> Option<Extraction> {
    if value.len() > MAX_LEN {
        return None;
    }
    if value.len() == 1 {
        return parse_sampling_state(value).map(Extraction::DecisionOnly);
    }
    let mut parts = value.split(|&b| b == b'-');
    let trace_id = parse_trace_id_16_or_32(parts.next()?)?;
    let span_id = parse_span_id_16(parts.next()?, HexCase::Lower)?;
    let decision = match parts.next() {
        None => None,
        Some(state) => Some(parse_sampling_state(state)?),
    };
    if let Some(parent) = parts.next() {
        parse_span_id_16(parent, HexCase::Lower)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Extraction::Context(IncomingContext {
        trace_id,
        span_id: Some(span_id),
        decision,
        random_trace_id: false,
    }))
}

pub fn encode(ctx: &TraceContext) -> String {
    // 32 + 1 + 16 + 2 characters.
    let mut out = String::with_capacity(51);
    ctx.trace_id.write_hex(&mut out);
    out.push('-');
    ctx.span_id.write_hex(&mut out);
    out.push_str(match ctx.decision {
        Decision::NotSampled => "-0",
        Decision::Sampled => "-1",
        Decision::Debug => "-d",
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SpanId, TraceId};

    const T32: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T16: &str = "64fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";
    const PARENT: &str = "05e3ac9a4f6e3b90";

    fn ctx(trace: u128, decision: Option<Decision>) -> Option<Extraction> {
        Some(Extraction::Context(IncomingContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(0xe457b5a2e4d86bd1),
            decision,
            random_trace_id: false,
        }))
    }

    #[test]
    fn parse_table() {
        // Examples from the B3 README and the strict grammar.
        let full = 0x80f198ee56343ba864fe8b2a57d3eff7;
        let cases: Vec<(String, Option<Extraction>)> = vec![
            (
                format!("{T32}-{SPAN}-1-{PARENT}"),
                ctx(full, Some(Decision::Sampled)),
            ),
            (
                format!("{T32}-{SPAN}-1"),
                ctx(full, Some(Decision::Sampled)),
            ),
            (
                format!("{T32}-{SPAN}-0"),
                ctx(full, Some(Decision::NotSampled)),
            ),
            (format!("{T32}-{SPAN}-d"), ctx(full, Some(Decision::Debug))),
            (format!("{T32}-{SPAN}"), ctx(full, None)),
            (
                format!("{T16}-{SPAN}-1"),
                ctx(0x64fe8b2a57d3eff7, Some(Decision::Sampled)),
            ),
            (
                "0".into(),
                Some(Extraction::DecisionOnly(Decision::NotSampled)),
            ),
            (
                "1".into(),
                Some(Extraction::DecisionOnly(Decision::Sampled)),
            ),
            ("d".into(), Some(Extraction::DecisionOnly(Decision::Debug))),
            ("2".into(), None),
            ("true".into(), None),
            (format!("{T32}-{SPAN}-{PARENT}"), None),
            (format!("{T32}-{SPAN}-true"), None),
            (format!("{T32}-{SPAN}-1-"), None),
            (format!("{T32}-{SPAN}-"), None),
            (format!("{T32}-{SPAN}-1-0"), None),
            (format!("{T32}-{SPAN}-1-{PARENT}-x"), None),
            (format!("{}-{SPAN}-1", T32.to_uppercase()), None),
            (format!("{}-{SPAN}-1", &T32[1..]), None),
            (format!("{T32}-0000000000000000-1"), None),
            (format!("{}-{SPAN}-1", "0".repeat(32)), None),
            (String::new(), None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input.as_bytes()), want, "b3 {input:?}");
        }
    }

    #[test]
    fn encodes_32_hex_and_state() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0x64fe8b2a57d3eff7).unwrap(),
            span_id: SpanId::new(0xe457b5a2e4d86bd1).unwrap(),
            decision: Decision::Debug,
            random_trace_id: false,
        };
        assert_eq!(encode(&ctx), format!("0000000000000000{T16}-{SPAN}-d"));
    }
}
