//! Step 3: the context the request carries on, and its sampling decision.

use super::{
    new_ids, new_span_and_randomness, new_span_id, Force, ForceOutcome, Host, RandomUnavailable,
    Reason, Trust,
};
use crate::config::Config;
use crate::context::{Decision, IncomingContext, TraceContext};
use crate::headers::RequestHeaders;
use crate::ids::TraceId;
use crate::otel_tracestate::OtValues;
use crate::rules;
use crate::sampling::{randomness, Threshold};
use crate::translate::Parent;

/// A sampling decision and why it was made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sampling {
    pub decision: Decision,
    /// The threshold to record in `ot.th` (`None`: no `th`).
    pub threshold: Option<Threshold>,
    pub reason: Reason,
    /// The index of the rule that set the probability of a root decision.
    pub rule: Option<usize>,
}

/// The outcome of step 3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decided {
    /// What every injected format carries.
    pub context: TraceContext,
    pub sampling: Sampling,
    /// No context was continued: new trace and span ids.
    pub trace_started: bool,
    /// The span id is one the filter made for a trace id it did not start: the continued
    /// context had none (a load balancer's first hop), or only the trace id was kept.
    pub span_generated: bool,
    /// Explicit randomness (`rv`) drawn for an adopted trace id, to travel in `tracestate`.
    pub randomness: Option<u64>,
    /// The caller's `th` contradicted its sampled flag and was dropped.
    pub threshold_erased: bool,
    pub force: Option<ForceOutcome>,
}

/// Step 3: continues the parent or starts a trace, decides where a decision is due, then
/// applies a force token. Draws randomness only for ids the request lacks, and asks the budget
/// only for a root decision that would sample or a valid force token.
pub fn decide(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    trust: &Trust,
) -> Result<Decided, RandomUnavailable> {
    let mut decided = match trust.parent {
        Parent::Continue { context, ot, .. } => {
            continue_trace(config, headers, host, &context, ot)?
        }
        Parent::Adopt { trace_id, .. } => adopt_trace(config, headers, host, trace_id)?,
        Parent::Start {
            requested,
            untrusted_restart,
        } => start_trace(config, headers, host, requested, untrusted_restart)?,
    };
    decided.force = apply_force(trust.force, &mut decided, host);
    Ok(decided)
}

/// Continues the trusted caller's trace: same trace id and span id, the caller's decision when
/// it made one. Only a missing span id or decision is filled in.
fn continue_trace(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    incoming: &IncomingContext,
    ot: OtValues,
) -> Result<Decided, RandomUnavailable> {
    let (span_id, span_generated) = match incoming.span_id {
        Some(span_id) => (span_id, false),
        None => (new_span_id(host.random)?, true),
    };
    let r = ot.rv.unwrap_or_else(|| randomness(incoming.trace_id));
    let mut threshold_erased = false;
    let sampling = match (incoming.decision, ot.th) {
        (Some(decision), th) => {
            // The flag is authoritative; a `th` that contradicts it is erased (specification:
            // "If a sampled incoming threshold is apparently inconsistent, erase it").
            let consistent = th.filter(|th| decision.is_sampled() && th.samples(r));
            threshold_erased = th.is_some() && consistent.is_none();
            Sampling {
                decision,
                threshold: consistent,
                reason: Reason::Parent,
                rule: None,
            }
        }
        // The flag was lost on the way but `th` survived: R >= th reproduces the root's decision.
        (None, Some(th)) => {
            let sampled = th.samples(r);
            Sampling {
                decision: Decision::from_sampled(sampled),
                threshold: sampled.then_some(th),
                reason: Reason::Parent,
                rule: None,
            }
        }
        (None, None) => root_decision(config, headers, host, r),
    };
    Ok(Decided {
        context: TraceContext {
            trace_id: incoming.trace_id,
            span_id,
            decision: sampling.decision,
            random_trace_id: incoming.random_trace_id,
        },
        sampling,
        trace_started: false,
        span_generated,
        randomness: None,
        threshold_erased,
        force: None,
    })
}

