//! W3C Trace Context: `traceparent` and `tracestate`
//! (<https://www.w3.org/TR/trace-context/>, version 00 with the forward-compatibility rules).

use super::{Injection, Propagator};
use crate::bytes::split_once;
use crate::context::{Decision, Extraction, IncomingContext, TraceContext, TracestateOut};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{
    is_printable_ascii, parse_hex_exact, trim_ows, write_hex, HexCase, SpanId, TraceId,
};

const SAMPLED: u8 = 0x01;
const RANDOM_TRACE_ID: u8 = 0x02;
/// Version 00 is exactly this long; later versions start with the same 55 characters.
const V00_LEN: usize = 55;
/// Later versions may append fields; anything longer than this is not a trace context.
const MAX_TRACEPARENT_LEN: usize = 512;
/// 32 members of at most 256 + 1 + 256 bytes fit in about 16 KiB; larger is hostile.
pub const MAX_TRACESTATE_BYTES: usize = 16 * 1024;
const MAX_TRACESTATE_MEMBERS: usize = 32;
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;

/// `traceparent` and `tracestate`.
pub struct W3cTraceContext;

/// What inject needs to know about the `traceparent` extract parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TraceparentState {
    /// Version `00` with only the defined flag bits set: the form a version-00 writer sends, so
    /// it may pass byte for byte. A higher version is downgraded to `00` and reserved flag bits
    /// are cleared (W3C Trace Context, "Mutating the traceparent Field" and "trace-flags").
    canonical: bool,
}

impl Propagator for W3cTraceContext {
    type State = TraceparentState;

    fn extract(headers: &RequestHeaders) -> (Extraction, TraceparentState) {
        extract(headers)
    }

    /// Writes `traceparent` unless the request already carries exactly it in canonical form, and
    /// applies the translator's `tracestate` verdict.
    fn inject(injection: &Injection<'_, '_, TraceparentState>, edits: &mut Vec<HeaderEdit>) {
        let ctx = injection.context;
        let unchanged = injection.state.canonical
            && injection.incoming.context().is_some_and(|inc| {
                ctx.matches(inc, false) && inc.random_trace_id == ctx.random_trace_id
            });
        if !unchanged {
            edits.push(HeaderEdit::Set(
                HeaderName::Traceparent,
                encode_traceparent(ctx),
            ));
        }
        match injection.tracestate {
            TracestateOut::Keep => {}
            TracestateOut::Remove => {
                if injection.headers.contains(HeaderName::Tracestate) {
                    edits.push(HeaderEdit::Remove(HeaderName::Tracestate));
                }
            }
            TracestateOut::Set(value) => {
                edits.push(HeaderEdit::Set(HeaderName::Tracestate, value.clone()))
            }
        }
    }
}

fn extract(headers: &RequestHeaders) -> (Extraction, TraceparentState) {
    let none = TraceparentState::default();
    let Some(value) = headers.get(HeaderName::Traceparent) else {
        return (Extraction::Absent, none);
    };
    // Two traceparent lines are ambiguous: the W3C processing model restarts the trace.
    if headers.count(HeaderName::Traceparent) > 1 {
        return (Extraction::Invalid, none);
    }
    match parse(value) {
        Some((ctx, state)) => (Extraction::Context(ctx), state),
        None => (Extraction::Invalid, none),
    }
}

pub fn parse_traceparent(value: &[u8]) -> Option<IncomingContext> {
    parse(value).map(|(ctx, _)| ctx)
}

fn parse(value: &[u8]) -> Option<(IncomingContext, TraceparentState)> {
    // The 55 characters of version 00, as an array whose constant positions cannot be out of
    // bounds. Its fields are checked one by one below; a later version's tail must be text.
    let (v00, tail) = value.split_first_chunk::<V00_LEN>()?;
    if value.len() > MAX_TRACEPARENT_LEN || !is_printable_ascii(value) {
        return None;
    }
    let version = parse_hex_exact(&v00[0..2], 2, HexCase::Lower)?;
    let length_ok = match version {
        0xff => false,
        0x00 => tail.is_empty(),
        _ => tail.first().is_none_or(|&b| b == b'-'),
    };
    if !length_ok || v00[2] != b'-' || v00[35] != b'-' || v00[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::new(parse_hex_exact(&v00[3..35], 32, HexCase::Lower)?)?;
    let span_id = SpanId::new(parse_hex_exact(&v00[36..52], 16, HexCase::Lower)? as u64)?;
    let flags = parse_hex_exact(&v00[53..55], 2, HexCase::Lower)? as u8;
    let context = IncomingContext {
        trace_id,
        span_id: Some(span_id),
        decision: Some(Decision::from_sampled(flags & SAMPLED != 0)),
        random_trace_id: flags & RANDOM_TRACE_ID != 0,
    };
    let canonical = version == 0 && flags & !(SAMPLED | RANDOM_TRACE_ID) == 0;
    Some((context, TraceparentState { canonical }))
}

pub fn encode_traceparent(ctx: &TraceContext) -> String {
    let mut out = String::with_capacity(V00_LEN);
    out.push_str("00-");
    ctx.trace_id.write_hex(&mut out);
    out.push('-');
    ctx.span_id.write_hex(&mut out);
    out.push('-');
    let mut flags = 0u8;
    if ctx.decision.is_sampled() {
        flags |= SAMPLED;
    }
    if ctx.random_trace_id {
        flags |= RANDOM_TRACE_ID;
    }
    write_hex(&mut out, u128::from(flags), 2);
    out
}

/// What the request's `tracestate` lines amount to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tracestate {
    Absent,
    Valid,
    /// Valid but for a key that appears more than once. W3C allows one entry per key ("Combined
    /// Header Value") and allows deleting entries ("Mutating the tracestate Field"): the list is
    /// passed on with the first entry of each key, the leftmost being the most recent position.
    Duplicates,
    Invalid,
}

