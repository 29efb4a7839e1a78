//! Baggage in every spelling: the input's lines are `name: value` headers (`baggage`,
//! `uberctx-<key>`, `ot-baggage-<key>`, anything else). Reading stays within W3C's limits at a
//! cost linear in the input; what was read round-trips through the W3C encoding, and written in
//! all three spellings it reads back the same (when nothing was truncated: otherwise it reads
//! back first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::baggage::{
    encode_w3c, extract, inject, parse_w3c, BaggageConfig, BaggageReport, Spelling, MAX_BYTES,
    MAX_ENTRIES,
};
use tracebridge_fuzz::{apply, cost_guard, header_lines, lossy, view, CostBound};

fuzz_target!(|data: &[u8]| {
    let pairs = header_lines(data);
    let headers = view(&pairs);
    let mut report = BaggageReport::default();
    let entries = cost_guard(data.len(), CostBound::BAGGAGE, || {
        extract(&headers, &mut report)
    });
    assert!(entries.len() <= MAX_ENTRIES, "{} entries", entries.len());
    assert_eq!(report.entries, entries.len());
    let encoded = encode_w3c(&entries);
    assert!(
        encoded.len() <= MAX_BYTES,
        "{} bytes encoded",
        encoded.len()
    );
    if !entries.is_empty() {
        assert_eq!(
            parse_w3c(&[encoded.as_bytes()]).as_deref(),
            Some(&entries[..]),
            "W3C encoding {encoded:?}"
        );
    }
    // Every spelling, with the default bounds on the key-in-the-name headers.
    let config = BaggageConfig {
        extract: true,
        inject: true,
        spellings: Spelling::ALL.to_vec(),
        ..BaggageConfig::default()
    };
    let mut edits = Vec::new();
    cost_guard(data.len(), CostBound::DEFAULT, || {
        inject(&entries, &config, &headers, &mut edits)
    });
    let out = apply(&pairs, &edits);
    let mut again = BaggageReport::default();
    let reread = extract(&view(&out), &mut again);
    if report.truncated {
        // Over the limits, what the filter did not read (prefixed headers past the view's
        // MAX_PREFIXED_BAGGAGE) travels on untouched and may be read at the next hop; what it
        // read must still be there, first.
        assert!(
            reread.starts_with(&entries),
            "written: {:?}\nread {entries:?}\nread back {reread:?}",
            lossy(&out)
        );
    } else {
        assert_eq!(reread, entries, "written: {:?}", lossy(&out));
    }
});
