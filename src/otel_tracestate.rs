//! The OpenTelemetry `ot` entry of W3C `tracestate`: `ot=th:<threshold>;rv:<randomness>;...`
//! (OpenTelemetry specification, "TraceState Handling" and "Probability Sampling").

use crate::bytes::split_once;
use crate::ids::{parse_hex_exact, trim_ows, HexCase};
use crate::sampling::Threshold;

const OT_KEY: &[u8] = b"ot";
/// "The complete `ot` value must be at most 256 characters."
const MAX_OT_VALUE_LEN: usize = 256;
const MAX_MEMBERS: usize = 32;

/// What a valid `ot` entry says about sampling.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OtValues {
    /// The threshold the trace was sampled with (`th`).
    pub th: Option<Threshold>,
    /// Explicit randomness (`rv`), which replaces the trace id's low 56 bits as R.
    pub rv: Option<u64>,
}

fn members<'l, 'a>(lines: &'l [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'l {
    lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|member| !member.is_empty())
}

fn split_member(member: &[u8]) -> (&[u8], &[u8]) {
    split_once(member, b'=').unwrap_or((member, &[]))
}

/// The `ot` value's sub-keys, or `None` when it breaks the grammar
/// (`key ":" value *( ";" key ":" value )`, unique lower-case keys, value `[A-Za-z0-9._-]*`).
fn sub_keys(value: &[u8]) -> Option<impl Iterator<Item = (&[u8], &[u8])>> {
    if value.is_empty() || value.len() > MAX_OT_VALUE_LEN {
        return None;
    }
    let pairs = || {
        value
            .split(|&b| b == b';')
            .map(|pair| split_once(pair, b':'))
    };
    for (i, pair) in pairs().enumerate() {
        let (key, sub_value) = pair?;
        let key_ok = key.first().is_some_and(u8::is_ascii_lowercase)
            && key
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let value_ok = sub_value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let repeated = pairs().take(i).flatten().any(|(earlier, _)| earlier == key);
        if !key_ok || !value_ok || repeated {
            return None;
        }
    }
    Some(pairs().flatten())
}

fn ot_value<'a>(lines: &[&'a [u8]]) -> Option<&'a [u8]> {
    members(lines)
        .map(split_member)
        .find(|(key, _)| *key == OT_KEY)
        .map(|(_, value)| value)
}

/// Reads `th` and `rv` from the `ot` entry. An invalid entry, or an invalid sub-value, counts as
/// absent (never as a decision).
pub fn read(lines: &[&[u8]]) -> OtValues {
    let mut values = OtValues::default();
    let Some(pairs) = ot_value(lines).and_then(sub_keys) else {
        return values;
    };
    for (key, value) in pairs {
        match key {
            b"th" => values.th = Threshold::parse_th(value),
            b"rv" => values.rv = parse_hex_exact(value, 14, HexCase::Lower).map(|rv| rv as u64),
            _ => {}
        }
    }
    values
}

/// The list with the `ot` entry's `th` set to `th` (or removed), the entry moved to the front
/// as W3C requires of modified entries, other `ot` sub-keys and other members kept in order (the
/// first entry of a repeated key only).
/// An invalid `ot` entry is replaced. `None` when nothing is left to send.
pub fn with_threshold(lines: &[&[u8]], th: Option<Threshold>) -> Option<String> {
    let mut ot = String::new();
    if let Some(encoded) = th.and_then(Threshold::encode_th) {
        ot.push_str("th:");
        ot.push_str(&encoded);
    }
    if let Some(pairs) = ot_value(lines).and_then(sub_keys) {
        for (key, value) in pairs.filter(|(key, _)| *key != b"th") {
            if !ot.is_empty() {
                ot.push(';');
            }
            // The grammar admits ASCII only, so these conversions cannot fail.
            ot.push_str(std::str::from_utf8(key).unwrap_or_default());
            ot.push(':');
            ot.push_str(std::str::from_utf8(value).unwrap_or_default());
        }
    }
    // Never longer than the lines and the new `ot` entry: one allocation, none for nothing.
    let total: usize = lines.iter().map(|line| line.len().saturating_add(1)).sum();
    if total == 0 && ot.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(total.saturating_add(ot.len()).saturating_add(4));
    let mut room = MAX_MEMBERS;
    if !ot.is_empty() {
        out.push_str("ot=");
        out.push_str(&ot);
        room = room.saturating_sub(1);
    }
    // A key that appears twice keeps its first (leftmost, most recent) entry: W3C allows one
    // entry per key, and deleting entries.
    let mut seen: [&[u8]; MAX_MEMBERS] = [&[]; MAX_MEMBERS];
    let mut kept = 0;
    let others = members(lines).filter(|member| split_member(member).0 != OT_KEY);
    for member in others {
        let key = split_member(member).0;
        let Some(earlier) = seen.get(..kept) else {
            break;
        };
        if earlier.contains(&key) {
            continue;
        }
        // Adding `ot` to a full list drops the rightmost member, as W3C allows.
        let (Some(slot), Ok(text)) = (seen.get_mut(kept), std::str::from_utf8(member)) else {
            break;
        };
        if kept >= room {
            break;
        }
        *slot = key;
        kept = kept.saturating_add(1);
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(text);
    }
    (!out.is_empty()).then_some(out)
}

