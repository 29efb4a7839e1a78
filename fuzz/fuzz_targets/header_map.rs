//! The serialised header map (`proxy_get_header_map_pairs`'s buffer): any bytes, truncated or
//! lying about their lengths, yield only lines inside the buffer, no more than it declares, and
//! re-serialising what was read reads the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::formats::{Extractions, Format};
use tracebridge::header_map::SerializedPairs;
use tracebridge::headers::RequestHeaders;
use tracebridge_fuzz::{cost_guard, CostBound};

/// The host's encoding: count, (name length, value length) per line, then NUL-terminated names
/// and values.
fn serialise(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(&str, &[u8])> = cost_guard(data.len(), CostBound::DEFAULT, || {
        SerializedPairs::new(data).collect()
    });
    let declared = data
        .get(..4)
        .map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize);
    assert!(
        pairs.len() <= declared,
        "{} lines of {declared}",
        pairs.len()
    );
    let range = data.as_ptr_range();
    for (name, value) in &pairs {
        for part in [name.as_bytes(), value] {
            let inside =
                part.is_empty() || (range.contains(&part.as_ptr()) && part.len() <= data.len());
            assert!(inside, "a line outside the buffer");
        }
    }
    let again = serialise(&pairs);
    let reread: Vec<(&str, &[u8])> = SerializedPairs::new(&again).collect();
    assert_eq!(reread, pairs);
    // The whole read path on whatever the buffer held.
    let headers = RequestHeaders::from_pairs(pairs.iter().copied());
    let _ = Extractions::read(&Format::ALL, &headers);
});
