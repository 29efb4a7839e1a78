//! Steps 1 and 2: which context the request's headers offer ([`choose`]), and what of it the
//! request may continue, given who is calling ([`trust`]).

use crate::config::Config;
use crate::context::{Decision, Extraction, IncomingContext};
use crate::force::{self, ForceToken};
use crate::formats::tracecontext::{self, Tracestate};
use crate::formats::{Extractions, Format};
use crate::headers::RequestHeaders;
use crate::otel_tracestate::{self, OtValues};
use crate::trust::Peer;

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
}

/// Step 1: the candidate context of a request whose formats were read into `extractions`,
/// `extract` giving the precedence.
pub fn choose(extract: &[Format], extractions: &Extractions) -> Candidate {
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
    }
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
            Parent::Continue { format, .. } => Some(*format),
            Parent::Start { .. } => None,
        }
    }

    /// The caller's `tracestate` (for this trace, from a trusted caller).
    pub fn tracestate(&self) -> Tracestate {
        match self {
            Parent::Continue { tracestate, .. } => *tracestate,
            Parent::Start { .. } => Tracestate::Absent,
        }
    }

    pub fn invalid_tracestate(&self) -> bool {
        self.tracestate() == Tracestate::Invalid
    }

    /// What the `ot` entry of the caller's `tracestate` says (nothing for a new trace).
    pub fn ot(&self) -> OtValues {
        match self {
            Parent::Continue { ot, .. } => *ot,
            Parent::Start { .. } => OtValues::default(),
        }
    }
}

/// The outcome of step 2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Trust {
    /// The caller is trusted: `sampling.trust_incoming`, or a trusted source.
    pub trusted: bool,
    pub parent: Parent,
    /// The force header's verdict, when the configuration has one and the request carries it
    /// (checked whoever calls: a valid token is the caller's credential).
    pub force: Option<ForceToken>,
}

/// Step 2: asks `peer` only when the trust policy needs to.
pub fn trust(
    config: &Config,
    headers: &RequestHeaders,
    candidate: Candidate,
    peer: &mut dyn Peer,
    unix_seconds: u64,
) -> Trust {
    let trusted = config.sampling.trust.is_trusted(peer);
    let force = config.sampling.force.as_ref().and_then(|force| {
        let token = headers.custom(force.header_index)?;
        Some(force::verify(token, &force.keys, unix_seconds))
    });
    let parent = match candidate.context {
        Some((format, context)) if trusted => {
            let tracestate = if candidate.tracestate_belongs {
                tracecontext::tracestate(headers)
            } else {
                Tracestate::Absent
            };
            let ot = match tracestate {
                Tracestate::Valid => {
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
    use crate::ids::{SpanId, TraceId};
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
        choose(extract, &Extractions::read(extract, &headers))
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

    fn trust_of(caller: [u8; 4], pairs: &[(&str, &str)]) -> Trust {
        let config = Config::from_json(EDGE.as_bytes()).unwrap();
        let headers = RequestHeaders::scan(
            pairs.iter().map(|(name, value)| (*name, value.as_bytes())),
            config.scan(),
        );
        let extractions = Extractions::read(config.formats_read(), &headers);
        let candidate = choose(&config.extract, &extractions);
        trust(
            &config,
            &headers,
            candidate,
            &mut FixedPeer(caller.into()),
            1_800_000_000,
        )
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
        // A duplicate key makes the whole list invalid (W3C Trace Context, "tracestate").
        let invalid = trust_of(
            [10, 0, 0, 1],
            &[("traceparent", TRACEPARENT), ("tracestate", "a=1,a=2")],
        );
        assert!(invalid.parent.invalid_tracestate());
        assert_eq!(invalid.parent.ot(), OtValues::default());
    }

    #[test]
    fn force_tokens_are_checked_whoever_calls() {
        let token = force::sign("ops", b"0123456789abcdef", 1_800_000_060);
        for caller in [[10, 0, 0, 1], [203, 0, 113, 9]] {
            let got = trust_of(caller, &[("x-force", &token)]);
            assert_eq!(got.force, Some(ForceToken::Valid), "{caller:?}");
            let forged = trust_of(caller, &[("x-force", "ops.1800000060.00")]);
            assert_eq!(forged.force, Some(ForceToken::Rejected), "{caller:?}");
            assert_eq!(trust_of(caller, &[]).force, None, "{caller:?}");
        }
    }
}