/// The whole `tracestate` of a trace whose randomness the filter drew: `ot=th:<T>;rv:<R>` when
/// sampled with `th`, `ot=rv:<R>` otherwise (`rv`: exactly 14 lower-case hex digits).
pub fn with_randomness(th: Option<Threshold>, rv: u64) -> String {
    let mut out = String::with_capacity(38);
    out.push_str("ot=");
    if let Some(encoded) = th.and_then(Threshold::encode_th) {
        out.push_str("th:");
        out.push_str(&encoded);
        out.push(';');
    }
    out.push_str("rv:");
    crate::ids::write_hex(&mut out, u128::from(rv), 14);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(digits: &str) -> Option<Threshold> {
        Threshold::parse_th(digits.as_bytes())
    }

    #[test]
    fn read_table() {
        let cases: &[(&[&str], Option<&str>, Option<u64>)] = &[
            (&["ot=th:c"], Some("c"), None),
            (&["ot=th:0"], Some("0"), None),
            (
                &["vendor=x,ot=th:8;rv:9b8233f7e3a151"],
                Some("8"),
                Some(0x9b8233f7e3a151),
            ),
            (
                &["a=1", "ot=rv:6e6d1a75832a2f;th:fd70a"],
                Some("fd70a"),
                Some(0x6e6d1a75832a2f),
            ),
            (&["ot=p:8;r:62"], None, None),
            // A 13-digit rv and a 15-digit th are invalid sub-values.
            (&["ot=th:8;rv:9b8233f7e3a15"], Some("8"), None),
            (&["ot=th:100000000000000"], None, None),
            (&["ot=th:C"], None, None),
            (&["ot=th:"], None, None),
            // Grammar violations void the whole entry.
            (&["ot=th:8;th:c"], None, None),
            (&["ot=th:8;Rv:1"], None, None),
            (&["ot=th:8;junk"], None, None),
            (&["ot=th:8;x:a+b"], None, None),
            (&["vendor=th:8"], None, None),
            (&[], None, None),
        ];
        for &(lines, want_th, want_rv) in cases {
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            let got = read(&lines);
            assert_eq!(got.th, want_th.and_then(th), "{lines:?}");
            assert_eq!(got.rv, want_rv, "{lines:?}");
        }
    }

    #[test]
    fn rewrite_table() {
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (&[], Some("c"), Some("ot=th:c")),
            (&[], None, None),
            (&["vendor=x"], Some("fd70a"), Some("ot=th:fd70a,vendor=x")),
            (
                &["vendor=x", "ot=rv:9b8233f7e3a151;th:0"],
                Some("8"),
                Some("ot=th:8;rv:9b8233f7e3a151,vendor=x"),
            ),
            (&["vendor=x,ot=th:8;p:2"], None, Some("ot=p:2,vendor=x")),
            (&["vendor=x, ot=th:8"], None, Some("vendor=x")),
            (&["ot=th:8"], None, None),
            (&["ot=bad value,a=1"], Some("0"), Some("ot=th:0,a=1")),
            // Repeated keys keep their first entry (W3C: one entry per key), `ot` included.
            (&["foo=1,foo=1"], None, Some("foo=1")),
            (&["foo=1", "bar=3,foo=2"], None, Some("foo=1,bar=3")),
            (&["ot=th:c,a=1,ot=th:8"], Some("8"), Some("ot=th:8,a=1")),
        ];
        for &(lines, th_out, want) in cases {
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            assert_eq!(
                with_threshold(&lines, th_out.and_then(th)).as_deref(),
                want,
                "{lines:?}"
            );
        }
    }

    /// OpenTelemetry "TraceState Handling": `rv` is exactly 14 lower-case hex digits (the
    /// specification's example `ot=rv:6e6d1a75832a2f`), `th` as encoded for `ot=th:c`; both
    /// read back as written.
    #[test]
    fn randomness_table() {
        let cases: &[(Option<&str>, u64, &str)] = &[
            (None, 0x6e6d1a75832a2f, "ot=rv:6e6d1a75832a2f"),
            (Some("c"), 0xd29d6a7215ced0, "ot=th:c;rv:d29d6a7215ced0"),
            (Some("0"), 0x00000000000001, "ot=th:0;rv:00000000000001"),
            (
                Some("fd70a"),
                0xffffffffffffff,
                "ot=th:fd70a;rv:ffffffffffffff",
            ),
        ];
        for &(th_in, rv, want) in cases {
            let got = with_randomness(th_in.and_then(th), rv);
            assert_eq!(got, want);
            let read_back = read(&[got.as_bytes()]);
            assert_eq!(read_back.rv, Some(rv), "{got}");
            assert_eq!(read_back.th, th_in.and_then(th), "{got}");
        }
    }

    #[test]
    fn full_list_drops_the_rightmost_member() {
        let full: String = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let out = with_threshold(&[full.as_bytes()], th("0")).unwrap();
        assert!(out.starts_with("ot=th:0,k0=v,"));
        assert!(out.ends_with(",k30=v"));
        assert_eq!(out.split(',').count(), 32);
    }
}
