//! B3 multi-header: `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`,
//! `X-B3-Flags` (<https://github.com/openzipkin/b3-propagation#multiple-headers>).

use super::{Format, Injection, Propagator};
use crate::context::{Decision, Extraction, IncomingContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{parse_span_id_16, parse_trace_id_16_or_32, HexCase};

/// The `x-b3-*` headers.
pub struct B3Multi;

impl Propagator for B3Multi {
    type State = ();

    fn extract(headers: &RequestHeaders) -> (Extraction, ()) {
        (extract(headers), ())
    }

    fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
        inject(injection, edits);
    }
}

fn extract(headers: &RequestHeaders) -> Extraction {
    let trace_id = headers.get(HeaderName::B3TraceId);
    let span_id = headers.get(HeaderName::B3SpanId);
    let sampled = headers.get(HeaderName::B3Sampled);
    let flags = headers.get(HeaderName::B3Flags);
    if trace_id.is_none() && span_id.is_none() && sampled.is_none() && flags.is_none() {
        return Extraction::Absent;
    }
    // "1" and "0" are the specification's; "true"/"false" are what older clients send and the
    // README allows a lenient reader to accept. Anything else makes the context invalid.
    let sampled = match sampled {
        None => None,
        Some(b"1" | b"true") => Some(Decision::Sampled),
        Some(b"0" | b"false") => Some(Decision::NotSampled),
        Some(_) => return Extraction::Invalid,
    };
    // "Debug is encoded as X-B3-Flags: 1"; any other value can be ignored.
    let decision = if flags == Some(b"1") {
        Some(Decision::Debug)
    } else {
        sampled
    };
    match (trace_id, span_id) {
        (None, None) => match decision {
            Some(decision) => Extraction::DecisionOnly(decision),
            None => Extraction::Absent,
        },
        (Some(trace_id), Some(span_id)) => {
            let parsed =
                parse_trace_id_16_or_32(trace_id).zip(parse_span_id_16(span_id, HexCase::Lower));
            match parsed {
                Some((trace_id, span_id)) => Extraction::Context(IncomingContext {
                    trace_id,
                    span_id: Some(span_id),
                    decision,
                    random_trace_id: false,
                }),
                None => Extraction::Invalid,
            }
        }
        _ => Extraction::Invalid,
    }
}