pub fn tracestate(headers: &RequestHeaders) -> Tracestate {
    if !headers.contains(HeaderName::Tracestate) {
        return Tracestate::Absent;
    }
    match headers.tracestate_lines() {
        Some(lines) => check_tracestate(lines),
        None => Tracestate::Invalid,
    }
}

/// Whether the lines form a list that a strict reader takes as it is (no repeated key): what
/// everything this filter writes must be.
pub fn tracestate_is_valid(lines: &[&[u8]]) -> bool {
    matches!(check_tracestate(lines), Tracestate::Valid)
}

/// Checks the list that several `tracestate` lines form together: member grammar, at most 32
/// members (a repeated key counts each time), and whether a key appears twice. Empty members are
/// allowed.
pub fn check_tracestate(lines: &[&[u8]]) -> Tracestate {
    let total: usize = lines.iter().map(|line| line.len()).sum();
    if total > MAX_TRACESTATE_BYTES {
        return Tracestate::Invalid;
    }
    let mut keys: [&[u8]; MAX_TRACESTATE_MEMBERS] = [&[]; MAX_TRACESTATE_MEMBERS];
    let mut members = 0;
    let mut duplicates = false;
    for member in lines.iter().flat_map(|line| line.split(|&b| b == b',')) {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = split_once(member, b'=') else {
            return Tracestate::Invalid;
        };
        if !is_valid_key(key) || !is_valid_value(value) {
            return Tracestate::Invalid;
        }
        duplicates |= keys.get(..members).is_some_and(|seen| seen.contains(&key));
        // No slot left: a 33rd member.
        let Some(slot) = keys.get_mut(members) else {
            return Tracestate::Invalid;
        };
        *slot = key;
        // Below MAX_TRACESTATE_MEMBERS, since its slot existed.
        members = members.saturating_add(1);
    }
    if duplicates {
        Tracestate::Duplicates
    } else {
        Tracestate::Valid
    }
}

/// The longest `tracestate` this filter writes when it changes one: W3C asks that at least 512
/// characters be propagated, so every reader keeps a list of this size.
pub const MAX_WRITTEN_LEN: usize = 512;
/// W3C: "entries larger than 128 characters long SHOULD be removed first".
const LARGE_MEMBER: usize = 128;

