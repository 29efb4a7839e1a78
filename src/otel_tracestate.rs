//! The OpenTelemetry `ot` entry of W3C `tracestate`: `ot=th:<threshold>;rv:<randomness>;...`
//! (OpenTelemetry specification, "TraceState Handling" and "Probability Sampling").

use crate::bytes::split_once;
use crate::ids::{parse_hex_exact, trim_ows, HexCase};
use crate::sampling::Threshold;

const OT_KEY: &[u8] = b"ot";
/// "The complete `ot` value must be at most 256 characters."
const MAX_OT_VALUE_LEN: usize = 256;
pub use crate::formats::tracecontext::MAX_WRITTEN_LEN;

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
///
/// What is written stays valid and within what every reader keeps: the `ot` value within its
/// 256 characters (sub-keys this filter does not know, `th` and `rv` aside, are left out when
/// they do not fit, as the OpenTelemetry specification allows), and the list within 32 members
/// and [`MAX_WRITTEN_LEN`] bytes (W3C Trace Context, "tracestate Limits": members over 128
/// characters go first, then members from the end).
pub fn with_threshold(lines: &[&[u8]], th: Option<Threshold>) -> Option<String> {
    let ot = ot_with_threshold(lines, th);
    // Never longer than the lines and the new `ot` entry: one allocation, none for nothing.
    let total: usize = lines.iter().map(|line| line.len().saturating_add(1)).sum();
    if total == 0 && ot.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(
        total
            .saturating_add(ot.len())
            .saturating_add(3)
            .min(MAX_WRITTEN_LEN),
    );
    if !ot.is_empty() {
        out.push_str("ot=");
        out.push_str(&ot);
    }
    crate::formats::tracecontext::push_other_members(&mut out, OT_KEY, lines);
    (!out.is_empty()).then_some(out)
}

/// The `ot` value with `th` set (or removed) and the other valid sub-keys kept in order while
/// they fit: `rv` always (the room for it is kept), others only within [`MAX_OT_VALUE_LEN`].
fn ot_with_threshold(lines: &[&[u8]], th: Option<Threshold>) -> String {
    let mut ot = String::new();
    if let Some(encoded) = th.and_then(Threshold::encode_th) {
        ot.push_str("th:");
        ot.push_str(&encoded);
    }
    let Some(pairs) = ot_value(lines).and_then(sub_keys) else {
        return ot;
    };
    let pairs: Vec<(&[u8], &[u8])> = pairs.filter(|(key, _)| *key != b"th").collect();
    // What `rv` takes when it comes later (with its `;`): kept free for it.
    // Only a valid `rv` (14 lower-case hex digits) is sure to fit beside `th`; an invalid one is
    // kept like any other sub-key, while it fits.
    let is_valid_rv = |key: &[u8], value: &[u8]| {
        key == b"rv" && parse_hex_exact(value, 14, HexCase::Lower).is_some()
    };
    let mut reserved = pairs
        .iter()
        .find(|(key, value)| is_valid_rv(key, value))
        .map_or(0, |(key, value)| pair_len(key, value).saturating_add(1));
    for (key, value) in pairs {
        let is_rv = is_valid_rv(key, value);
        let needed = pair_len(key, value).saturating_add(usize::from(!ot.is_empty()));
        let reserve = if is_rv { 0 } else { reserved };
        if !is_rv && ot.len().saturating_add(needed).saturating_add(reserve) > MAX_OT_VALUE_LEN {
            continue;
        }
        if is_rv {
            reserved = 0;
        }
        if !ot.is_empty() {
            ot.push(';');
        }
        // The grammar admits ASCII only, so these conversions cannot fail.
        ot.push_str(std::str::from_utf8(key).unwrap_or_default());
        ot.push(':');
        ot.push_str(std::str::from_utf8(value).unwrap_or_default());
    }
    ot
}

