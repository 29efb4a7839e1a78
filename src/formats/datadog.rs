//! Datadog: `x-datadog-trace-id` (decimal low 64 bits), `x-datadog-parent-id` (decimal),
//! `x-datadog-sampling-priority`, `x-datadog-tags` (`_dd.p.tid` = upper 64 bits) and
//! `x-datadog-origin`, read as Datadog's own tracers read them.

use super::{Format, Injection, Propagator};
use crate::bytes::split_once;
use crate::context::{Decision, Extraction, IncomingContext};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{
    is_printable_ascii, parse_decimal_u64, parse_hex_exact, HexCase, SpanId, TraceId,
};
use std::fmt::Write;

const TID_TAG: &[u8] = b"_dd.p.tid";
/// Datadog tracers cap propagated tags at 512 bytes.
const MAX_TAGS_LEN: usize = 512;
const MAX_ORIGIN_LEN: usize = 256;

/// The `x-datadog-*` headers.
pub struct Datadog;

impl Propagator for Datadog {
    type State = ();

    fn extract(headers: &RequestHeaders) -> (Extraction, ()) {
        (extract(headers), ())
    }

    fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
        inject(injection, edits);
    }
}

/// A decimal 64-bit id; a leading `-` is a signed 64-bit value reinterpreted (older tracers).
fn parse_id(digits: &[u8]) -> Option<u64> {
    match digits.strip_prefix(b"-") {
        Some(magnitude) => {
            let magnitude = parse_decimal_u64(magnitude, 19)?;
            (magnitude <= 1 << 63).then(|| magnitude.wrapping_neg())
        }
        None => parse_decimal_u64(digits, 20),
    }
}

fn parse_priority(digits: &[u8]) -> Option<Decision> {
    let (negative, magnitude) = match digits.strip_prefix(b"-") {
        Some(magnitude) => (true, magnitude),
        None => (false, digits),
    };
    let magnitude = parse_decimal_u64(magnitude, 10)?;
    // > 0 keeps the trace (1 auto keep, 2 user keep); <= 0 drops it.
    Some(Decision::from_sampled(!negative && magnitude > 0))
}

/// The tags as `(key, value)` pairs, or `None` when malformed.
fn tags(value: &[u8]) -> Option<impl Iterator<Item = (&[u8], &[u8])>> {
    if value.len() > MAX_TAGS_LEN || !is_printable_ascii(value) {
        return None;
    }
    let pairs = || {
        value
            .split(|&b| b == b',')
            .filter(|tag| !tag.is_empty())
            .map(|tag| split_once(tag, b'='))
    };
    pairs()
        .all(|pair| pair.is_some())
        .then(|| pairs().flatten())
}

/// The upper 64 bits from `_dd.p.tid` (exactly 16 lower-case hex digits, else ignored).
fn high_bits(tags_value: Option<&[u8]>) -> Option<u64> {
    let (_, tid) = tags(tags_value?)?.find(|(key, _)| *key == TID_TAG)?;
    parse_hex_exact(tid, 16, HexCase::Lower).map(|high| high as u64)
}

fn extract(headers: &RequestHeaders) -> Extraction {
    let Some(trace) = headers.get(HeaderName::DatadogTraceId) else {
        let any = Format::Datadog.headers().iter().any(|&name| headers.contains(name));
        return if any {
            Extraction::Invalid
        } else {
            Extraction::Absent
        };
    };
    parse(headers, trace).map_or(Extraction::Invalid, Extraction::Context)
}

fn parse(headers: &RequestHeaders, trace: &[u8]) -> Option<IncomingContext> {
    let low = parse_id(trace)?;
    // Malformed tags are dropped, not the context (as Datadog's tracers do); the id is then
    // the 64-bit one.
    let high = high_bits(headers.get(HeaderName::DatadogTags)).unwrap_or(0);
    let trace_id = TraceId::new((u128::from(high) << 64) | u128::from(low))?;
    if low == 0 {
        return None;
    }
    let synthetics = headers.get(HeaderName::DatadogOrigin) == Some(b"synthetics");
    let span_id = match headers.get(HeaderName::DatadogParentId) {
        Some(parent) => match parse_id(parent)? {
            // Synthetic tests start traces with parent 0: a trace id without a span.
            0 if synthetics => None,
            0 => return None,
            parent => SpanId::new(parent),
        },
        None if synthetics => None,
        None => return None,
    };
    let decision = match headers.get(HeaderName::DatadogSamplingPriority) {
        None => None,
        Some(priority) => Some(parse_priority(priority)?),
    };
    Some(IncomingContext {
        trace_id,
        span_id,
        decision,
        random_trace_id: false,
    })
}