/// Appends to `out`, which holds one member written anew (`key=value`) or nothing, the members
/// of `lines` whose key is not `key`, in order, so that the new entry stays at the front
/// ("Mutating the tracestate Field"). What is written stays within what every reader keeps: a
/// key that appears twice keeps its first (leftmost, most recent) entry, since W3C allows one
/// entry per key and deleting entries; at most 32 members in all (the rightmost are dropped);
/// at most [`MAX_WRITTEN_LEN`] bytes ("tracestate Limits": members over 128 characters are
/// removed first, then members from the end). `out`'s own member must fit (it does: an `ot` or
/// `dd` member is at most 3 + 256 bytes).
pub fn push_other_members(out: &mut String, key: &[u8], lines: &[&[u8]]) {
    fn member_key(member: &[u8]) -> &[u8] {
        split_once(member, b'=').map_or(member, |(key, _)| key)
    }
    let room = MAX_TRACESTATE_MEMBERS.saturating_sub(usize::from(!out.is_empty()));
    // The members kept, in a fixed array (no allocation); a removed member's slot is left
    // empty (members are never empty).
    let mut others: [&str; MAX_TRACESTATE_MEMBERS] = [""; MAX_TRACESTATE_MEMBERS];
    let mut count = 0usize;
    let candidates = lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|member| !member.is_empty() && member_key(member) != key);
    for member in candidates {
        let kept = others.get(..count).unwrap_or_default();
        if kept
            .iter()
            .any(|kept| member_key(kept.as_bytes()) == member_key(member))
        {
            continue;
        }
        let Ok(text) = std::str::from_utf8(member) else {
            continue;
        };
        let Some(slot) = others.get_mut(count).filter(|_| count < room) else {
            break;
        };
        *slot = text;
        count = count.saturating_add(1);
    }
    let kept = others.get_mut(..count).unwrap_or_default();
    let separators = usize::from(!out.is_empty())
        .saturating_add(count)
        .saturating_sub(1);
    let mut len = kept
        .iter()
        .fold(out.len(), |len, member| len.saturating_add(member.len()))
        .saturating_add(separators);
    while len > MAX_WRITTEN_LEN {
        let large = kept.iter().rposition(|member| member.len() > LARGE_MEMBER);
        let last = kept.iter().rposition(|member| !member.is_empty());
        let Some(slot) = large.or(last).and_then(|at| kept.get_mut(at)) else {
            break;
        };
        len = len.saturating_sub(slot.len().saturating_add(1));
        *slot = "";
    }
    for member in kept.iter().filter(|member| !member.is_empty()) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
}

