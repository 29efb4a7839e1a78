//! OpenTelemetry consistent probability sampling (the `R >= T` rule of the OpenTelemetry
//! specification's "TraceState: Probability Sampling"): every hop that sees the same trace id and
//! probability reaches the same decision, and a higher probability samples a superset.

use crate::ids::TraceId;

/// 2^56: the size of the randomness space.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
const RANDOMNESS_MASK: u64 = MAX_ADJUSTED_COUNT - 1;
/// The smallest probability the 56-bit threshold can express; below it (except 0) is an error.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// A rejection threshold T in [0, 2^56]: sampled iff R >= T. 2^56 never samples.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Threshold(u64);

impl Threshold {
    pub const ALWAYS: Threshold = Threshold(0);
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// T = 2^56 - round(p * 2^56). `p` must be 0 or within [2^-56, 1] (checked by the config);
    /// anything else is clamped rather than trusted. p * 2^56 is exact in binary floating point,
    /// so the only rounding is `round`.
    pub fn from_probability(p: f64) -> Threshold {
        if p.is_nan() || p <= 0.0 {
            return Threshold::NEVER;
        }
        if p >= 1.0 {
            return Threshold::ALWAYS;
        }
        let kept = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
        Threshold(MAX_ADJUSTED_COUNT.saturating_sub(kept))
    }

    /// The collector's rule for `th` precision: round T to `precision` significant hex digits,
    /// not counting leading `f`s (small p) or leading `0`s (p near 1), so every probability
    /// keeps `precision` digits of accuracy. `precision` is 1..=14; 14 is full precision.
    pub fn from_probability_with_precision(p: f64, precision: u32) -> Threshold {
        let full = Threshold::from_probability(p);
        if full == Threshold::ALWAYS || full == Threshold::NEVER {
            return full;
        }
        let extra = |x: f64| u32::try_from(frexp_exponent(x).saturating_neg() / 4).unwrap_or(0);
        let digits = precision
            .saturating_add(extra(p).max(extra(1.0 - p)))
            .min(14);
        // The digits not kept, four bits each: 0 to 52 bits, so no shift below reaches 64.
        let shift = 14u32.saturating_sub(digits).saturating_mul(4);
        if shift == 0 {
            return full;
        }
        let step = 1u64.checked_shl(shift).unwrap_or(MAX_ADJUSTED_COUNT);
        let mask = u64::MAX.checked_shl(shift).unwrap_or(0);
        let rounded = full.0.saturating_add(step >> 1) & mask;
        // Rounding up to 2^56 would mean "never"; keep the largest expressible threshold.
        Threshold(rounded.min(MAX_ADJUSTED_COUNT.saturating_sub(step)))
    }

    /// Builds a threshold from its raw 56-bit value.
    pub fn from_value(value: u64) -> Option<Threshold> {
        (value < MAX_ADJUSTED_COUNT).then_some(Threshold(value))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// The `th` encoding: 14 zero-padded lower-case hex digits with trailing zeros removed,
    /// `0` for 100%. `None` for NEVER, which has no encoding.
    pub fn encode_th(self) -> Option<String> {
        if self == Threshold::NEVER {
            return None;
        }
        if self.0 == 0 {
            return Some("0".into());
        }
        let mut out = String::with_capacity(14);
        crate::ids::write_hex(&mut out, u128::from(self.0), 14);
        out.truncate(out.trim_end_matches('0').len());
        Some(out)
    }

    /// Parses `th`: 1 to 14 lower-case hex digits, extended with trailing zeros to 14.
    pub fn parse_th(digits: &[u8]) -> Option<Threshold> {
        if digits.is_empty() || digits.len() > 14 {
            return None;
        }
        let mut padded = [b'0'; 14];
        for (slot, &digit) in padded.iter_mut().zip(digits) {
            *slot = digit;
        }
        let value = crate::ids::parse_hex(&padded, crate::ids::HexCase::Lower)? as u64;
        Some(Threshold(value))
    }

    /// The stricter of two thresholds (the smaller probability).
    pub fn max_with(self, other: Threshold) -> Threshold {
        Threshold(self.0.max(other.0))
    }

    pub fn samples(self, randomness: u64) -> bool {
        randomness >= self.0
    }
}

/// The binary exponent e of `x = m * 2^e` with m in [0.5, 1), as C's `frexp`; x is in (0, 1).
fn frexp_exponent(x: f64) -> i32 {
    if x <= 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: normalise first (only for p far below 2^-56, which the config rejects).
        return frexp_exponent(x * 2f64.powi(64)).saturating_sub(64);
    }
    biased.saturating_sub(1022)
}

