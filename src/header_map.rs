//! The header map as proxy-wasm hosts serialise it (`proxy_get_header_map_pairs`): a
//! little-endian u32 count, a (name length, value length) u32 pair per line, then each name and
//! value followed by a NUL byte. Read in place, so a request's lines are borrowed rather than
//! copied into a `String` and a `Vec` each.

/// The lines of a serialised header map, in order. Stops at the first inconsistency (a
/// truncated or lying buffer) instead of panicking; skips names that are not UTF-8 (no trace
/// header is one).
pub struct SerializedPairs<'a> {
    bytes: &'a [u8],
    next_line: usize,
    count: usize,
    data: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    let word: [u8; 4] = word.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

impl<'a> SerializedPairs<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let count = u32_at(bytes, 0).unwrap_or(0);
        SerializedPairs {
            bytes,
            next_line: 0,
            count,
            data: count
                .checked_mul(8)
                .and_then(|n| n.checked_add(4))
                .unwrap_or(usize::MAX),
        }
    }

    fn line(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let header = self.next_line.checked_mul(8)?.checked_add(4)?;
        let name_len = u32_at(self.bytes, header)?;
        let value_len = u32_at(self.bytes, header.checked_add(4)?)?;
        let name_end = self.data.checked_add(name_len)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let name = self.bytes.get(self.data..name_end)?;
        let value = self.bytes.get(value_start..value_end)?;
        self.data = value_end.checked_add(1)?;
        Some((name, value))
    }
}

impl<'a> Iterator for SerializedPairs<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next_line < self.count {
            let Some((name, value)) = self.line() else {
                self.next_line = self.count;
                return None;
            };
            // Below `count`, so it cannot overflow.
            self.next_line = self.next_line.saturating_add(1);
            if let Ok(name) = std::str::from_utf8(name) {
                return Some((name, value));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialise(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_every_line_in_order() {
        let pairs: &[(&[u8], &[u8])] = &[
            (b":path", b"/"),
            (b"tracestate", b"a=1"),
            (b"tracestate", b""),
            (b"x", b"\xff"),
        ];
        let bytes = serialise(pairs);
        let got: Vec<(&str, &[u8])> = SerializedPairs::new(&bytes).collect();
        assert_eq!(
            got,
            vec![
                (":path", &b"/"[..]),
                ("tracestate", b"a=1"),
                ("tracestate", b""),
                ("x", b"\xff")
            ]
        );
    }

    #[test]
    fn skips_names_that_are_not_utf8() {
        let bytes = serialise(&[(b"\xff", b"1"), (b"b3", b"0")]);
        let got: Vec<(&str, &[u8])> = SerializedPairs::new(&bytes).collect();
        assert_eq!(got, vec![("b3", &b"0"[..])]);
    }

    #[test]
    fn stops_at_a_truncated_or_lying_buffer() {
        let bytes = serialise(&[(b"a", b"1"), (b"b", b"2")]);
        // Every cut that loses part of the second line (its final NUL aside) yields the first only.
        for cut in 0..bytes.len() - 1 {
            let got: Vec<(&str, &[u8])> = SerializedPairs::new(&bytes[..cut]).collect();
            assert!(got.len() <= 1, "cut {cut}: {got:?}");
        }
        let mut lying = bytes.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SerializedPairs::new(&lying).count(), 0);
        let mut huge_count = bytes;
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SerializedPairs::new(&huge_count).count(), 0);
        assert_eq!(SerializedPairs::new(&[]).count(), 0);
    }
}