/// Writes the five headers for `ctx`, unless the request already carries exactly it on single
/// lines (then a 64-bit trace id and the parent span id pass through as they came).
fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
    let (ctx, headers) = (injection.context, injection.headers);
    let single_lines = Format::B3Multi
        .headers()
        .iter()
        .all(|&name| headers.count(name) <= 1);
    let incoming = injection.incoming.context();
    if single_lines && incoming.is_some_and(|inc| ctx.matches(inc, true)) {
        return;
    }
    edits.push(HeaderEdit::Set(
        HeaderName::B3TraceId,
        ctx.trace_id.to_hex(),
    ));
    edits.push(HeaderEdit::Set(HeaderName::B3SpanId, ctx.span_id.to_hex()));
    // The caller's parent is not part of the context other formats carry; a stale one would
    // point the next hop's span at the wrong grandparent.
    if headers.contains(HeaderName::B3ParentSpanId) {
        edits.push(HeaderEdit::Remove(HeaderName::B3ParentSpanId));
    }
    match ctx.decision {
        // "Debug implies an accept decision, so don't also send the X-B3-Sampled header."
        Decision::Debug => {
            edits.push(HeaderEdit::Set(HeaderName::B3Flags, "1".into()));
            if headers.contains(HeaderName::B3Sampled) {
                edits.push(HeaderEdit::Remove(HeaderName::B3Sampled));
            }
        }
        Decision::Sampled | Decision::NotSampled => {
            let sampled = if ctx.decision.is_sampled() { "1" } else { "0" };
            edits.push(HeaderEdit::Set(HeaderName::B3Sampled, sampled.into()));
            if headers.contains(HeaderName::B3Flags) {
                edits.push(HeaderEdit::Remove(HeaderName::B3Flags));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::TraceContext;
    use crate::ids::{SpanId, TraceId};

    const T32: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";

    fn run(pairs: &[(&str, &str)]) -> Extraction {
        let headers = RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
        extract(&headers)
    }

    fn context(trace: u128, decision: Option<Decision>) -> Extraction {
        Extraction::Context(IncomingContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(0xe457b5a2e4d86bd1),
            decision,
            random_trace_id: false,
        })
    }

    #[test]
    fn extract_table() {
        let full = 0x80f198ee56343ba864fe8b2a57d3eff7;
        let t = ("x-b3-traceid", T32);
        let s = ("x-b3-spanid", SPAN);
        let cases: Vec<(Vec<(&str, &str)>, Extraction)> = vec![
            (vec![], Extraction::Absent),
            (
                vec![("x-b3-parentspanid", "05e3ac9a4f6e3b90")],
                Extraction::Absent,
            ),
            (
                vec![t, s, ("x-b3-sampled", "1")],
                context(full, Some(Decision::Sampled)),
            ),
            (
                vec![t, s, ("x-b3-sampled", "true")],
                context(full, Some(Decision::Sampled)),
            ),
            (
                vec![t, s, ("x-b3-sampled", "0")],
                context(full, Some(Decision::NotSampled)),
            ),
            (
                vec![t, s, ("x-b3-sampled", "false")],
                context(full, Some(Decision::NotSampled)),
            ),
            (vec![t, s], context(full, None)),
            (
                vec![t, s, ("x-b3-flags", "1")],
                context(full, Some(Decision::Debug)),
            ),
            (
                vec![t, s, ("x-b3-flags", "1"), ("x-b3-sampled", "0")],
                context(full, Some(Decision::Debug)),
            ),
            (vec![t, s, ("x-b3-flags", "0")], context(full, None)),
            (
                vec![("x-b3-traceid", "64fe8b2a57d3eff7"), s],
                context(0x64fe8b2a57d3eff7, None),
            ),
            (
                vec![t, s, ("x-b3-parentspanid", "garbage")],
                context(full, None),
            ),
            (vec![t, s, ("x-b3-sampled", "10")], Extraction::Invalid),
            (vec![t, s, ("x-b3-sampled", "True")], Extraction::Invalid),
            (vec![t], Extraction::Invalid),
            (vec![s], Extraction::Invalid),
            (
                vec![("x-b3-traceid", "64fe8b2a57d3eff"), s],
                Extraction::Invalid,
            ),
            (
                vec![("x-b3-traceid", "80F198EE56343BA864FE8B2A57D3EFF7"), s],
                Extraction::Invalid,
            ),
            (
                vec![t, ("x-b3-spanid", "0000000000000000")],
                Extraction::Invalid,
            ),
            (
                vec![("x-b3-sampled", "1")],
                Extraction::DecisionOnly(Decision::Sampled),
            ),
            (
                vec![("x-b3-sampled", "0")],
                Extraction::DecisionOnly(Decision::NotSampled),
            ),
            (
                vec![("x-b3-flags", "1")],
                Extraction::DecisionOnly(Decision::Debug),
            ),
            (vec![("x-b3-flags", "2")], Extraction::Absent),
        ];
        for (pairs, want) in cases {
            assert_eq!(run(&pairs), want, "b3 multi {pairs:?}");
        }
    }

    fn inject_edits(pairs: &[(&str, &str)], decision: Decision) -> Vec<HeaderEdit> {
        let headers = RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
        let ctx = TraceContext {
            trace_id: TraceId::new(0x64fe8b2a57d3eff7).unwrap(),
            span_id: SpanId::new(0xe457b5a2e4d86bd1).unwrap(),
            decision,
            random_trace_id: false,
        };
        crate::formats::tests::inject_edits(Format::B3Multi, &ctx, &headers)
    }

    #[test]
    fn unchanged_context_is_left_alone() {
        let pairs = [
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
        ];
        assert_eq!(inject_edits(&pairs, Decision::Sampled), vec![]);
    }

    #[test]
    fn rewrites_and_removes_stale_headers() {
        let pairs = [
            ("x-b3-traceid", "1111111111111111"),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-flags", "1"),
        ];
        let want = vec![
            HeaderEdit::Set(
                HeaderName::B3TraceId,
                "000000000000000064fe8b2a57d3eff7".into(),
            ),
            HeaderEdit::Set(HeaderName::B3SpanId, SPAN.into()),
            HeaderEdit::Remove(HeaderName::B3ParentSpanId),
            HeaderEdit::Set(HeaderName::B3Sampled, "0".into()),
            HeaderEdit::Remove(HeaderName::B3Flags),
        ];
        assert_eq!(inject_edits(&pairs, Decision::NotSampled), want);
    }

    #[test]
    fn debug_writes_flags_without_sampled() {
        let pairs = [("x-b3-sampled", "1")];
        let want = vec![
            HeaderEdit::Set(
                HeaderName::B3TraceId,
                "000000000000000064fe8b2a57d3eff7".into(),
            ),
            HeaderEdit::Set(HeaderName::B3SpanId, SPAN.into()),
            HeaderEdit::Set(HeaderName::B3Flags, "1".into()),
            HeaderEdit::Remove(HeaderName::B3Sampled),
        ];
        assert_eq!(inject_edits(&pairs, Decision::Debug), want);
    }

    #[test]
    fn repeated_lines_are_rewritten() {
        let pairs = [
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-traceid", "1111111111111111"),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ];
        assert_eq!(inject_edits(&pairs, Decision::Sampled).len(), 3);
    }
}
