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
        Threshold(MAX_ADJUSTED_COUNT - kept.min(MAX_ADJUSTED_COUNT))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    pub fn samples(self, randomness: u64) -> bool {
        randomness >= self.0
    }
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
