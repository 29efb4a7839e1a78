//! Jaeger: `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}` and
//! `jaeger-debug-id` (<https://www.jaegertracing.io/docs/client-libraries/#propagation-format>).

use super::{inject_single_header, Injection, Propagator};
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{parse_hex, HexCase, SpanId, TraceId};

/// 32 + 16 + 16 hex digits, separators and flags, URL-encoded separators at most tripled.
const MAX_LEN: usize = 200;
const SAMPLED: u64 = 0x01;
const DEBUG: u64 = 0x02;

/// `uber-trace-id`, and `jaeger-debug-id` without it.
pub struct Jaeger;

/// What inject needs to know about the `uber-trace-id` extract parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct JaegerState {
    /// `:` separators and a hex parent field: a form every reader takes, so it may pass byte
    /// for byte. The `%3A` form (which OpenTelemetry Python's reader cannot split) and a parent
    /// field that is not hex are rewritten.
    canonical: bool,
}

impl Propagator for Jaeger {
    type State = JaegerState;

    fn extract(headers: &RequestHeaders) -> (Extraction, JaegerState) {
        match headers.get(HeaderName::UberTraceId) {
            Some(value) => match parse_with_state(value) {
                Some((ctx, state)) => (Extraction::Context(ctx), state),
                None => (Extraction::Invalid, JaegerState::default()),
            },
            // A debug id without a context asks for a new, debug-sampled trace.
            None if headers.contains(HeaderName::JaegerDebugId) => (
                Extraction::DecisionOnly(Decision::Debug),
                JaegerState::default(),
            ),
            None => (Extraction::Absent, JaegerState::default()),
        }
    }

    fn inject(injection: &Injection<'_, '_, JaegerState>, edits: &mut Vec<HeaderEdit>) {
        if !injection.state.canonical {
            edits.push(HeaderEdit::Set(
                HeaderName::UberTraceId,
                encode(injection.context),
            ));
            return;
        }
        inject_single_header(injection, HeaderName::UberTraceId, true, encode, edits);
    }
}

/// Splits on `:`, or on a URL-encoded `%3A`/`%3a` when the value has no `:` (clients that
/// URL-encode header values).
fn parts(value: &[u8]) -> Option<[&[u8]; 4]> {
    let mut out: [&[u8]; 4] = [&[]; 4];
    let mut slots = out.iter_mut();
    let encoded = !value.contains(&b':');
    let mut rest = value;
    loop {
        let separator = if encoded {
            rest.windows(3)
                .position(|w| matches!(w, [b'%', b'3', b'a' | b'A']))
                .map(|i| (i, 3))
        } else {
            rest.iter().position(|&b| b == b':').map(|i| (i, 1))
        };
        let slot = slots.next()?;
        match separator {
            Some((at, len)) => {
                let (part, tail) = rest.split_at_checked(at)?;
                *slot = part;
                rest = tail.get(len..)?;
            }
            None => {
                *slot = rest;
                break;
            }
        }
    }
    // Exactly four parts: every slot filled.
    slots.next().is_none().then_some(out)
}

/// The Jaeger client's reading: hex fields of any length up to the id width (short ids are
/// left-padded), flags a hex bit field; debug counts only when sampled. The deprecated parent
/// field is ignored whatever it holds, as OpenTelemetry's Go, Java, Rust and Python readers do.
pub fn parse(value: &[u8]) -> Option<IncomingContext> {
    parse_with_state(value).map(|(ctx, _)| ctx)
}

fn parse_with_state(value: &[u8]) -> Option<(IncomingContext, JaegerState)> {
    if value.len() > MAX_LEN {
        return None;
    }
    let [trace, span, parent, flags] = parts(value)?;
    let trace_id = TraceId::new(parse_hex(trace, HexCase::Lower)?)?;
    if span.len() > 16 || flags.len() > 16 {
        return None;
    }
    let span_id = SpanId::new(parse_hex(span, HexCase::Lower)? as u64)?;
    let flags = parse_hex(flags, HexCase::Lower)? as u64;
    let decision = match (flags & SAMPLED != 0, flags & DEBUG != 0) {
        (true, true) => Decision::Debug,
        (true, false) => Decision::Sampled,
        (false, _) => Decision::NotSampled,
    };
    let hex_parent = parent.len() <= 16 && parse_hex(parent, HexCase::Lower).is_some();
    let canonical = value.contains(&b':') && hex_parent;
    let context = IncomingContext {
        trace_id,
        span_id: Some(span_id),
        decision: Some(decision),
        random_trace_id: false,
    };
    Some((context, JaegerState { canonical }))
}

