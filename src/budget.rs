//! Per-second budgets for sampled root decisions and forced traces, shared by every worker of a
//! proxy. The state machine is pure; the filter keeps it in proxy-wasm shared data.
//!
//! The cap is consistent: it never looks at a trace's randomness. It raises the threshold T for
//! every root decision of a second (`T = max(T_route, T_cap)`), with `T_cap` adapted once per
//! second so the sampled roots land near the target; a hard limit of twice the target per second
//! stops bursts while the adaptation catches up.

use crate::sampling::{Threshold, MIN_PROBABILITY};

/// How far the cap probability may move in one second, so a noisy second cannot swing it wildly.
const MAX_STEP_UP: f64 = 4.0;
const MAX_STEP_DOWN: f64 = 1.0 / 64.0;
/// The hard backstop, as a multiple of the target.
pub const HARD_LIMIT_FACTOR: u64 = 2;

/// What a decision needs from the budget.
pub trait Budget {
    /// The cap's threshold for root decisions now (`ALWAYS` when there is no cap).
    fn cap_threshold(&mut self) -> Threshold;
    /// A root decision would sample: count it, and say whether the hard limit lets it through.
    fn admit_sampled_root(&mut self, unix_seconds: u64) -> bool;
    /// A valid force token: count it, and say whether the force limit lets it through.
    fn admit_forced(&mut self, unix_seconds: u64) -> bool;
}

/// No cap and no force limit.
pub struct Unlimited;

impl Budget for Unlimited {
    fn cap_threshold(&mut self) -> Threshold {
        Threshold::ALWAYS
    }
    fn admit_sampled_root(&mut self, _: u64) -> bool {
        true
    }
    fn admit_forced(&mut self, _: u64) -> bool {
        true
    }
}

/// The limits from the configuration.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Limits {
    /// `sampling.max_sampled_per_second`.
    pub max_sampled_per_second: Option<u64>,
    /// `sampling.force.max_per_second`.
    pub max_forced_per_second: u64,
    /// `sampling.precision`, for the cap's threshold.
    pub precision: u32,
}

/// The shared state: counts for the current second and the cap probability in force.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct BudgetState {
    pub second: u64,
    /// Root decisions that would have sampled this second (before the hard limit).
    pub wanted: u64,
    /// Of those, how many were let through.
    pub admitted: u64,
    pub forced: u64,
    /// The cap probability; 1 means the cap is not binding.
    pub cap_probability: f64,
}

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            second: 0,
            wanted: 0,
            admitted: 0,
            forced: 0,
            cap_probability: 1.0,
        }
    }
}

pub const ENCODED_LEN: usize = 40;

impl BudgetState {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let fields = [
            self.second,
            self.wanted,
            self.admitted,
            self.forced,
            self.cap_probability.to_bits(),
        ];
        for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<BudgetState> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let mut fields = [0u64; 5];
        for (field, chunk) in fields.iter_mut().zip(bytes.chunks_exact(8)) {
            *field = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        let cap_probability = f64::from_bits(fields[4]);
        if !(MIN_PROBABILITY..=1.0).contains(&cap_probability) {
            return None;
        }
        Some(BudgetState {
            second: fields[0],
            wanted: fields[1],
            admitted: fields[2],
            forced: fields[3],
            cap_probability,
        })
    }

    /// Moves to `now`, adapting the cap from the second that ended.
    pub fn roll(&mut self, now: u64, limits: &Limits) {
        if now <= self.second {
            return;
        }
        let Some(target) = limits.max_sampled_per_second else {
            *self = BudgetState {
                second: now,
                ..BudgetState::default()
            };
            return;
        };
        let ideal = if self.second.checked_add(1) == Some(now) && self.wanted > 0 {
            // `wanted` sampled at the current cap; scale the cap so the next second hits target.
            self.cap_probability * target as f64 / self.wanted as f64
        } else {
            // A quiet second (or several): relax the cap.
            f64::INFINITY
        };
        let stepped = ideal.clamp(
            self.cap_probability * MAX_STEP_DOWN,
            self.cap_probability * MAX_STEP_UP,
        );
        self.cap_probability = stepped.clamp(MIN_PROBABILITY, 1.0);
        self.second = now;
        self.wanted = 0;
        self.admitted = 0;
        self.forced = 0;
    }

    pub fn cap_threshold(&self, limits: &Limits) -> Threshold {
        match limits.max_sampled_per_second {
            Some(_) => {
                Threshold::from_probability_with_precision(self.cap_probability, limits.precision)
            }
            None => Threshold::ALWAYS,
        }
    }

    pub fn admit_sampled_root(&mut self, now: u64, limits: &Limits) -> bool {
        self.roll(now, limits);
        // The counts come from shared data, which any worker (or a corrupted value) may have
        // set to anything: they saturate rather than overflow.
        self.wanted = self.wanted.saturating_add(1);
        let admit = match limits.max_sampled_per_second {
            Some(target) => self.admitted < target.saturating_mul(HARD_LIMIT_FACTOR),
            None => true,
        };
        if admit {
            self.admitted = self.admitted.saturating_add(1);
        }
        admit
    }

    pub fn admit_forced(&mut self, now: u64, limits: &Limits) -> bool {
        self.roll(now, limits);
        let admit = self.forced < limits.max_forced_per_second;
        if admit {
            self.forced = self.forced.saturating_add(1);
        }
        admit
    }
}