/// A new trace: no valid (or no trusted) context. A trusted B3 sampling-only header decides it.
fn start_trace(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    requested: Option<Decision>,
    untrusted_restart: bool,
) -> Result<Decided, RandomUnavailable> {
    let (trace_id, span_id) = new_ids(host.random, host.clock.unix_seconds())?;
    let mut sampling = match requested {
        Some(decision) => Sampling {
            decision,
            threshold: None,
            reason: Reason::Parent,
            rule: None,
        },
        None => root_decision(config, headers, host, randomness(trace_id)),
    };
    // An untrusted caller's context was dropped: its root decision is a restart.
    if untrusted_restart && matches!(sampling.reason, Reason::Probability | Reason::Rule) {
        sampling.reason = Reason::UntrustedRestart;
    }
    Ok(Decided {
        context: TraceContext {
            trace_id,
            span_id,
            decision: sampling.decision,
            random_trace_id: true,
        },
        sampling,
        trace_started: true,
        span_generated: false,
        randomness: None,
        threshold_erased: false,
        force: None,
    })
}

/// An untrusted caller's trace id, kept: a new span id, and a root decision with 56 fresh
/// random bits as R, which travel as `rv` so that every later hop decides with them too
/// (OpenTelemetry, "TraceState: Probability Sampling": the root is the one place where explicit
/// randomness may be set). The W3C random-trace-id flag is not claimed for an id the filter did
/// not make.
fn adopt_trace(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    trace_id: TraceId,
) -> Result<Decided, RandomUnavailable> {
    let (span_id, rv) = new_span_and_randomness(host.random)?;
    let mut sampling = root_decision(config, headers, host, rv);
    if matches!(sampling.reason, Reason::Probability | Reason::Rule) {
        sampling.reason = Reason::AdoptedTraceId;
    }
    Ok(Decided {
        context: TraceContext {
            trace_id,
            span_id,
            decision: sampling.decision,
            random_trace_id: false,
        },
        sampling,
        trace_started: false,
        span_generated: true,
        randomness: Some(rv),
        threshold_erased: false,
        force: None,
    })
}

/// The consistent root decision: sampled iff R >= max(T_route, T_cap), then the hard limit.
fn root_decision(config: &Config, headers: &RequestHeaders, host: &mut Host, r: u64) -> Sampling {
    let rule = rules::matching(&config.sampling.rules, headers);
    let (route_threshold, reason) = match rule {
        Some((_, rule)) => (rule.threshold, Reason::Rule),
        None => (config.sampling.threshold, Reason::Probability),
    };
    let rule = rule.map(|(index, _)| index);
    let threshold = if config.sampling.max_sampled_per_second.is_some() {
        route_threshold.max_with(host.budget.cap_threshold())
    } else {
        route_threshold
    };
    let not_sampled = |reason| Sampling {
        decision: Decision::NotSampled,
        threshold: None,
        reason,
        rule,
    };
    if !threshold.samples(r) {
        let capped = route_threshold.samples(r);
        return not_sampled(if capped { Reason::Capped } else { reason });
    }
    if !host.budget.admit_sampled_root(host.clock.unix_seconds()) {
        return not_sampled(Reason::Capped);
    }
    Sampling {
        decision: Decision::Sampled,
        threshold: Some(threshold),
        reason,
        rule,
    }
}

