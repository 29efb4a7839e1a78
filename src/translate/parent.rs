//! Steps 1 and 2: which context the request's headers offer ([`choose`]), and what of it the
//! request may continue, given who is calling ([`trust`]).

use super::Host;
use crate::config::Config;
use crate::context::{Decision, Extraction, IncomingContext};
use crate::force::{self, ForceToken};
use crate::formats::tracecontext::{self, Tracestate};
use crate::formats::{Extractions, Format};
use crate::headers::RequestHeaders;
use crate::ids::TraceId;
use crate::otel_tracestate::{self, OtValues};

/// What the request's trace headers offer, by precedence (step 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Candidate {
    /// The first format in `extract` with a valid context, and that context. Its random flag is
    /// also set when `traceparent` carries it for the same trace id: W3C requires the flag
    /// received for a trace id to be kept, whichever format supplied the context.
    pub context: Option<(Format, IncomingContext)>,
    /// The context's trace id is the one in `traceparent`, so the caller's `tracestate` belongs
    /// to it.
    pub tracestate_belongs: bool,
    /// Without a context: the first sampling-only header in `extract` order (B3 `b3: 1`,
    /// `x-b3-sampled` alone, a `jaeger-debug-id` without `uber-trace-id`), which decides the new
    /// trace.
    pub requested: Option<Decision>,
    /// Some format in `extract` had a header, valid or not.
    pub sent_trace_headers: bool,
    /// The trace id an untrusted caller may keep: the first valid context, in `extract` order,
    /// among the formats of `sampling.keep_trace_id_from`.
    pub keepable: Option<(Format, TraceId)>,
}

/// Step 1: the candidate context of a request whose formats were read into `extractions`,
/// `extract` giving the precedence; `keep_trace_id_from` (a subset of `extract`) names the
/// formats whose trace id an untrusted caller keeps.
pub fn choose(
    extract: &[Format],
    keep_trace_id_from: &[Format],
    extractions: &Extractions,
) -> Candidate {
    let traceparent = extractions.get(Format::TraceContext).context().copied();
    let context = extract.iter().find_map(|&format| {
        let mut context = *extractions.get(format).context()?;
        if traceparent.is_some_and(|tp| tp.trace_id == context.trace_id && tp.random_trace_id) {
            context.random_trace_id = true;
        }
        Some((format, context))
    });
    let requested = match context {
        Some(_) => None,
        None => extract
            .iter()
            .find_map(|&format| match extractions.get(format) {
                Extraction::DecisionOnly(decision) => Some(decision),
                _ => None,
            }),
    };
    Candidate {
        context,
        tracestate_belongs: context
            .zip(traceparent)
            .is_some_and(|((_, ctx), tp)| ctx.trace_id == tp.trace_id),
        requested,
        sent_trace_headers: extract
            .iter()
            .any(|&format| extractions.get(format) != Extraction::Absent),
        keepable: keepable(extract, keep_trace_id_from, extractions),
    }
}

fn keepable(
    extract: &[Format],
    keep_trace_id_from: &[Format],
    extractions: &Extractions,
) -> Option<(Format, TraceId)> {
    if keep_trace_id_from.is_empty() {
        return None;
    }
    extract
        .iter()
        .filter(|format| keep_trace_id_from.contains(format))
        .find_map(|&format| Some((format, extractions.get(format).context()?.trace_id)))
}

/// What the request continues (step 2's main result).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Parent {
    /// A trusted caller's context.
    Continue {
        format: Format,
        context: IncomingContext,
        /// The caller's `tracestate`: `Absent` unless it belongs to this trace.
        tracestate: Tracestate,
        /// What the `ot` entry of a valid `tracestate` says.
        ot: OtValues,
    },
    /// An untrusted caller's trace id, kept (`sampling.keep_trace_id_from`). Nothing else of its
    /// context is: the span id is new, and the decision is made with fresh randomness, since the
    /// caller may have chosen the id's random bits.
    Adopt { format: Format, trace_id: TraceId },
    /// A new trace: the request has no valid context, or an untrusted caller sent it.
    Start {
        /// A trusted caller's sampling-only header.
        requested: Option<Decision>,
        /// An untrusted caller sent trace headers, which are not continued.
        untrusted_restart: bool,
    },
}