/// A budget held in memory (one worker, or native tests).
pub struct LocalBudget {
    pub state: BudgetState,
    pub limits: Limits,
}

impl Budget for LocalBudget {
    fn cap_threshold(&mut self) -> Threshold {
        self.state.cap_threshold(&self.limits)
    }
    fn admit_sampled_root(&mut self, now: u64) -> bool {
        self.state.admit_sampled_root(now, &self.limits)
    }
    fn admit_forced(&mut self, now: u64) -> bool {
        self.state.admit_forced(now, &self.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::randomness;

    fn limits(cap: Option<u64>) -> Limits {
        Limits {
            max_sampled_per_second: cap,
            max_forced_per_second: 3,
            precision: 4,
        }
    }

    #[test]
    fn encoding_round_trips() {
        let state = BudgetState {
            second: 1_800_000_000,
            wanted: 7,
            admitted: 5,
            forced: 2,
            cap_probability: 0.125,
        };
        assert_eq!(BudgetState::decode(&state.encode()), Some(state));
        assert_eq!(BudgetState::decode(&[0u8; 39]), None);
        assert_eq!(
            BudgetState::decode(&[0u8; ENCODED_LEN]),
            None,
            "probability 0 is not a valid cap"
        );
    }

    #[test]
    fn hard_limit_is_twice_the_target_per_second() {
        let limits = limits(Some(10));
        let mut state = BudgetState::default();
        let admitted = (0..100)
            .filter(|_| state.admit_sampled_root(5, &limits))
            .count();
        assert_eq!(admitted, 20);
        assert!(
            state.admit_sampled_root(6, &limits),
            "a new second has a new allowance"
        );
    }

    #[test]
    fn force_limit_per_second() {
        let limits = limits(None);
        let mut state = BudgetState::default();
        let admitted = (0..10).filter(|_| state.admit_forced(5, &limits)).count();
        assert_eq!(admitted, 3);
    }

    /// 1000 roots per second at p = 1 with a target of 50: after adaptation the sampled roots
    /// per second settle near 50, decided by R >= T alone.
    #[test]
    fn adapts_to_the_target() {
        let limits = limits(Some(50));
        let mut state = BudgetState::default();
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut per_second = Vec::new();
        for second in 1..=20u64 {
            let mut sampled = 0;
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                state.roll(second, &limits);
                let threshold = state.cap_threshold(&limits);
                let r = randomness(crate::ids::TraceId::new(u128::from(x) | 1).unwrap());
                if threshold.samples(r) && state.admit_sampled_root(second, &limits) {
                    sampled += 1;
                }
            }
            per_second.push(sampled);
        }
        let settled = &per_second[5..];
        let mean = settled.iter().sum::<u64>() as f64 / settled.len() as f64;
        assert!((35.0..=65.0).contains(&mean), "per second: {per_second:?}");
        assert!(
            per_second.iter().all(|&n| n <= 100),
            "hard limit: {per_second:?}"
        );
    }

    #[test]
    fn quiet_seconds_relax_the_cap() {
        let limits = limits(Some(50));
        let mut state = BudgetState {
            second: 10,
            cap_probability: 0.001,
            ..BudgetState::default()
        };
        state.roll(12, &limits);
        assert_eq!(state.cap_probability, 0.004);
        assert_eq!(
            BudgetState::default().cap_threshold(&limits),
            Threshold::ALWAYS
        );
        assert_eq!(state.cap_threshold(&self::limits(None)), Threshold::ALWAYS);
    }

    /// Shared data is input: whatever state decodes (here every count at `u64::MAX`, which only
    /// a corrupted value holds) gives a defined answer and never an overflow.
    #[test]
    fn extreme_decoded_state_saturates() {
        let limits = limits(Some(10));
        let decoded = |second: u64, count: u64| {
            let state = BudgetState {
                second,
                wanted: count,
                admitted: count,
                forced: count,
                cap_probability: 1.0,
            };
            BudgetState::decode(&state.encode()).unwrap()
        };
        const MAX: u64 = u64::MAX;
        // (second, counts, now, want root admitted, want forced admitted, want wanted after)
        let cases: &[(u64, u64, u64, bool, bool, u64)] = &[
            // The same second, full counts: over both limits; `wanted` stays at its maximum.
            (MAX, MAX, MAX, false, false, MAX),
            // The clock is behind the shared second: the state is not rolled back.
            (MAX, MAX, 5, false, false, MAX),
            // The next second after MAX - 1: counts reset, one root and one force admitted.
            (MAX - 1, MAX, MAX, true, true, 1),
            (5, MAX, 6, true, true, 1),
            (5, MAX - 1, 5, false, false, MAX),
        ];
        for &(second, count, now, root, forced, wanted) in cases {
            let mut state = decoded(second, count);
            assert_eq!(
                state.admit_sampled_root(now, &limits),
                root,
                "{second} {count} {now}"
            );
            assert_eq!(
                state.admit_forced(now, &limits),
                forced,
                "{second} {count} {now}"
            );
            assert_eq!(state.wanted, wanted, "{second} {count} {now}");
            assert!(state.cap_probability <= 1.0 && state.cap_probability >= MIN_PROBABILITY);
        }
    }
}