/// Writes the Datadog headers for `ctx`. When the trace is unchanged, the caller's other
/// `_dd.p.*` tags and its origin are kept; `x-datadog-parent-id: 0` is never written.
fn inject(injection: &Injection<'_, '_, ()>, edits: &mut Vec<HeaderEdit>) {
    let (ctx, headers, incoming) = (injection.context, injection.headers, injection.incoming);
    let single_lines = Format::Datadog
        .headers()
        .iter()
        .all(|&name| headers.count(name) <= 1);
    let same_trace = incoming
        .context()
        .is_some_and(|inc| inc.trace_id == ctx.trace_id);
    if single_lines
        && incoming
            .context()
            .is_some_and(|inc| ctx.matches(inc, false))
    {
        return;
    }
    let mut trace = String::with_capacity(20);
    let _ = write!(trace, "{}", ctx.trace_id.low64());
    edits.push(HeaderEdit::Set(HeaderName::DatadogTraceId, trace));
    edits.push(HeaderEdit::Set(
        HeaderName::DatadogParentId,
        ctx.span_id.value().to_string(),
    ));
    let priority = match ctx.decision {
        Decision::NotSampled => "0",
        Decision::Sampled => "1",
        // A debug trace is a user's explicit keep.
        Decision::Debug => "2",
    };
    edits.push(HeaderEdit::Set(
        HeaderName::DatadogSamplingPriority,
        priority.into(),
    ));

    let kept_value = headers.get(HeaderName::DatadogTags).filter(|_| same_trace);
    // Room for the kept tags and ",_dd.p.tid=<16 hex>" in one allocation.
    let mut tags_out = String::with_capacity(kept_value.map_or(0, <[u8]>::len).saturating_add(27));
    let kept = kept_value.and_then(tags);
    for (key, value) in kept
        .into_iter()
        .flatten()
        .filter(|(key, _)| *key != TID_TAG)
    {
        if !tags_out.is_empty() {
            tags_out.push(',');
        }
        // Tags are printable ASCII when they parsed.
        tags_out.push_str(std::str::from_utf8(key).unwrap_or_default());
        tags_out.push('=');
        tags_out.push_str(std::str::from_utf8(value).unwrap_or_default());
    }
    if ctx.trace_id.high64() != 0 {
        if !tags_out.is_empty() {
            tags_out.push(',');
        }
        let _ = write!(tags_out, "_dd.p.tid={:016x}", ctx.trace_id.high64());
    }
    if !tags_out.is_empty() {
        edits.push(HeaderEdit::Set(HeaderName::DatadogTags, tags_out));
    } else if headers.contains(HeaderName::DatadogTags) {
        edits.push(HeaderEdit::Remove(HeaderName::DatadogTags));
    }
    let origin_ok = headers
        .get(HeaderName::DatadogOrigin)
        .is_some_and(|origin| origin.len() <= MAX_ORIGIN_LEN && is_printable_ascii(origin));
    if headers.contains(HeaderName::DatadogOrigin) && !(same_trace && origin_ok) {
        edits.push(HeaderEdit::Remove(HeaderName::DatadogOrigin));
    }
}

