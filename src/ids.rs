//! Trace and span identifiers, and the strict hex helpers every format shares.

/// A 128-bit trace id. Never zero (every format treats all-zero as invalid).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct TraceId(u128);

/// A 64-bit span id. Never zero.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct SpanId(u64);

impl TraceId {
    pub fn new(value: u128) -> Option<Self> {
        (value != 0).then_some(TraceId(value))
    }

    pub fn value(self) -> u128 {
        self.0
    }

    /// The low 64 bits: what 64-bit formats (B3 short ids, Datadog) carry.
    pub fn low64(self) -> u64 {
        self.0 as u64
    }

    pub fn high64(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// Appends the 32 lower-case hex digits of the id.
    pub fn write_hex(self, out: &mut String) {
        write_hex(out, self.0, 32);
    }

    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(32);
        self.write_hex(&mut s);
        s
    }
}

impl SpanId {
    pub fn new(value: u64) -> Option<Self> {
        (value != 0).then_some(SpanId(value))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// Appends the 16 lower-case hex digits of the id.
    pub fn write_hex(self, out: &mut String) {
        write_hex(out, u128::from(self.0), 16);
    }

    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(16);
        self.write_hex(&mut s);
        s
    }
}

/// Which hex digits a grammar admits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HexCase {
    /// Only `0-9a-f` (W3C, B3, Cloud Trace).
    Lower,
    /// `0-9a-fA-F`, numerically identical (X-Ray, where producers disagree on case).
    Any,
}

fn hex_digit(byte: u8, case: HexCase) -> Option<u8> {
    // `a`..`f` are 10..15: subtracting `b'a' - 10` maps them there (never below zero).
    match byte {
        b'0'..=b'9' => byte.checked_sub(b'0'),
        b'a'..=b'f' => byte.checked_sub(b'a' - 10),
        b'A'..=b'F' if case == HexCase::Any => byte.checked_sub(b'A' - 10),
        _ => None,
    }
}

/// Parses exactly `digits.len()` hex digits (1 to 32) into an integer.
pub fn parse_hex(digits: &[u8], case: HexCase) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    let mut value: u128 = 0;
    for &byte in digits {
        value = (value << 4) | u128::from(hex_digit(byte, case)?);
    }
    Some(value)
}

/// Parses a hex field of exactly `len` digits.
pub fn parse_hex_exact(digits: &[u8], len: usize, case: HexCase) -> Option<u128> {
    if digits.len() != len {
        return None;
    }
    parse_hex(digits, case)
}

/// A trace id of exactly 16 or 32 lower-case hex digits (B3); 64-bit ids are left-padded.
pub fn parse_trace_id_16_or_32(digits: &[u8]) -> Option<TraceId> {
    match digits.len() {
        16 | 32 => TraceId::new(parse_hex(digits, HexCase::Lower)?),
        _ => None,
    }
}

/// A span id of exactly 16 hex digits.
pub fn parse_span_id_16(digits: &[u8], case: HexCase) -> Option<SpanId> {
    SpanId::new(parse_hex_exact(digits, 16, case)? as u64)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `width` lower-case hex digits of `value` (zero-padded on the left).
pub fn write_hex(out: &mut String, value: u128, width: usize) {
    for digit in (0..width).rev() {
        // Digits beyond the 32 of a u128 are zeros.
        let shift = u32::try_from(digit.saturating_mul(4)).unwrap_or(u32::MAX);
        let nibble = value.checked_shr(shift).unwrap_or(0) & 0xf;
        let hex = HEX_DIGITS.get(nibble as usize).copied().unwrap_or(b'0');
        out.push(char::from(hex));
    }
}

/// Parses an unsigned decimal of 1 to `max_digits` digits that fits in a u64.
pub fn parse_decimal_u64(digits: &[u8], max_digits: usize) -> Option<u64> {
    if digits.is_empty() || digits.len() > max_digits {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in digits {
        let digit = char::from(byte).to_digit(10)?;
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// Whether every byte is visible ASCII or a space: what every trace header grammar is made of.
/// Anything else (control bytes, non-ASCII, non-UTF-8) makes a header invalid.
pub fn is_printable_ascii(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| (0x20..=0x7e).contains(&b))
}

/// Trims the optional white space (SP / HTAB) that HTTP allows around values and list members.
pub fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parsing_table() {
        let cases: &[(&[u8], HexCase, Option<u128>)] = &[
            (b"0", HexCase::Lower, Some(0)),
            (b"ff", HexCase::Lower, Some(255)),
            (b"FF", HexCase::Lower, None),
            (b"FF", HexCase::Any, Some(255)),
            (b"aF", HexCase::Any, Some(0xaf)),
            (b"", HexCase::Lower, None),
            (b"0g", HexCase::Lower, None),
            (b"-1", HexCase::Lower, None),
            (
                b"ffffffffffffffffffffffffffffffff",
                HexCase::Lower,
                Some(u128::MAX),
            ),
            (b"fffffffffffffffffffffffffffffffff", HexCase::Lower, None),
        ];
        for (input, case, want) in cases {
            assert_eq!(
                parse_hex(input, *case),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trace_id_widths() {
        assert_eq!(
            parse_trace_id_16_or_32(b"463ac35c9f6413ad").map(TraceId::value),
            Some(0x463ac35c9f6413ad)
        );
        assert_eq!(
            parse_trace_id_16_or_32(b"463ac35c9f6413ad48485a3953bb6124").map(TraceId::value),
            Some(0x463ac35c9f6413ad48485a3953bb6124)
        );
        assert_eq!(parse_trace_id_16_or_32(b"463ac35c9f6413a"), None);
        assert_eq!(parse_trace_id_16_or_32(b"0000000000000000"), None);
        assert_eq!(parse_trace_id_16_or_32(b"463AC35C9F6413AD"), None);
    }

    #[test]
    fn hex_round_trip_pads() {
        let id = TraceId::new(0x463ac35c9f6413ad).unwrap();
        assert_eq!(id.to_hex(), "0000000000000000463ac35c9f6413ad");
        assert_eq!(SpanId::new(1).unwrap().to_hex(), "0000000000000001");
        assert_eq!(id.low64(), 0x463ac35c9f6413ad);
        assert_eq!(id.high64(), 0);
    }

    #[test]
    fn decimal_table() {
        let cases: &[(&[u8], usize, Option<u64>)] = &[
            (b"0", 20, Some(0)),
            (b"18446744073709551615", 20, Some(u64::MAX)),
            (b"18446744073709551616", 20, None),
            (b"123456789012345678901", 21, None),
            (b"12a", 20, None),
            (b"", 20, None),
            (b"+1", 20, None),
            (b"1234", 3, None),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                parse_decimal_u64(input, *max),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trims_only_sp_and_htab() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\na\r"), b"\na\r");
    }
}