impl Parent {
    /// The format whose context is continued.
    pub fn source(&self) -> Option<Format> {
        match self {
            Parent::Continue { format, .. } | Parent::Adopt { format, .. } => Some(*format),
            Parent::Start { .. } => None,
        }
    }

    /// The caller's `tracestate` (for this trace, from a trusted caller).
    pub fn tracestate(&self) -> Tracestate {
        match self {
            Parent::Continue { tracestate, .. } => *tracestate,
            Parent::Adopt { .. } | Parent::Start { .. } => Tracestate::Absent,
        }
    }

    pub fn invalid_tracestate(&self) -> bool {
        self.tracestate() == Tracestate::Invalid
    }

    /// What the `ot` entry of the caller's `tracestate` says (nothing for a new trace).
    pub fn ot(&self) -> OtValues {
        match self {
            Parent::Continue { ot, .. } => *ot,
            Parent::Adopt { .. } | Parent::Start { .. } => OtValues::default(),
        }
    }
}

/// The force header's verdict, as step 2 leaves it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Force {
    /// Malformed, unknown key, wrongly signed or expired: changes nothing.
    Rejected,
    /// Valid; its per-second limit is asked when it is applied, in step 3.
    Valid,
    /// Valid and within its limit, it made an untrusted caller trusted
    /// (`sampling.force.trust_context`): the request is sampled.
    TrustedCaller,
    /// Valid, but over `sampling.force.max_per_second`: the caller stays untrusted and nothing
    /// is forced.
    OverLimit,
}

/// The outcome of step 2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Trust {
    /// The caller is trusted: `sampling.trust_incoming`, a trusted source, or a valid force
    /// token with `sampling.force.trust_context`.
    pub trusted: bool,
    pub parent: Parent,
    /// The force header's verdict, when the configuration has one and the request carries it
    /// (checked whoever calls: a valid token is the caller's credential).
    pub force: Option<Force>,
}