/// The value of `x-datadog-sampling-priority` as the integer it is (−1 user reject, 0 auto
/// reject, 1 auto keep, 2 user keep), `None` when it is not one.
fn priority_value(digits: &[u8]) -> Option<i64> {
    let (negative, magnitude) = match digits.strip_prefix(b"-") {
        Some(magnitude) => (true, magnitude),
        None => (false, digits),
    };
    let magnitude = i64::try_from(parse_decimal_u64(magnitude, 10)?).ok()?;
    if negative {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

/// The longest `dd` value: a W3C `tracestate` value holds at most 256 characters, and dd-trace
/// stops adding tags at 256.
const MAX_TRACESTATE_VALUE: usize = 256;

/// Appends `value` as dd-trace writes values inside its `tracestate` member (dd-trace-go
/// `textmap.go`, `originRgx`): `,`, `;` and `~` become `_`, a run of characters outside
/// 0x21–0x7E becomes one `_`, and `=` becomes `~`. Spaces become `_` too, so that no value ends
/// in a space, which W3C forbids.
fn push_tracestate_encoded(out: &mut String, value: &[u8]) {
    let mut in_run = false;
    for &byte in value {
        if !(0x21..=0x7e).contains(&byte) {
            if !in_run {
                out.push('_');
            }
            in_run = true;
            continue;
        }
        in_run = false;
        out.push(match byte {
            b',' | b';' | b'~' => '_',
            b'=' => '~',
            other => char::from(other),
        });
    }
}

/// The key of dd-trace's member of W3C `tracestate`.
pub const TRACESTATE_KEY: &[u8] = b"dd";

/// The longest `dd` member: `dd=` and a value of at most [`MAX_TRACESTATE_VALUE`].
pub const MAX_TRACESTATE_MEMBER: usize = MAX_TRACESTATE_VALUE + 3;

/// The `dd` member of W3C `tracestate` for a context that came in Datadog headers, as dd-trace
/// writes it (dd-trace-go `composeTracestate`, dd-trace-py `w3c_get_dd_list_member` and
/// `w3c_tracestate_add_p`): `dd=s:<priority>;o:<origin>;p:<parent>;t.<tag>:<value>...`, so that a
/// Datadog-instrumented service behind a W3C hop keeps the priority, the origin and the last
/// Datadog parent.
/// - `s`: the caller's priority when it agrees with `decision`, else the one `decision` maps to
///   (0, 1, or 2 for debug).
/// - `o`: `x-datadog-origin`, encoded.
/// - `p`: the caller's Datadog span id, 16 lower-case hex digits (none for a synthetic test's
///   trace without span).
/// - `t.<key>`: each `_dd.p.<key>` tag of `x-datadog-tags` but `_dd.p.tid` (the upper half of
///   the trace id travels in `traceparent`), until the value would pass 256 characters.
///
/// The member is appended to `out`.
pub fn push_tracestate_member(
    out: &mut String,
    headers: &RequestHeaders,
    incoming: &IncomingContext,
    decision: Decision,
) {
    out.push_str("dd=");
    let start = out.len();
    out.push_str("s:");
    let priority = headers
        .get(HeaderName::DatadogSamplingPriority)
        .and_then(priority_value)
        .filter(|&priority| (priority > 0) == decision.is_sampled());
    let _ = match (priority, decision) {
        (Some(priority), _) => write!(out, "{priority}"),
        (None, Decision::NotSampled) => write!(out, "0"),
        (None, Decision::Sampled) => write!(out, "1"),
        (None, Decision::Debug) => write!(out, "2"),
    };
    let fits = |out: &String, more: usize| {
        out.len().saturating_sub(start).saturating_add(more) <= MAX_TRACESTATE_VALUE
    };
    let origin = headers
        .get(HeaderName::DatadogOrigin)
        .filter(|origin| !origin.is_empty() && is_printable_ascii(origin));
    if let Some(origin) = origin.filter(|origin| fits(out, origin.len().saturating_add(3))) {
        out.push_str(";o:");
        push_tracestate_encoded(out, origin);
    }
    if let Some(span_id) = incoming.span_id.filter(|_| fits(out, 19)) {
        out.push_str(";p:");
        span_id.write_hex(out);
    }
    let tags_value = headers.get(HeaderName::DatadogTags);
    let propagated = tags_value
        .and_then(tags)
        .into_iter()
        .flatten()
        .filter(|(key, _)| *key != TID_TAG)
        .filter_map(|(key, value)| Some((key.strip_prefix(b"_dd.p.")?, value)));
    for (key, value) in propagated {
        // ";t." + key + ":" + value; encoding never lengthens.
        if !fits(out, key.len().saturating_add(value.len()).saturating_add(4)) {
            break;
        }
        out.push_str(";t.");
        push_tracestate_encoded(out, key);
        out.push(':');
        push_tracestate_encoded(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::TraceContext;

    fn run(pairs: &[(&str, &str)]) -> Extraction {
        extract(&RequestHeaders::from_pairs(
            pairs.iter().map(|(k, v)| (*k, v.as_bytes())),
        ))
    }

    fn context(trace: u128, span: Option<u64>, decision: Option<Decision>) -> Extraction {
        Extraction::Context(IncomingContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: span.and_then(SpanId::new),
            decision,
            random_trace_id: false,
        })
    }

    #[test]
    fn extract_table() {
        // 0x3333333333333333 = 3689348814741910323; 0x00f067aa0ba902b7 = 67667974448284343.
        let t = ("x-datadog-trace-id", "3689348814741910323");
        let p = ("x-datadog-parent-id", "67667974448284343");
        let low = 0x3333333333333333;
        let span = Some(0x00f067aa0ba902b7);
        let cases: Vec<(Vec<(&str, &str)>, Extraction)> = vec![
            (vec![], Extraction::Absent),
            (vec![t, p], context(low, span, None)),
            (
                vec![t, p, ("x-datadog-sampling-priority", "1")],
                context(low, span, Some(Decision::Sampled)),
            ),
            (
                vec![t, p, ("x-datadog-sampling-priority", "2")],
                context(low, span, Some(Decision::Sampled)),
            ),
            (
                vec![t, p, ("x-datadog-sampling-priority", "0")],
                context(low, span, Some(Decision::NotSampled)),
            ),
            (
                vec![t, p, ("x-datadog-sampling-priority", "-1")],
                context(low, span, Some(Decision::NotSampled)),
            ),
            (
                vec![
                    t,
                    p,
                    ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6"),
                ],
                context(0x4bf92f3577b34da6_3333333333333333, span, None),
            ),
            // A malformed _dd.p.tid is ignored: a 64-bit id.
            (
                vec![t, p, ("x-datadog-tags", "_dd.p.tid=4BF92F3577B34DA6")],
                context(low, span, None),
            ),
            // Signed ids from older tracers: -1 is 2^64 - 1.
            (
                vec![("x-datadog-trace-id", "-1"), p],
                context(u128::from(u64::MAX), span, None),
            ),
            (
                vec![t, ("x-datadog-origin", "synthetics")],
                context(low, None, None),
            ),
            (
                vec![
                    t,
                    ("x-datadog-parent-id", "0"),
                    ("x-datadog-origin", "synthetics"),
                ],
                context(low, None, None),
            ),
            (vec![t, ("x-datadog-parent-id", "0")], Extraction::Invalid),
            (vec![t], Extraction::Invalid),
            (vec![p], Extraction::Invalid),
            (vec![("x-datadog-trace-id", "0"), p], Extraction::Invalid),
            (vec![("x-datadog-trace-id", "0x33"), p], Extraction::Invalid),
            (
                vec![("x-datadog-trace-id", "18446744073709551616"), p],
                Extraction::Invalid,
            ),
            (
                vec![("x-datadog-trace-id", "-9223372036854775809"), p],
                Extraction::Invalid,
            ),
            (
                vec![t, p, ("x-datadog-sampling-priority", "keep")],
                Extraction::Invalid,
            ),
            (
                // Malformed tags are dropped with their _dd.p.tid; the context stays.
                vec![
                    t,
                    p,
                    (
                        "x-datadog-tags",
                        "no-equals-sign,_dd.p.tid=4bf92f3577b34da6",
                    ),
                ],
                context(low, span, None),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(run(&pairs), want, "datadog {pairs:?}");
        }
    }

    fn inject_edits(pairs: &[(&str, &str)], trace: u128, decision: Decision) -> Vec<HeaderEdit> {
        let headers = RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
        let ctx = TraceContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision,
            random_trace_id: false,
        };
        crate::formats::tests::inject_edits(Format::Datadog, &ctx, &headers)
    }

    #[test]
    fn writes_128_bit_ids_through_tid_and_keeps_tags_of_the_same_trace() {
        let incoming = [
            ("x-datadog-trace-id", "3689348814741910323"),
            ("x-datadog-parent-id", "1"),
            ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6"),
            ("x-datadog-origin", "rum"),
        ];
        let edits = inject_edits(
            &incoming,
            0x4bf92f3577b34da6_3333333333333333,
            Decision::Debug,
        );
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Set(HeaderName::DatadogTraceId, "3689348814741910323".into()),
                HeaderEdit::Set(HeaderName::DatadogParentId, "67667974448284343".into()),
                HeaderEdit::Set(HeaderName::DatadogSamplingPriority, "2".into()),
                HeaderEdit::Set(
                    HeaderName::DatadogTags,
                    "_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6".into()
                ),
            ]
        );
    }

    #[test]
    fn another_trace_drops_tags_and_origin() {
        let incoming = [
            ("x-datadog-trace-id", "1"),
            ("x-datadog-parent-id", "1"),
            ("x-datadog-tags", "_dd.p.dm=-4"),
            ("x-datadog-origin", "rum"),
        ];
        let edits = inject_edits(&incoming, 0x2222, Decision::NotSampled);
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Set(HeaderName::DatadogTraceId, "8738".into()),
                HeaderEdit::Set(HeaderName::DatadogParentId, "67667974448284343".into()),
                HeaderEdit::Set(HeaderName::DatadogSamplingPriority, "0".into()),
                HeaderEdit::Remove(HeaderName::DatadogTags),
                HeaderEdit::Remove(HeaderName::DatadogOrigin),
            ]
        );
    }
}