/// R: the low 56 bits of the trace id (W3C Level 2 puts the random part there).
pub fn randomness(trace_id: TraceId) -> u64 {
    trace_id.low64() & RANDOMNESS_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full-precision thresholds from the OpenTelemetry specification's examples and the
    /// reference implementations' tests (collector `pkg/sampling`, Java `consistent56`).
    #[test]
    fn threshold_table() {
        let cases: &[(f64, u64)] = &[
            (1.0, 0),
            (0.5, 0x80000000000000),
            (0.25, 0xc0000000000000),
            (0.125, 0xe0000000000000),
            (0.0625, 0xf0000000000000),
            (0.01, 0xfd70a3d70a3d71),
            (1.0 / 3.0, 0xaaaaaaaaaaaaac),
            (0.45, 0x8ccccccccccccc),
            (MIN_PROBABILITY, 0xffffffffffffff),
            (0.0, MAX_ADJUSTED_COUNT),
        ];
        for &(p, want) in cases {
            assert_eq!(Threshold::from_probability(p).value(), want, "p = {p}");
        }
    }

    #[test]
    fn decision_table() {
        // (trace id, probability, sampled); vectors from the collector and Java tests plus the
        // W3C example id 4bf92f3577b34da6a3ce929d0e0e4736 (R = ce929d0e0e4736).
        let cases: &[(u128, f64, bool)] = &[
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0.25, true),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0.1, false),
            (0x0000000000000000007fffffffffffff, 0.5, false),
            (0x00000000000000000080000000000000, 0.5, true),
            (0xfefefefefefefefefe80000000000000, 0.5, true),
            (0xfefefefefefefefefe80000000000000, 0.49, false),
            (0x000000000000000000000000000001c8, 1.0, true),
            (0x000000000000000000000000000001c8, 0.999, false),
            (0xffffffffffffffffffffffffffffffff, MIN_PROBABILITY, true),
            (0xffffffffffffffffffffffffffffffff, 0.0, false),
            // R == T samples.
            (0x000000000000000000fd70a3d70a3d71, 0.01, true),
            (0x000000000000000000fd70a3d70a3d70, 0.01, false),
        ];
        for &(trace, p, want) in cases {
            let r = randomness(TraceId::new(trace).unwrap());
            assert_eq!(
                Threshold::from_probability(p).samples(r),
                want,
                "trace {trace:032x} p {p}"
            );
        }
    }

    /// The specification's table of `th` for 1-in-N sampling at precisions 3, 4 and 5.
    #[test]
    fn precision_table() {
        let cases: &[(f64, [&str; 3])] = &[
            (1.0, ["0", "0", "0"]),
            (0.5, ["8", "8", "8"]),
            (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
            (0.25, ["c", "c", "c"]),
            (0.2, ["ccd", "cccd", "ccccd"]),
            (0.125, ["e", "e", "e"]),
            (0.1, ["e66", "e666", "e6666"]),
            (0.0625, ["f", "f", "f"]),
            (0.01, ["fd71", "fd70a", "fd70a4"]),
            (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
            (0.0001, ["fff972", "fff9724", "fff97247"]),
            (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
            (0.000001, ["ffffef4", "ffffef39", "ffffef391"]),
        ];
        for &(p, want) in cases {
            for (precision, th) in [3, 4, 5].into_iter().zip(want) {
                let got = Threshold::from_probability_with_precision(p, precision).encode_th();
                assert_eq!(got.as_deref(), Some(th), "p {p} precision {precision}");
            }
        }
        // Other reference encodings from the collector's tests.
        let others: &[(f64, u32, &str)] = &[
            (2.0 / 3.0, 3, "555"),
            (0.4, 3, "99a"),
            (0.4, 6, "99999a"),
            (0.2, 6, "cccccd"),
            (MIN_PROBABILITY, 4, "ffffffffffffff"),
            (1.0 / 3.0, 14, "aaaaaaaaaaaaac"),
        ];
        for &(p, precision, th) in others {
            let got = Threshold::from_probability_with_precision(p, precision).encode_th();
            assert_eq!(got.as_deref(), Some(th), "p {p} precision {precision}");
        }
        assert_eq!(Threshold::NEVER.encode_th(), None);
    }

    #[test]
    fn th_parsing() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("8", Some(0x80000000000000)),
            ("c", Some(0xc0000000000000)),
            ("08", Some(0x08000000000000)),
            ("10000000000000", Some(0x10000000000000)),
            ("ffffffffffffff", Some(0xffffffffffffff)),
            ("", None),
            ("fffffffffffffff", None),
            ("C", None),
            ("x", None),
        ];
        for &(input, want) in cases {
            assert_eq!(
                Threshold::parse_th(input.as_bytes()).map(Threshold::value),
                want,
                "th {input:?}"
            );
        }
    }

    #[test]
    fn higher_probability_samples_a_superset() {
        let probabilities = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..10_000 {
            // xorshift: a deterministic spread of R values across the 56-bit space.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x & RANDOMNESS_MASK;
            let decisions: Vec<bool> = probabilities
                .iter()
                .map(|&p| Threshold::from_probability(p).samples(r))
                .collect();
            assert!(
                decisions.windows(2).all(|w| !w[0] || w[1]),
                "R {r:014x}: {decisions:?}"
            );
        }
    }
}