/// Step 2: asks the peer only when the trust policy needs to, and the forced budget only for a
/// valid token that would make an untrusted caller trusted.
pub fn trust(
    config: &Config,
    headers: &RequestHeaders,
    candidate: Candidate,
    host: &mut Host,
) -> Trust {
    let policy_trusts = config.sampling.trust.is_trusted(host.peer);
    let force = config.sampling.force.as_ref().and_then(|force| {
        let token = headers.custom(force.header_index)?;
        Some(
            match force::verify(token, &force.keys, host.clock.unix_seconds()) {
                ForceToken::Rejected => Force::Rejected,
                ForceToken::Valid if policy_trusts || !force.trust_context => Force::Valid,
                ForceToken::Valid if host.budget.admit_forced(host.clock.unix_seconds()) => {
                    Force::TrustedCaller
                }
                ForceToken::Valid => Force::OverLimit,
            },
        )
    });
    let trusted = policy_trusts || force == Some(Force::TrustedCaller);
    let parent = match (candidate.context, candidate.keepable) {
        (Some((format, context)), _) if trusted => {
            let tracestate = if candidate.tracestate_belongs {
                tracecontext::tracestate(headers)
            } else {
                Tracestate::Absent
            };
            let ot = match tracestate {
                Tracestate::Valid | Tracestate::Duplicates => {
                    otel_tracestate::read(headers.tracestate_lines().unwrap_or_default())
                }
                _ => OtValues::default(),
            };
            Parent::Continue {
                format,
                context,
                tracestate,
                ot,
            }
        }
        (_, Some((format, trace_id))) if !trusted => Parent::Adopt { format, trace_id },
        _ => Parent::Start {
            requested: candidate.requested.filter(|_| trusted),
            untrusted_restart: !trusted && candidate.sent_trace_headers,
        },
    };
    Trust {
        trusted,
        parent,
        force,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Budget, Unlimited};
    use crate::ids::SpanId;
    use crate::sampling::Threshold;
    use crate::translate::{FixedClock, RandomSource};
    use crate::trust::Peer;
    use std::net::IpAddr;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const W3C_TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

    fn context(trace: u128, span: u64, decision: Option<Decision>) -> IncomingContext {
        IncomingContext {
            trace_id: TraceId::new(trace).unwrap(),
            span_id: SpanId::new(span),
            decision,
            random_trace_id: false,
        }
    }

    fn candidate(extract: &[Format], pairs: &[(&str, &str)]) -> Candidate {
        let headers =
            RequestHeaders::from_pairs(pairs.iter().map(|(name, value)| (*name, value.as_bytes())));
        choose(extract, &[], &Extractions::read(extract, &headers))
    }

    /// The README's precedence rule: the first valid format in `extract` wins, present but
    /// invalid headers count as absent; sampling-only B3 headers (B3 specification, "Sampling
    /// State") decide only a new trace.
    #[test]
    fn choose_table() {
        use Format::*;
        let b3 = ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0");
        let b3_context = context(
            0x80f198ee56343ba864fe8b2a57d3eff7,
            0xe457b5a2e4d86bd1,
            Some(Decision::NotSampled),
        );
        let w3c_context = context(W3C_TRACE, 0x00f067aa0ba902b7, Some(Decision::Sampled));
        type Case = (
            &'static [Format],
            Vec<(&'static str, &'static str)>,
            Candidate,
        );
        let cases: Vec<Case> = vec![
            (&[TraceContext, B3], vec![], Candidate::default()),
            (
                &[TraceContext, B3],
                vec![b3, ("traceparent", TRACEPARENT)],
                Candidate {
                    context: Some((TraceContext, w3c_context)),
                    tracestate_belongs: true,
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
            (
                &[B3, TraceContext],
                vec![("traceparent", TRACEPARENT), b3],
                Candidate {
                    context: Some((B3, b3_context)),
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
            // An invalid header is skipped, but it was sent.
            (
                &[TraceContext, B3],
                vec![("traceparent", "00-nonsense"), b3],
                Candidate {
                    context: Some((B3, b3_context)),
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
            (
                &[TraceContext],
                vec![("traceparent", "00-nonsense")],
                Candidate {
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
            // A format not in `extract` offers nothing.
            (
                &[B3],
                vec![("traceparent", TRACEPARENT)],
                Candidate::default(),
            ),
            (
                &[B3, B3Multi],
                vec![("x-b3-sampled", "1"), ("b3", "d")],
                Candidate {
                    requested: Some(Decision::Debug),
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
            (
                &[Jaeger],
                vec![("jaeger-debug-id", "abc")],
                Candidate {
                    requested: Some(Decision::Debug),
                    sent_trace_headers: true,
                    ..Candidate::default()
                },
            ),
        ];
        for (extract, pairs, want) in cases {
            assert_eq!(candidate(extract, &pairs), want, "{extract:?} {pairs:?}");
        }
    }

    /// W3C Trace Context Level 2: the random-trace-id flag received for a trace id is kept, so a
    /// context chosen from another format of the same trace inherits it; another trace does not.
    #[test]
    fn random_flag_follows_the_trace_id() {
        let random_traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        let same_trace = ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736");
        let other_trace = ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7");
        let span = ("x-b3-spanid", "e457b5a2e4d86bd1");
        let extract = [Format::B3Multi, Format::TraceContext];
        for (trace, want) in [(same_trace, true), (other_trace, false)] {
            let got = candidate(
                &extract,
                &[("traceparent", random_traceparent), trace, span],
            );
            let (format, context) = got.context.unwrap();
            assert_eq!(format, Format::B3Multi);
            assert_eq!(context.random_trace_id, want, "{trace:?}");
            assert_eq!(got.tracestate_belongs, want, "{trace:?}");
        }
    }

    struct FixedPeer(IpAddr);

    impl Peer for FixedPeer {
        fn address(&mut self) -> Option<IpAddr> {
            Some(self.0)
        }
        fn principal(&mut self) -> Option<String> {
            None
        }
    }

    const EDGE: &str = r#"{"extract": ["tracecontext", "b3"], "sampling": {
        "trust_incoming": false, "trusted_sources": {"cidrs": ["10.0.0.0/8"]},
        "force": {"header": "x-force", "keys": {"ops": "0123456789abcdef"}}}}"#;

    /// Step 2 draws no randomness.
    struct NoRandom;

    impl RandomSource for NoRandom {
        fn fill(&mut self, _: &mut [u8]) -> bool {
            false
        }
    }

    /// Admits forced traces while `forced` says so, and counts the questions.
    struct ForceBudget {
        forced: bool,
        asked: usize,
    }

    impl Budget for ForceBudget {
        fn cap_threshold(&mut self) -> Threshold {
            Threshold::ALWAYS
        }
        fn admit_sampled_root(&mut self, _: u64) -> bool {
            true
        }
        fn admit_forced(&mut self, _: u64) -> bool {
            self.asked = self.asked.saturating_add(1);
            self.forced
        }
    }

    fn trust_with(
        config: &str,
        caller: [u8; 4],
        pairs: &[(&str, &str)],
        budget: &mut dyn Budget,
    ) -> Trust {
        let config = Config::from_json(config.as_bytes()).unwrap();
        let headers = RequestHeaders::scan(
            pairs.iter().map(|(name, value)| (*name, value.as_bytes())),
            config.scan(),
        );
        let extractions = Extractions::read(config.formats_read(), &headers);
        let candidate = choose(
            &config.extract,
            &config.sampling.keep_trace_id_from,
            &extractions,
        );
        let mut host = Host {
            random: &mut NoRandom,
            peer: &mut FixedPeer(caller.into()),
            budget,
            clock: &mut FixedClock(1_800_000_000),
        };
        trust(&config, &headers, candidate, &mut host)
    }

    fn trust_of(caller: [u8; 4], pairs: &[(&str, &str)]) -> Trust {
        trust_with(EDGE, caller, pairs, &mut Unlimited)
    }

    /// The README's trust boundary: a trusted source's context and `tracestate` are continued;
    /// an untrusted caller's are not (a restart when it sent any), and neither is its B3
    /// sampling-only request.
    #[test]
    fn trust_table() {
        let w3c = [("traceparent", TRACEPARENT), ("tracestate", "ot=th:8,a=1")];
        let trusted = trust_of([10, 1, 2, 3], &w3c);
        assert!(trusted.trusted);
        assert_eq!(
            trusted.parent,
            Parent::Continue {
                format: Format::TraceContext,
                context: context(W3C_TRACE, 0x00f067aa0ba902b7, Some(Decision::Sampled)),
                tracestate: Tracestate::Valid,
                ot: otel_tracestate::read(&[&b"ot=th:8"[..]]),
            }
        );
        assert_eq!(
            trusted
                .parent
                .ot()
                .th
                .and_then(|th| th.encode_th())
                .as_deref(),
            Some("8")
        );

        let untrusted = trust_of([203, 0, 113, 9], &w3c);
        assert!(!untrusted.trusted);
        let restart = Parent::Start {
            requested: None,
            untrusted_restart: true,
        };
        assert_eq!(untrusted.parent, restart);
        assert_eq!(untrusted.parent.tracestate(), Tracestate::Absent);
        assert_eq!(trust_of([203, 0, 113, 9], &[("b3", "1")]).parent, restart);
        assert_eq!(
            trust_of([10, 0, 0, 1], &[("b3", "1")]).parent,
            Parent::Start {
                requested: Some(Decision::Sampled),
                untrusted_restart: false,
            }
        );
        assert_eq!(
            trust_of([203, 0, 113, 9], &[("accept", "*/*")]).parent,
            Parent::Start {
                requested: None,
                untrusted_restart: false,
            }
        );
        // A key outside the grammar makes the whole list invalid (W3C Trace Context, "key").
        let invalid = trust_of(
            [10, 0, 0, 1],
            &[
                ("traceparent", TRACEPARENT),
                ("tracestate", "a=1,A=2,ot=th:8"),
            ],
        );
        assert!(invalid.parent.invalid_tracestate());
        assert_eq!(invalid.parent.ot(), OtValues::default());
        // A repeated key does not (W3C: one entry per key, entries may be deleted): the first
        // entry of each key counts, `ot` included.
        let repeated = trust_of(
            [10, 0, 0, 1],
            &[
                ("traceparent", TRACEPARENT),
                ("tracestate", "ot=th:8,a=1,ot=th:c"),
            ],
        );
        assert_eq!(repeated.parent.tracestate(), Tracestate::Duplicates);
        assert!(!repeated.parent.invalid_tracestate());
        assert_eq!(
            repeated.parent.ot(),
            otel_tracestate::read(&[&b"ot=th:8"[..]])
        );
    }

    #[test]
    fn force_tokens_are_checked_whoever_calls() {
        let token = force::sign("ops", b"0123456789abcdef", 1_800_000_060);
        let trusted = trust_of([10, 0, 0, 1], &[("x-force", &token)]);
        assert_eq!(trusted.force, Some(Force::Valid));
        let untrusted = trust_of([203, 0, 113, 9], &[("x-force", &token)]);
        assert_eq!(untrusted.force, Some(Force::TrustedCaller));
        for caller in [[10, 0, 0, 1], [203, 0, 113, 9]] {
            let forged = trust_of(caller, &[("x-force", "ops.1800000060.00")]);
            assert_eq!(forged.force, Some(Force::Rejected), "{caller:?}");
            assert_eq!(trust_of(caller, &[]).force, None, "{caller:?}");
        }
    }

    /// Issue 15, `sampling.force.trust_context` (default `true`): a valid token within its
    /// limit makes an untrusted caller trusted, so its context is continued; a token over the
    /// limit, an invalid one, or `trust_context: false` leaves the caller untrusted. The limit
    /// is asked once, and only for a valid token of an untrusted caller with `trust_context`.
    #[test]
    fn a_valid_token_makes_its_caller_trusted() {
        let token = force::sign("ops", b"0123456789abcdef", 1_800_000_060);
        let expired = force::sign("ops", b"0123456789abcdef", 1_800_000_000);
        let no_trust = EDGE.replace(
            r#""keys": {"ops": "0123456789abcdef"}"#,
            r#""keys": {"ops": "0123456789abcdef"}, "trust_context": false"#,
        );
        assert_ne!(no_trust, EDGE);
        let w3c = context(W3C_TRACE, 0x00f067aa0ba902b7, Some(Decision::Sampled));
        let continued = Parent::Continue {
            format: Format::TraceContext,
            context: w3c,
            tracestate: Tracestate::Absent,
            ot: OtValues::default(),
        };
        let restart = Parent::Start {
            requested: None,
            untrusted_restart: true,
        };
        // (config, caller, token, budget admits, want trusted, parent, force, budget asked)
        type Case<'c> = (&'c str, [u8; 4], &'c str, bool, bool, Parent, Force, usize);
        let untrusted = [203, 0, 113, 9];
        let cases: Vec<Case> = vec![
            (
                EDGE,
                untrusted,
                &token,
                true,
                true,
                continued,
                Force::TrustedCaller,
                1,
            ),
            (
                EDGE,
                untrusted,
                &token,
                false,
                false,
                restart,
                Force::OverLimit,
                1,
            ),
            (
                EDGE,
                untrusted,
                &expired,
                true,
                false,
                restart,
                Force::Rejected,
                0,
            ),
            (
                &no_trust,
                untrusted,
                &token,
                true,
                false,
                restart,
                Force::Valid,
                0,
            ),
            // Already trusted: the limit is asked when the token is applied (step 3).
            (
                EDGE,
                [10, 0, 0, 1],
                &token,
                true,
                true,
                continued,
                Force::Valid,
                0,
            ),
        ];
        for (config, caller, token, admits, trusted, parent, force, asked) in cases {
            let mut budget = ForceBudget {
                forced: admits,
                asked: 0,
            };
            let pairs = [("traceparent", TRACEPARENT), ("x-force", token)];
            let got = trust_with(config, caller, &pairs, &mut budget);
            let case = format!("{caller:?} {token} admits={admits} {config}");
            assert_eq!(got.trusted, trusted, "{case}");
            assert_eq!(got.parent, parent, "{case}");
            assert_eq!(got.force, Some(force), "{case}");
            assert_eq!(budget.asked, asked, "{case}");
        }
    }

    /// Issue 15, `sampling.keep_trace_id_from`: at an untrusted hop the trace id of the first
    /// valid context among those formats, in `extract` order, is kept (whatever format the
    /// precedence would have continued); nothing else is. A trusted caller is continued as
    /// usual, and without a keepable header an untrusted caller restarts.
    #[test]
    fn an_untrusted_caller_keeps_only_a_listed_formats_trace_id() {
        let edge = r#"{"extract": ["tracecontext", "xray", "cloudtrace", "b3"], "sampling": {
            "trust_incoming": false, "trusted_sources": {"cidrs": ["10.0.0.0/8"]},
            "keep_trace_id_from": ["cloudtrace", "xray"]}}"#;
        // An ALB's Root without Parent (the AWS example id) and a Google load balancer's header.
        let alb = (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        );
        let alb_trace = TraceId::new(0x5759e988bd862e3fe1be46a994272793).unwrap();
        let gclb = (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        );
        let gclb_trace = TraceId::new(0x105445aa7843bc8bf206b12000100000).unwrap();
        let adopt = |format, trace_id| Parent::Adopt { format, trace_id };
        let restart = Parent::Start {
            requested: None,
            untrusted_restart: true,
        };
        let untrusted = [203, 0, 113, 9];
        type Case = ([u8; 4], Vec<(&'static str, &'static str)>, Parent);
        let cases: Vec<Case> = vec![
            (untrusted, vec![alb], adopt(Format::XRay, alb_trace)),
            (untrusted, vec![gclb], adopt(Format::CloudTrace, gclb_trace)),
            // `extract` order decides between two listed formats: xray before cloudtrace.
            (untrusted, vec![gclb, alb], adopt(Format::XRay, alb_trace)),
            // traceparent wins the precedence, but only a listed format's id is kept.
            (
                untrusted,
                vec![
                    ("traceparent", TRACEPARENT),
                    ("tracestate", "ot=rv:ffffffffffffff"),
                    gclb,
                ],
                adopt(Format::CloudTrace, gclb_trace),
            ),
            // An invalid listed header offers nothing; an unlisted one is not kept.
            (
                untrusted,
                vec![("x-amzn-trace-id", "Root=1-5759e988"), gclb],
                adopt(Format::CloudTrace, gclb_trace),
            ),
            (untrusted, vec![("traceparent", TRACEPARENT)], restart),
            (
                untrusted,
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
                restart,
            ),
            // A trusted caller's context is continued as the precedence chose it.
            (
                [10, 0, 0, 1],
                vec![alb],
                Parent::Continue {
                    format: Format::XRay,
                    context: IncomingContext {
                        trace_id: alb_trace,
                        span_id: None,
                        decision: Some(Decision::Sampled),
                        random_trace_id: false,
                    },
                    tracestate: Tracestate::Absent,
                    ot: OtValues::default(),
                },
            ),
        ];
        for (caller, pairs, want) in cases {
            let got = trust_with(edge, caller, &pairs, &mut Unlimited);
            assert_eq!(got.parent, want, "{caller:?} {pairs:?}");
            assert_eq!(got.trusted, caller == [10, 0, 0, 1]);
            assert_eq!(
                got.parent.tracestate(),
                match want {
                    Parent::Continue { tracestate, .. } => tracestate,
                    _ => Tracestate::Absent,
                }
            );
        }
        // Not configured: nothing is looked for.
        let extract = [Format::XRay];
        let headers = RequestHeaders::from_pairs([(alb.0, alb.1.as_bytes())]);
        let extractions = Extractions::read(&extract, &headers);
        assert_eq!(choose(&extract, &[], &extractions).keepable, None);
        assert_eq!(
            choose(&extract, &extract, &extractions).keepable,
            Some((Format::XRay, alb_trace))
        );
    }
}