/// `key = (lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")`.
fn is_valid_key(key: &[u8]) -> bool {
    let Some((&first, rest)) = key.split_first() else {
        return false;
    };
    key.len() <= MAX_KEY_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|&b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

/// `value = 0*255(chr) nblk-chr`: printable ASCII except `,` and `=`, not ending in a space.
fn is_valid_value(value: &[u8]) -> bool {
    let Some(&last) = value.last() else {
        return false;
    };
    value.len() <= MAX_VALUE_LEN
        && last != b' '
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_table() {
        // (input, expected (sampled, random)) — cases from the W3C spec and its test suite.
        let long_future = format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like");
        let dot_future = format!("cc-{TRACE}-{SPAN}-01.what-the-future-will-be-like");
        let cases: Vec<(String, Option<(bool, bool)>)> = vec![
            (format!("00-{TRACE}-{SPAN}-01"), Some((true, false))),
            (format!("00-{TRACE}-{SPAN}-00"), Some((false, false))),
            (format!("00-{TRACE}-{SPAN}-03"), Some((true, true))),
            (format!("00-{TRACE}-{SPAN}-02"), Some((false, true))),
            // Reserved flag bits are a sender rule; receivers read the bits they know.
            (format!("00-{TRACE}-{SPAN}-09"), Some((true, false))),
            (long_future, Some((true, false))),
            (format!("cc-{TRACE}-{SPAN}-01"), Some((true, false))),
            (dot_future, None),
            (format!("cc-{TRACE}-{SPAN}-01-\u{e9}"), None),
            (format!("cc-{TRACE}-{SPAN}-01-\t"), None),
            (format!("00-{TRACE}-{SPAN}-01-"), None),
            (format!("ff-{TRACE}-{SPAN}-01"), None),
            (format!("00-{}-{SPAN}-01", "0".repeat(32)), None),
            (format!("00-{TRACE}-{}-01", "0".repeat(16)), None),
            (format!("00-{}-{SPAN}-01", TRACE.to_uppercase()), None),
            (format!("00-{TRACE}-{}-01", SPAN.to_uppercase()), None),
            (format!("00-{TRACE}-{SPAN}-0g"), None),
            (format!("0-{TRACE}-{SPAN}-01"), None),
            (format!("00-{}-{SPAN}-01", &TRACE[1..]), None),
            (format!("00_{TRACE}_{SPAN}_01"), None),
            (String::new(), None),
        ];
        for (input, want) in cases {
            let got = parse_traceparent(input.as_bytes());
            let got = got.map(|c| (c.decision == Some(Decision::Sampled), c.random_trace_id));
            assert_eq!(got, want, "traceparent {input:?}");
        }
    }

    #[test]
    fn traceparent_ids() {
        let ctx = parse_traceparent(format!("00-{TRACE}-{SPAN}-01").as_bytes()).unwrap();
        assert_eq!(ctx.trace_id.value(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id.map(SpanId::value), Some(0x00f067aa0ba902b7));
    }

    #[test]
    fn encodes_only_known_flags() {
        let ctx = TraceContext {
            trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision: Decision::Debug,
            random_trace_id: true,
        };
        assert_eq!(encode_traceparent(&ctx), format!("00-{TRACE}-{SPAN}-03"));
        let unsampled = TraceContext {
            decision: Decision::NotSampled,
            random_trace_id: false,
            ..ctx
        };
        assert_eq!(
            encode_traceparent(&unsampled),
            format!("00-{TRACE}-{SPAN}-00")
        );
    }

    #[test]
    fn tracestate_table() {
        let thirty_two: String = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let thirty_three = format!("{thirty_two},k32=v");
        let long_key = format!("a{}=v", "b".repeat(255));
        let too_long_key = format!("a{}=v", "b".repeat(256));
        let long_value = format!("k={}", "v".repeat(256));
        let too_long_value = format!("k={}", "v".repeat(257));
        use Tracestate::{Duplicates, Invalid, Valid};
        let cases: Vec<(Vec<&str>, Tracestate)> = vec![
            (vec!["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], Valid),
            (vec!["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"], Valid),
            (vec![""], Valid),
            (vec!["foo=1 , , bar=2"], Valid),
            (vec!["tenant@system=1"], Valid),
            (vec!["foo@=1,bar=2"], Valid),
            (vec!["0abc=1"], Valid),
            (vec![thirty_two.as_str()], Valid),
            (vec![long_key.as_str()], Valid),
            (vec![long_value.as_str()], Valid),
            // The W3C test suite's duplicated-keys cases (test_tracestate_duplicated_keys).
            (vec!["foo=1,foo=1"], Duplicates),
            (vec!["foo=1,foo=2"], Duplicates),
            (vec!["foo=1", "foo=1"], Duplicates),
            (vec!["foo=1", "foo=2"], Duplicates),
            (vec!["foo=1,foo=2,bar"], Invalid),
            (vec![thirty_three.as_str()], Invalid),
            (vec![too_long_key.as_str()], Invalid),
            (vec![too_long_value.as_str()], Invalid),
            (vec!["Foo=1"], Invalid),
            (vec!["_foo=1"], Invalid),
            (vec!["foo"], Invalid),
            (vec!["foo="], Invalid),
            (vec!["foo=bar=baz"], Invalid),
            // A trailing space is optional white space around the member, not part of the value.
            (vec!["foo=bar "], Valid),
            (vec!["foo=bar baz"], Valid),
            (vec!["foo=\u{7f}"], Invalid),
            (vec!["foo!=1"], Invalid),
        ];
        for (lines, want) in cases {
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            assert_eq!(check_tracestate(&lines), want, "tracestate {lines:?}");
        }
    }

    #[test]
    fn oversized_tracestate_is_invalid() {
        let huge = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES));
        assert_eq!(check_tracestate(&[huge.as_bytes()]), Tracestate::Invalid);
    }

    /// W3C "Mutating the tracestate Field": an updated entry moves to the front, the others keep
    /// their order; at most 32 members.
    #[test]
    fn member_first_table() {
        let thirty_two: String = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let with_dd = |lines: &[&[u8]]| {
            let mut out = String::from("dd=s:1");
            push_other_members(&mut out, b"dd", lines);
            out
        };
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![], "dd=s:1"),
            (vec!["a=1,dd=s:0;o:rum", "b=2"], "dd=s:1,a=1,b=2"),
            (vec![" a=1 ,, b=2"], "dd=s:1,a=1,b=2"),
            (vec!["ddx=1"], "dd=s:1,ddx=1"),
        ];
        for (lines, want) in cases {
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            assert_eq!(with_dd(&lines), want, "{lines:?}");
        }
        let full = with_dd(&[thirty_two.as_bytes()]);
        assert_eq!(full.split(',').count(), 32);
        assert!(full.ends_with(",k30=v"), "{full}");
        // W3C: one entry per key (the first, leftmost, kept) and, past 512 characters, members
        // over 128 characters go first, then members from the end ("tracestate Limits").
        assert_eq!(with_dd(&[b"a=1,b=2,a=3"]), "dd=s:1,a=1,b=2");
        let big = format!("big={}", "v".repeat(200));
        let small: Vec<String> = (0..20).map(|i| format!("k{i:02}=vvvvvvvvvvvvvvvvvv")).collect();
        let line = format!("{big},{}", small.join(","));
        let bounded = with_dd(&[line.as_bytes()]);
        assert!(bounded.len() <= MAX_WRITTEN_LEN, "{}", bounded.len());
        assert!(!bounded.contains("big="), "{bounded}");
        assert_eq!(bounded, format!("dd=s:1,{}", small.join(",")));
    }

    #[test]
    fn duplicate_traceparent_lines_are_invalid() {
        let one = format!("00-{TRACE}-{SPAN}-01");
        let pairs: Vec<(&str, &[u8])> = vec![
            ("traceparent", one.as_bytes()),
            ("traceparent", one.as_bytes()),
        ];
        let headers = RequestHeaders::from_pairs(pairs);
        assert_eq!(extract(&headers).0, Extraction::Invalid);
    }
}