/// Bytes of `key:value`.
fn pair_len(key: &[u8], value: &[u8]) -> usize {
    key.len().saturating_add(1).saturating_add(value.len())
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

    /// Issue 10, defect 2. OpenTelemetry "TraceState Handling": the `ot` value is at most 256
    /// characters; sub-keys other than `th` and `rv` may be dropped to keep it so.
    #[test]
    fn the_ot_value_stays_within_256_characters() {
        // A valid 255-byte line whose `ot` value is 252 characters: `th:0` does not fit beside
        // the unknown `a`, which is left out.
        let line = format!("ot=a:{}", "b".repeat(250));
        assert_eq!(line.len(), 255);
        assert_eq!(
            with_threshold(&[line.as_bytes()], th("0")).as_deref(),
            Some("ot=th:0")
        );
        // Found by `make fuzz` (target tracestate): an `rv` that is not 14 hex digits is no
        // randomness (OpenTelemetry: "rv" is exactly 14 lower-case hex digits) and gets no room
        // kept for it; kept unconditionally, it took the value over 256 and the `th` just
        // written was lost with the whole entry.
        let bad_rv = format!("ot=rv:0ffffffff0.fA{}", "_".repeat(240));
        assert_eq!(bad_rv.len(), 3 + MAX_OT_VALUE_LEN);
        let got = with_threshold(&[bad_rv.as_bytes()], th("6f743d72763a3")).unwrap();
        assert_eq!(got, "ot=th:6f743d72763a3");
        assert_eq!(read(&[got.as_bytes()]).th, th("6f743d72763a3"));
        // `rv` is kept whatever else must go; short unknown keys stay while they fit.
        let long = format!("ot=x:1;a:{};rv:9b8233f7e3a151;y:2", "b".repeat(225));
        let got = with_threshold(&[long.as_bytes()], th("fd70a")).unwrap();
        assert_eq!(got, "ot=th:fd70a;x:1;rv:9b8233f7e3a151;y:2");
        // Exactly 256 fits.
        let exact = format!("ot=a:{}", "b".repeat(249));
        let got = with_threshold(&[exact.as_bytes()], th("0")).unwrap();
        assert_eq!(got.len(), 3 + MAX_OT_VALUE_LEN);
        assert_eq!(got, format!("ot=th:0;{}", &exact[3..]));
        // Whatever is written reads back as a valid entry with the threshold set.
        for written in [got, with_threshold(&[long.as_bytes()], th("c")).unwrap()] {
            assert!(matches!(
                crate::formats::tracecontext::check_tracestate(&[written.as_bytes()]),
                crate::formats::tracecontext::Tracestate::Valid
            ));
            assert_eq!(
                read(&[written.as_bytes()]).th,
                th(if written.contains("th:c") { "c" } else { "0" })
            );
        }
    }

    /// W3C Trace Context, "tracestate Limits": past 512 characters, members over 128 characters
    /// are removed first, then members from the end.
    #[test]
    fn a_rewritten_list_stays_within_512_bytes() {
        let big = |c: &str| format!("{c}={}", "v".repeat(200));
        let small: Vec<String> = (0..20)
            .map(|i| format!("k{i:02}=vvvvvvvvvvvvvvvvvv"))
            .collect();
        // 20 small members (22 bytes each), with two large ones among them.
        let mut list = small.clone();
        list.insert(3, big("big1"));
        list.insert(10, big("big2"));
        let line = list.join(",");
        let got = with_threshold(&[line.as_bytes()], th("8")).unwrap();
        // The two large ones go first: "ot=th:8" and the 20 small ones are 7 + 20 * 23 bytes.
        assert_eq!(got, format!("ot=th:8,{}", small.join(",")));
        assert_eq!(got.len(), 467);
        // Then from the end: 30 small members are 7 + 30 * 23 = 697 bytes, 21 fit.
        let many: Vec<String> = (0..30)
            .map(|i| format!("k{i:02}=vvvvvvvvvvvvvvvvvv"))
            .collect();
        let got = with_threshold(&[many.join(",").as_bytes()], th("8")).unwrap();
        assert_eq!(got, format!("ot=th:8,{}", many[..21].join(",")));
        assert!(got.len() <= MAX_WRITTEN_LEN);
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