/// A valid force token samples the request (`th:0`) within its own per-second limit. On a
/// trusted unsampled parent the caller's span id is kept: W3C prefers a new parent id when the
/// sampled flag changes, but that id would name a span nobody reports, which breaks the trace
/// more than an unsampled parent does. A token that made its caller trusted was admitted in
/// step 2 and always forces: the caller's own decision was not what made it trusted.
fn apply_force(
    force: Option<Force>,
    decided: &mut Decided,
    host: &mut Host,
) -> Option<ForceOutcome> {
    let admitted = match force? {
        Force::Rejected => return Some(ForceOutcome::Rejected),
        Force::OverLimit => return Some(ForceOutcome::OverLimit),
        Force::TrustedCaller => true,
        Force::Valid if decided.sampling.decision.is_sampled() => {
            return Some(ForceOutcome::Accepted)
        }
        Force::Valid => host.budget.admit_forced(host.clock.unix_seconds()),
    };
    if !admitted {
        return Some(ForceOutcome::OverLimit);
    }
    // A caller trusted by its token keeps its debug flag, as any trusted caller does.
    let decision = match decided.sampling.decision {
        Decision::Debug => Decision::Debug,
        _ => Decision::Sampled,
    };
    decided.sampling = Sampling {
        decision,
        threshold: Some(Threshold::ALWAYS),
        reason: Reason::Forced,
        rule: decided.sampling.rule,
    };
    decided.context.decision = decision;
    Some(ForceOutcome::Accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Budget, Unlimited};
    use crate::formats::tracecontext::Tracestate;
    use crate::formats::Format;
    use crate::ids::{SpanId, TraceId};
    use crate::translate::{FixedClock, RandomSource};

    fn trace(value: u128) -> TraceId {
        TraceId::new(value).unwrap()
    }

    /// 20 bytes of 0x11 then 0x22...: a new trace id is `6b063027` + twelve 0x11 bytes (R =
    /// 0x11111111111111), a span id alone is eight 0x11 bytes.
    struct Fixed(u8);

    impl RandomSource for Fixed {
        fn fill(&mut self, buf: &mut [u8]) -> bool {
            buf.fill(self.0);
            self.0 = self.0.wrapping_add(0x11);
            true
        }
    }

    /// Admits what its fields say and records what it was asked.
    struct Scripted {
        cap: Threshold,
        roots: bool,
        forced: bool,
        asked: Vec<&'static str>,
    }

    impl Budget for Scripted {
        fn cap_threshold(&mut self) -> Threshold {
            self.asked.push("cap");
            self.cap
        }
        fn admit_sampled_root(&mut self, _: u64) -> bool {
            self.asked.push("root");
            self.roots
        }
        fn admit_forced(&mut self, _: u64) -> bool {
            self.asked.push("forced");
            self.forced
        }
    }

    fn open_budget() -> Scripted {
        Scripted {
            cap: Threshold::ALWAYS,
            roots: true,
            forced: true,
            asked: Vec::new(),
        }
    }

    struct Nobody;

    impl crate::trust::Peer for Nobody {
        fn address(&mut self) -> Option<std::net::IpAddr> {
            None
        }
        fn principal(&mut self) -> Option<String> {
            None
        }
    }

    const NOW: u64 = 0x6b06_3027;

    fn run(config: &str, trust: Trust, budget: &mut dyn Budget) -> Decided {
        run_drawing(config, trust, budget, 0x11)
    }

    /// `run` with randomness that starts at `first` (every byte of the first draw).
    fn run_drawing(config: &str, trust: Trust, budget: &mut dyn Budget, first: u8) -> Decided {
        let config = Config::from_json(config.as_bytes()).unwrap();
        let headers = RequestHeaders::from_pairs([(":path", &b"/checkout"[..])]);
        let mut host = Host {
            random: &mut Fixed(first),
            peer: &mut Nobody,
            budget,
            clock: &mut FixedClock(NOW),
        };
        decide(&config, &headers, &mut host, &trust).unwrap()
    }

    fn continuing(decision: Option<Decision>, ot: OtValues) -> Trust {
        Trust {
            trusted: true,
            parent: Parent::Continue {
                format: Format::B3Multi,
                context: IncomingContext {
                    // R = 0xce929d0e0e4736 (the low 56 bits).
                    trace_id: trace(0x4bf92f3577b34da6a3ce929d0e0e4736),
                    span_id: SpanId::new(0x00f067aa0ba902b7),
                    decision,
                    random_trace_id: false,
                },
                tracestate: Tracestate::Valid,
                ot,
            },
            force: None,
        }
    }

    fn th(digits: &str) -> Option<Threshold> {
        Threshold::parse_th(digits.as_bytes())
    }

    /// OpenTelemetry specification, "TraceState: Probability Sampling": the parent's sampled flag
    /// decides; a `th` consistent with it (sampled and R >= T) is kept, an inconsistent one is
    /// erased; without a flag, R >= T with the incoming `th` reproduces the decision; without
    /// either, the root decision is the configured probability's.
    #[test]
    fn continue_table() {
        let ot = |th_digits: &str| OtValues {
            th: th(th_digits),
            rv: None,
        };
        // (decision, ot, want decision, want th, erased, reason)
        type Case = (
            Option<Decision>,
            OtValues,
            Decision,
            Option<&'static str>,
            bool,
            Reason,
        );
        let cases: &[Case] = &[
            (
                Some(Decision::Sampled),
                ot("8"),
                Decision::Sampled,
                Some("8"),
                false,
                Reason::Parent,
            ),
            // R = 0xce.. < T = 0xf0..: th contradicts "sampled".
            (
                Some(Decision::Sampled),
                ot("f"),
                Decision::Sampled,
                None,
                true,
                Reason::Parent,
            ),
            (
                Some(Decision::NotSampled),
                ot("8"),
                Decision::NotSampled,
                None,
                true,
                Reason::Parent,
            ),
            (
                Some(Decision::Debug),
                OtValues::default(),
                Decision::Debug,
                None,
                false,
                Reason::Parent,
            ),
            (
                None,
                ot("8"),
                Decision::Sampled,
                Some("8"),
                false,
                Reason::Parent,
            ),
            (
                None,
                ot("f"),
                Decision::NotSampled,
                None,
                false,
                Reason::Parent,
            ),
            // An explicit rv replaces the trace id's bits as R.
            (
                None,
                OtValues {
                    th: th("f"),
                    rv: Some(0xff000000000000),
                },
                Decision::Sampled,
                Some("f"),
                false,
                Reason::Parent,
            ),
            // p = 0.5 is th:8 and R >= 0x80..: a root decision that samples.
            (
                None,
                OtValues::default(),
                Decision::Sampled,
                Some("8"),
                false,
                Reason::Probability,
            ),
        ];
        for &(decision, ot, want, want_th, erased, reason) in cases {
            let got = run(
                r#"{"sampling": {"probability": 0.5}}"#,
                continuing(decision, ot),
                &mut open_budget(),
            );
            assert_eq!(got.sampling.decision, want, "{decision:?} {ot:?}");
            let got_th = got.sampling.threshold.and_then(Threshold::encode_th);
            assert_eq!(got_th.as_deref(), want_th, "{decision:?} {ot:?}");
            assert_eq!(got.threshold_erased, erased, "{decision:?} {ot:?}");
            assert_eq!(got.sampling.reason, reason, "{decision:?} {ot:?}");
            assert_eq!(got.context.decision, want);
            assert_eq!(
                got.context.span_id,
                SpanId::new(0x00f067aa0ba902b7).unwrap()
            );
            assert!(!got.trace_started && !got.span_generated);
        }
    }

    #[test]
    fn a_missing_span_id_is_generated() {
        let mut trust = continuing(Some(Decision::Sampled), OtValues::default());
        if let Parent::Continue { context, .. } = &mut trust.parent {
            context.span_id = None;
        }
        let got = run("{}", trust, &mut Unlimited);
        assert!(got.span_generated);
        assert_eq!(
            got.context.span_id,
            SpanId::new(0x1111111111111111).unwrap()
        );
        assert_eq!(
            got.context.trace_id,
            trace(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
    }

    fn starting(requested: Option<Decision>, untrusted_restart: bool) -> Trust {
        Trust {
            trusted: !untrusted_restart,
            parent: Parent::Start {
                requested,
                untrusted_restart,
            },
            force: None,
        }
    }

    /// A new trace: 4 bytes of Unix time and 12 random bytes, the random flag set (README, "New
    /// ids"); R = 0x11111111111111 is below th:8, so p = 0.5 does not sample it and p = 1 does.
    #[test]
    fn start_table() {
        let half = r#"{"sampling": {"probability": 0.5}}"#;
        let rule = r#"{"sampling": {"probability": 0.5, "rules": [
            {"match": {"path_prefix": "/admin"}, "probability": 0},
            {"match": {"path_prefix": "/checkout"}, "probability": 1}]}}"#;
        // (config, requested, untrusted restart, want decision, want reason, want rule)
        type Case = (
            &'static str,
            Option<Decision>,
            bool,
            Decision,
            Reason,
            Option<usize>,
        );
        let cases: &[Case] = &[
            (
                half,
                None,
                false,
                Decision::NotSampled,
                Reason::Probability,
                None,
            ),
            (
                half,
                Some(Decision::Debug),
                false,
                Decision::Debug,
                Reason::Parent,
                None,
            ),
            (
                half,
                None,
                true,
                Decision::NotSampled,
                Reason::UntrustedRestart,
                None,
            ),
            (rule, None, false, Decision::Sampled, Reason::Rule, Some(1)),
            (
                rule,
                None,
                true,
                Decision::Sampled,
                Reason::UntrustedRestart,
                Some(1),
            ),
        ];
        for &(config, requested, restart, want, reason, rule) in cases {
            let got = run(config, starting(requested, restart), &mut open_budget());
            assert!(got.trace_started, "{config} {requested:?}");
            assert_eq!(
                got.context.trace_id,
                trace(0x6b063027_111111111111111111111111)
            );
            assert_eq!(
                got.context.span_id,
                SpanId::new(0x1111111111111111).unwrap()
            );
            assert!(got.context.random_trace_id);
            assert_eq!(
                got.sampling.decision, want,
                "{config} {requested:?} {restart}"
            );
            assert_eq!(
                got.sampling.reason, reason,
                "{config} {requested:?} {restart}"
            );
            assert_eq!(got.sampling.rule, rule, "{config} {requested:?} {restart}");
        }
    }

    /// The cap raises T to max(T_route, T_cap) and the hard limit refuses what is over it; a
    /// refusal is "capped" (README, "The cap").
    #[test]
    fn the_cap_and_the_hard_limit() {
        let capped = r#"{"sampling": {"probability": 1, "max_sampled_per_second": 10}}"#;
        let root = starting(None, false);
        let mut budget = open_budget();
        let got = run(capped, root, &mut budget);
        assert_eq!(
            (got.sampling.decision, got.sampling.reason),
            (Decision::Sampled, Reason::Probability)
        );
        assert_eq!(budget.asked, ["cap", "root"]);
        let mut budget = Scripted {
            cap: Threshold::from_probability(0.5),
            ..open_budget()
        };
        let got = run(capped, root, &mut budget);
        assert_eq!(
            (got.sampling.decision, got.sampling.reason),
            (Decision::NotSampled, Reason::Capped)
        );
        // Not sampled by the threshold: the hard limit is not asked.
        assert_eq!(budget.asked, ["cap"]);
        let mut budget = Scripted {
            roots: false,
            ..open_budget()
        };
        let got = run(capped, root, &mut budget);
        assert_eq!(
            (got.sampling.decision, got.sampling.reason),
            (Decision::NotSampled, Reason::Capped)
        );
        // Without a cap configured the cap threshold is not read.
        let mut budget = open_budget();
        run(r#"{"sampling": {"probability": 1}}"#, root, &mut budget);
        assert_eq!(budget.asked, ["root"]);
    }

    /// An ALB-style id whose low 56 bits are all ones: sampled at every probability if it were R.
    const CHOSEN_ID: u128 = 0x5759e988bd862e3fffffffffffffffff;

    fn adopting() -> Trust {
        Trust {
            trusted: false,
            parent: Parent::Adopt {
                format: Format::XRay,
                trace_id: trace(CHOSEN_ID),
            },
            force: None,
        }
    }

    /// Issue 15 and OpenTelemetry "TraceState: Probability Sampling": an adopted trace id is
    /// decided with explicit randomness drawn for it (R = rv, "If rv >= th, keep"), T from the
    /// route's probability (`th:c` is 0.25, `th:8` 0.5, in the specification's table), never
    /// from the id's bits; the random flag is not claimed; the span id is new.
    #[test]
    fn adopt_table() {
        let quarter = r#"{"sampling": {"probability": 0.25}}"#;
        let half = r#"{"sampling": {"probability": 0.5}}"#;
        let never = r#"{"sampling": {"probability": 0}}"#;
        let rule = r#"{"sampling": {"probability": 0, "rules": [
            {"match": {"path_prefix": "/checkout"}, "probability": 1}]}}"#;
        // (config, every byte of the draw, hard limit admits, want rv, decision, th, reason)
        type Case = (
            &'static str,
            u8,
            bool,
            u64,
            Decision,
            Option<&'static str>,
            Reason,
        );
        let cases: &[Case] = &[
            (
                quarter,
                0xbf,
                true,
                0xbfbfbfbfbfbfbf,
                Decision::NotSampled,
                None,
                Reason::AdoptedTraceId,
            ),
            (
                quarter,
                0xc0,
                true,
                0xc0c0c0c0c0c0c0,
                Decision::Sampled,
                Some("c"),
                Reason::AdoptedTraceId,
            ),
            (
                half,
                0x7f,
                true,
                0x7f7f7f7f7f7f7f,
                Decision::NotSampled,
                None,
                Reason::AdoptedTraceId,
            ),
            (
                half,
                0x80,
                true,
                0x80808080808080,
                Decision::Sampled,
                Some("8"),
                Reason::AdoptedTraceId,
            ),
            (
                never,
                0xff,
                true,
                0xffffffffffffff,
                Decision::NotSampled,
                None,
                Reason::AdoptedTraceId,
            ),
            (
                rule,
                0x01,
                true,
                0x01010101010101,
                Decision::Sampled,
                Some("0"),
                Reason::AdoptedTraceId,
            ),
            (
                half,
                0x80,
                false,
                0x80808080808080,
                Decision::NotSampled,
                None,
                Reason::Capped,
            ),
        ];
        for &(config, first, admits, rv, decision, th, reason) in cases {
            let mut budget = Scripted {
                roots: admits,
                ..open_budget()
            };
            let got = run_drawing(config, adopting(), &mut budget, first);
            let case = format!("{config} draw {first:#x}");
            assert_eq!(got.randomness, Some(rv), "{case}");
            assert_eq!(got.sampling.decision, decision, "{case}");
            assert_eq!(got.context.decision, decision, "{case}");
            let got_th = got.sampling.threshold.and_then(Threshold::encode_th);
            assert_eq!(got_th.as_deref(), th, "{case}");
            assert_eq!(got.sampling.reason, reason, "{case}");
            assert_eq!(got.context.trace_id, trace(CHOSEN_ID), "{case}");
            let span = u64::from_be_bytes([first; 8]);
            assert_eq!(got.context.span_id, SpanId::new(span).unwrap(), "{case}");
            assert!(!got.context.random_trace_id, "{case}");
            assert!(!got.trace_started && got.span_generated, "{case}");
        }
        // The rule that set the probability is still reported.
        let got = run_drawing(rule, adopting(), &mut open_budget(), 1);
        assert_eq!(got.sampling.rule, Some(0));
    }

    /// OpenTelemetry "TraceState: Probability Sampling": randomness is "either an explicit
    /// randomness value expressed in the OpenTelemetry TraceState rv sub-key or taken from the
    /// trailing 7 bytes of the TraceID"; a trusted hop deciding a context that came without a
    /// decision uses rv. The trace id here has R = 0xce929d0e0e4736 (sampled at 0.5 by its bits);
    /// the spec's example rv 6e6d1a75832a2f and Java's boundary vectors (7fffffffffffff / 8:
    /// drop, 80000000000000 / 8: keep) decide instead.
    #[test]
    fn a_deferred_context_is_decided_by_rv() {
        let cases: &[(f64, Option<u64>, Decision)] = &[
            (0.5, None, Decision::Sampled),
            (0.5, Some(0x6e6d1a75832a2f), Decision::NotSampled),
            (0.75, Some(0x6e6d1a75832a2f), Decision::Sampled),
            (0.5, Some(0x7fffffffffffff), Decision::NotSampled),
            (0.5, Some(0x80000000000000), Decision::Sampled),
        ];
        for &(p, rv, want) in cases {
            let config = format!(r#"{{"sampling": {{"probability": {p}}}}}"#);
            let ot = OtValues { th: None, rv };
            let got = run(&config, continuing(None, ot), &mut open_budget());
            assert_eq!(got.sampling.decision, want, "p {p} rv {rv:x?}");
            assert_eq!(got.sampling.reason, Reason::Probability, "p {p} rv {rv:x?}");
            // The explicit rv is the caller's; it travels in its tracestate, not as a new draw.
            assert_eq!(got.randomness, None);
        }
    }

    /// "A positive sampling decision made for a particular span with probability p1 necessarily
    /// implies a positive sampling decision for any span belonging to the same trace if it is
    /// made with probability p2 >= p1" (specification, "Consistent Sampling Decision"): deferred
    /// contexts carrying the same rv, decided at increasing probabilities, nest; and each
    /// decision is rv >= T(p).
    #[test]
    fn higher_probabilities_sample_a_superset_by_rv() {
        let probabilities = [0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0];
        let mut x: u64 = 0x2545f4914f6cdd1d;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let rv = x >> 8;
            let ot = OtValues {
                th: None,
                rv: Some(rv),
            };
            let decisions: Vec<bool> = probabilities
                .iter()
                .map(|p| {
                    let config = format!(r#"{{"sampling": {{"probability": {p}}}}}"#);
                    let got = run(&config, continuing(None, ot), &mut open_budget());
                    let sampled = got.sampling.decision.is_sampled();
                    let t = Threshold::from_probability_with_precision(*p, 4);
                    assert_eq!(sampled, rv >= t.value(), "rv {rv:014x} p {p}");
                    sampled
                })
                .collect();
            assert!(
                decisions.windows(2).all(|w| !w[0] || w[1]),
                "rv {rv:014x}: {decisions:?}"
            );
        }
    }

    /// README, "Forcing a trace": a valid token samples with th:0 within its own limit and keeps
    /// the caller's span id; a sampled request needs no forcing; a rejected token changes nothing.
    #[test]
    fn force_table() {
        let unsampled = || continuing(Some(Decision::NotSampled), OtValues::default());
        let sampled = || continuing(Some(Decision::Sampled), OtValues::default());
        let with = |mut trust: Trust, token| {
            trust.force = Some(token);
            trust
        };
        // (trust, force limit admits, want outcome, decision, reason, budget calls)
        type Case = (
            Trust,
            bool,
            Option<ForceOutcome>,
            Decision,
            Reason,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                unsampled(),
                true,
                None,
                Decision::NotSampled,
                Reason::Parent,
                vec![],
            ),
            (
                with(unsampled(), Force::Valid),
                true,
                Some(ForceOutcome::Accepted),
                Decision::Sampled,
                Reason::Forced,
                vec!["forced"],
            ),
            (
                with(unsampled(), Force::Valid),
                false,
                Some(ForceOutcome::OverLimit),
                Decision::NotSampled,
                Reason::Parent,
                vec!["forced"],
            ),
            (
                with(sampled(), Force::Valid),
                true,
                Some(ForceOutcome::Accepted),
                Decision::Sampled,
                Reason::Parent,
                vec![],
            ),
            (
                with(unsampled(), Force::Rejected),
                true,
                Some(ForceOutcome::Rejected),
                Decision::NotSampled,
                Reason::Parent,
                vec![],
            ),
            // Admitted in step 2, where it made its caller trusted: forced whatever the caller's
            // own flag says, without asking the limit again.
            (
                with(unsampled(), Force::TrustedCaller),
                false,
                Some(ForceOutcome::Accepted),
                Decision::Sampled,
                Reason::Forced,
                vec![],
            ),
            (
                with(sampled(), Force::TrustedCaller),
                false,
                Some(ForceOutcome::Accepted),
                Decision::Sampled,
                Reason::Forced,
                vec![],
            ),
            // Over the limit in step 2: nothing is forced, nothing asked again.
            (
                with(unsampled(), Force::OverLimit),
                true,
                Some(ForceOutcome::OverLimit),
                Decision::NotSampled,
                Reason::Parent,
                vec![],
            ),
        ];
        for (trust, admit, outcome, decision, reason, asked) in cases {
            let mut budget = Scripted {
                forced: admit,
                ..open_budget()
            };
            let got = run("{}", trust, &mut budget);
            assert_eq!(got.force, outcome, "{trust:?}");
            assert_eq!(got.sampling.decision, decision, "{trust:?}");
            assert_eq!(got.context.decision, decision, "{trust:?}");
            assert_eq!(got.sampling.reason, reason, "{trust:?}");
            assert_eq!(budget.asked, asked, "{trust:?}");
            assert_eq!(
                got.context.span_id,
                SpanId::new(0x00f067aa0ba902b7).unwrap()
            );
            if reason == Reason::Forced {
                assert_eq!(got.sampling.threshold, Some(Threshold::ALWAYS));
            }
        }
    }
}
