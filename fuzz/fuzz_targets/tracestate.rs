//! `tracestate` and its OpenTelemetry `ot` entry: the input's lines are the header's lines.
//! Reading never fails; rewriting `th` (as sampling does) or writing `th` and `rv` gives an
//! entry that reads back with exactly those values and a list W3C allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::headers::MAX_TRACESTATE_LINES;
use tracebridge::otel_tracestate::{read, with_randomness, with_threshold};
use tracebridge::sampling::Threshold;
use tracebridge_fuzz::{assert_tracestate_valid, cost_guard, tracestate_problem, CostBound};

/// A threshold from the first seven bytes (`None` when out of range).
fn threshold_from(data: &[u8]) -> Option<Threshold> {
    let mut value = 0u64;
    for &b in data.iter().take(7) {
        value = value << 8 | u64::from(b);
    }
    Threshold::from_value(value)
}

fuzz_target!(|data: &[u8]| {
    // The view keeps at most this many lines (more make the header invalid).
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .take(MAX_TRACESTATE_LINES)
        .collect();
    let values = cost_guard(data.len(), CostBound::DEFAULT, || read(&lines));
    let input_valid = lines
        .iter()
        .all(|line| std::str::from_utf8(line).is_ok_and(|l| tracestate_problem(l).is_none()));
    for th in [
        values.th,
        threshold_from(data),
        Some(Threshold::ALWAYS),
        None,
    ] {
        let written = cost_guard(data.len(), CostBound::DEFAULT, || {
            with_threshold(&lines, th)
        });
        let Some(written) = written else {
            continue;
        };
        let got = read(&[written.as_bytes()]);
        let want_th = th.filter(|t| t.encode_th().is_some());
        assert_eq!(
            got.th, want_th,
            "th after with_threshold({th:?}) in {written:?}"
        );
        if input_valid {
            assert_tracestate_valid(&written, "with_threshold of a valid list");
        }
    }
    let rv = threshold_from(data.get(7..).unwrap_or_default()).map_or(0, |t| t.value());
    let written = with_randomness(values.th, rv);
    let got = read(&[written.as_bytes()]);
    assert_eq!(
        got.th,
        values.th.filter(|t| t.encode_th().is_some()),
        "{written}"
    );
    assert_eq!(got.rv, Some(rv), "{written}");
    assert_tracestate_valid(&written, "with_randomness");
});