/// `{32 hex}:{16 hex}:0:{1|0|3}`: the parent is deprecated (OpenTelemetry writes 0).
pub fn encode(ctx: &TraceContext) -> String {
    let mut out = String::with_capacity(53);
    ctx.trace_id.write_hex(&mut out);
    out.push(':');
    ctx.span_id.write_hex(&mut out);
    out.push_str(match ctx.decision {
        Decision::NotSampled => ":0:0",
        Decision::Sampled => ":0:1",
        Decision::Debug => ":0:3",
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(trace: u128, span: u64, decision: Decision) -> Option<IncomingContext> {
        Some(IncomingContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(span),
            decision: Some(decision),
            random_trace_id: false,
        })
    }

    #[test]
    fn parse_table() {
        let full = 0x4bf92f3577b34da6a3ce929d0e0e4736;
        let span = 0x00f067aa0ba902b7;
        let cases: &[(&str, Option<IncomingContext>)] = &[
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                ctx(full, span, Decision::Sampled),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
                ctx(full, span, Decision::NotSampled),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:3",
                ctx(full, span, Decision::Debug),
            ),
            // Debug without sampled is not debug (Jaeger's Go and Rust clients).
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:2",
                ctx(full, span, Decision::NotSampled),
            ),
            // Flags are hex of any length: ff is sampled + debug, 00001 is sampled.
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:ff",
                ctx(full, span, Decision::Debug),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:00001",
                ctx(full, span, Decision::Sampled),
            ),
            // Short ids are left-padded.
            ("1:2:3:1", ctx(1, 2, Decision::Sampled)),
            (
                "a3ce929d0e0e4736:f067aa0ba902b7:00f067aa0ba902b6:1",
                ctx(0xa3ce929d0e0e4736, span, Decision::Sampled),
            ),
            // URL-encoded separators.
            (
                "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1",
                ctx(full, span, Decision::Sampled),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736%3a00f067aa0ba902b7%3a0%3a1",
                ctx(full, span, Decision::Sampled),
            ),
            ("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0", None),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1:9",
                None,
            ),
            ("0:00f067aa0ba902b7:0:1", None),
            ("4bf92f3577b34da6a3ce929d0e0e4736:0:0:1", None),
            (
                "4bf92f3577b34da6a3ce929d0e0e47361:00f067aa0ba902b7:0:1",
                None,
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:100f067aa0ba902b7:0:1",
                None,
            ),
            (
                "4BF92F3577B34DA6A3CE929D0E0E4736:00f067aa0ba902b7:0:1",
                None,
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:x",
                None,
            ),
            // The deprecated parent field is ignored whatever it holds, as OpenTelemetry Go,
            // Java, Rust and Python do; vectors from opentelemetry-go-contrib
            // (`...:whatever:1`) and OpenTelemetry Rust (`12345:54321:ignored_parent_span_id:3`).
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7::1",
                ctx(full, span, Decision::Sampled),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:whatever:1",
                ctx(full, span, Decision::Sampled),
            ),
            (
                "12345:54321:ignored_parent_span_id:3",
                ctx(0x12345, 0x54321, Decision::Debug),
            ),
            (
                "12345%3A54321%3Aignored_parent_span_id%3A3",
                ctx(0x12345, 0x54321, Decision::Debug),
            ),
            ("", None),
        ];
        for &(input, want) in cases {
            assert_eq!(parse(input.as_bytes()), want, "uber-trace-id {input:?}");
        }
    }

    /// The forms left byte for byte are the ones OpenTelemetry Python's reader splits (on `:`)
    /// and every Jaeger client reads (a hex parent); the others are rewritten.
    #[test]
    fn only_canonical_forms_pass_unchanged() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision: Decision::Sampled,
            random_trace_id: false,
        };
        let rewritten = || {
            vec![HeaderEdit::Set(
                HeaderName::UberTraceId,
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1".into(),
            )]
        };
        let cases: &[(&str, Vec<HeaderEdit>)] = &[
            ("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1", vec![]),
            ("4bf92f3577b34da6a3ce929d0e0e4736:f067aa0ba902b7:a:1", vec![]),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1",
                rewritten(),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:whatever:1",
                rewritten(),
            ),
            ("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7::1", rewritten()),
        ];
        for (incoming, want) in cases {
            let headers = RequestHeaders::from_pairs([("uber-trace-id", incoming.as_bytes())]);
            let got = crate::formats::tests::inject_edits(crate::formats::Format::Jaeger, &ctx, &headers);
            assert_eq!(&got, want, "uber-trace-id {incoming:?}");
        }
    }

    #[test]
    fn debug_id_alone_asks_for_a_debug_trace() {
        let headers = RequestHeaders::from_pairs([("jaeger-debug-id", &b"my-request"[..])]);
        assert_eq!(Jaeger::extract(&headers).0, Extraction::DecisionOnly(Decision::Debug));
    }

    #[test]
    fn encodes_full_width_ids() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0xa3ce929d0e0e4736).unwrap(),
            span_id: SpanId::new(2).unwrap(),
            decision: Decision::Debug,
            random_trace_id: false,
        };
        assert_eq!(
            encode(&ctx),
            "0000000000000000a3ce929d0e0e4736:0000000000000002:0:3"
        );
    }
}
