//! The core of the filter, free of any proxy-wasm type: read every configured format, choose one
//! context (if the caller is trusted), make or keep the sampling decision, and compute the header
//! edits that make every injected format carry that same context.

use crate::baggage::{self, BaggageReport};
use crate::budget::Budget;
use crate::config::Config;
use crate::context::{Decision, Extraction, IncomingContext, TraceContext, TracestateOut};
use crate::force::{self, ForceToken};
use crate::formats::tracecontext::{self, Tracestate};
use crate::formats::{Extractions, Format};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::ids::{SpanId, TraceId};
use crate::otel_tracestate::{self, OtValues};
use crate::rules;
use crate::sampling::{randomness, Threshold};
use crate::trust::Peer;

/// Where new ids come from (the host's CSPRNG in the filter, a fixed sequence in tests).
pub trait RandomSource {
    /// Fills `buf` with random bytes; `false` when no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The host could not provide random bytes, so no new id could be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RandomUnavailable;

/// What the translator needs from its surroundings.
pub struct Host<'h> {
    pub random: &'h mut dyn RandomSource,
    pub peer: &'h mut dyn Peer,
    pub budget: &'h mut dyn Budget,
    pub unix_seconds: u64,
}

/// Why a request got its sampling decision.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Reason {
    /// A root decision with `sampling.probability`.
    #[default]
    Probability,
    /// A root decision with the probability of a matching rule.
    Rule,
    /// The trusted caller's decision (or its `th` when the flag was lost on the way).
    Parent,
    /// A valid force token.
    Forced,
    /// The rate cap turned a decision that would have sampled into "not sampled".
    Capped,
    /// An untrusted caller's context was dropped and the trace restarted.
    UntrustedRestart,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Probability,
        Reason::Rule,
        Reason::Parent,
        Reason::Forced,
        Reason::Capped,
        Reason::UntrustedRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Probability => "probability",
            Reason::Rule => "rule",
            Reason::Parent => "parent",
            Reason::Forced => "forced",
            Reason::Capped => "capped",
            Reason::UntrustedRestart => "untrusted_restart",
        }
    }
}

/// What became of a force header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ForceOutcome {
    Accepted,
    Rejected,
    /// Valid, but over `sampling.force.max_per_second`.
    OverLimit,
}

/// What happened on one request, for the metrics and the access log.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Report {
    /// The format that supplied the context; `None` when a new trace started.
    pub source: Option<Format>,
    /// Formats whose headers were present but invalid.
    pub invalid: [bool; Format::COUNT],
    pub invalid_tracestate: bool,
    pub trace_started: bool,
    pub span_generated: bool,
    /// A decision the filter made itself (`None` when the caller's decision was kept).
    pub decided: Option<bool>,
    pub reason: Reason,
    /// The index of the rule that set the probability.
    pub rule: Option<usize>,
    /// An incoming `th` was erased as inconsistent with the sampled flag.
    pub threshold_erased: bool,
    pub force: Option<ForceOutcome>,
    /// The caller was not trusted (its context, if any, was dropped).
    pub untrusted: bool,
    pub baggage: BaggageReport,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub context: TraceContext,
    pub edits: Vec<HeaderEdit>,
    pub report: Report,
}

/// A new trace id and span id from one draw of randomness (one host call instead of two).
/// Trace ids are 4 bytes of Unix time followed by 12 random bytes: X-Ray requires the time
/// prefix, and the low 56 bits stay random as W3C's random-trace-id flag and sampling require.
pub fn new_ids(
    random: &mut dyn RandomSource,
    unix_seconds: u64,
) -> Result<(TraceId, SpanId), RandomUnavailable> {
    let mut bytes = [0u8; 20];
    for _ in 0..4 {
        if !random.fill(&mut bytes) {
            return Err(RandomUnavailable);
        }
        let mut trace = [0u8; 16];
        trace[..4].copy_from_slice(&(unix_seconds as u32).to_be_bytes());
        trace[4..].copy_from_slice(&bytes[..12]);
        let mut span = [0u8; 8];
        span.copy_from_slice(&bytes[12..]);
        if let (Some(trace_id), Some(span_id)) = (
            TraceId::new(u128::from_be_bytes(trace)),
            SpanId::new(u64::from_be_bytes(span)),
        ) {
            return Ok((trace_id, span_id));
        }
    }
    Err(RandomUnavailable)
}

/// Eight random bytes, never zero.
pub fn new_span_id(random: &mut dyn RandomSource) -> Result<SpanId, RandomUnavailable> {
    let mut bytes = [0u8; 8];
    for _ in 0..4 {
        if !random.fill(&mut bytes) {
            return Err(RandomUnavailable);
        }
        if let Some(id) = SpanId::new(u64::from_be_bytes(bytes)) {
            return Ok(id);
        }
    }
    Err(RandomUnavailable)
}

/// A decision with the threshold to record in `ot.th` (`None`: no `th`).
struct Sampling {
    decision: Decision,
    threshold: Option<Threshold>,
    reason: Reason,
}

pub fn translate(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
) -> Result<Translation, RandomUnavailable> {
    let mut report = Report::default();
    let mut edits = Vec::new();
    let trusted = config.sampling.trust.is_trusted(host.peer);
    report.untrusted = !trusted;

    let force_token = config.sampling.force.as_ref().and_then(|force| {
        let token = headers.custom(force.header_index)?;
        // Valid or not, the token never travels further.
        edits.push(HeaderEdit::RemoveCustom(force.header.clone()));
        Some(force::verify(token, &force.keys, host.unix_seconds))
    });

    let extractions = Extractions::read(config.formats_read(), headers);
    report.invalid = extractions.invalid();
    let chosen = config
        .extract
        .iter()
        .find_map(|&f| extractions.get(f).context().map(|ctx| (f, *ctx)))
        .filter(|_| trusted);

    // The caller's tracestate counts only when it belongs to the chosen trace.
    let traceparent = extractions.get(Format::TraceContext).context().copied();
    let tracestate = match traceparent {
        Some(tp) if trusted && chosen.is_some_and(|(_, ctx)| ctx.trace_id == tp.trace_id) => {
            tracecontext::tracestate(headers)
        }
        _ => Tracestate::Absent,
    };
    report.invalid_tracestate = tracestate == Tracestate::Invalid;
    let tracestate_lines = match tracestate {
        Tracestate::Valid => headers.tracestate_lines().unwrap_or_default(),
        _ => &[],
    };
    let ot = otel_tracestate::read(tracestate_lines);

    let (context, mut sampling) = match chosen {
        Some((format, incoming)) => {
            report.source = Some(format);
            continue_trace(
                config,
                headers,
                host,
                &incoming,
                &extractions,
                ot,
                &mut report,
            )?
        }
        None => {
            let requested = trusted
                .then(|| decision_only(config, &extractions))
                .flatten();
            start_trace(config, headers, host, requested, &mut report)?
        }
    };
    // An untrusted caller that sent any trace header had its context dropped: a restart.
    let caller_sent_context = config
        .extract
        .iter()
        .any(|&f| extractions.get(f) != Extraction::Absent);
    let root = matches!(sampling.reason, Reason::Probability | Reason::Rule);
    if !trusted && caller_sent_context && root {
        sampling.reason = Reason::UntrustedRestart;
    }
    let context = apply_force(force_token, context, &mut sampling, host, &mut report);
    report.reason = sampling.reason;
    if sampling.reason != Reason::Parent {
        report.decided = Some(sampling.decision.is_sampled());
    }

    let tracestate_out = if ot.th == sampling.threshold && tracestate == Tracestate::Valid {
        TracestateOut::Keep
    } else {
        match otel_tracestate::with_threshold(tracestate_lines, sampling.threshold) {
            Some(value) => TracestateOut::Set(value),
            None => TracestateOut::Remove,
        }
    };
    for &format in &config.inject {
        extractions.inject(format, &context, &tracestate_out, headers, &mut edits);
    }
    if !trusted {
        strip_untrusted(config, headers, &mut edits);
    }
    translate_baggage(config, headers, trusted, &mut edits, &mut report.baggage);
    Ok(Translation {
        context,
        edits,
        report,
    })
}

/// Merges the baggage spellings and writes the configured ones; an untrusted caller's baggage
/// never travels on.
fn translate_baggage(
    config: &Config,
    headers: &RequestHeaders,
    trusted: bool,
    edits: &mut Vec<HeaderEdit>,
    report: &mut BaggageReport,
) {
    let settings = &config.baggage;
    if !(settings.extract || settings.inject) {
        return;
    }
    if !trusted {
        baggage::remove_all(headers, edits);
        return;
    }
    let entries = if settings.extract {
        baggage::extract(headers, report)
    } else {
        Vec::new()
    };
    if settings.inject {
        baggage::inject(&entries, &settings.spellings, headers, edits);
    }
}

/// Headers that ask tracers to force a trace: never passed on from untrusted callers.
const FORCING_HEADERS: [HeaderName; 2] = [HeaderName::ClientTraceId, HeaderName::JaegerDebugId];

/// An untrusted caller's trace headers must not reach the application: formats that are not
/// injected are removed, and so are the headers that force a trace in Envoy
/// (`x-client-trace-id`) or in Jaeger clients (`jaeger-debug-id`).
fn strip_untrusted(config: &Config, headers: &RequestHeaders, edits: &mut Vec<HeaderEdit>) {
    let not_injected = Format::ALL
        .into_iter()
        .filter(|f| !config.inject.contains(f));
    let names = not_injected
        .flat_map(|f| f.headers().iter().copied())
        .filter(|name| !FORCING_HEADERS.contains(name))
        .chain(FORCING_HEADERS);
    for name in names {
        if headers.contains(name) {
            edits.push(HeaderEdit::Remove(name));
        }
    }
}

/// A B3 sampling-only header, in extraction order.
fn decision_only(config: &Config, extractions: &Extractions) -> Option<Decision> {
    config
        .extract
        .iter()
        .find_map(|&f| match extractions.get(f) {
            Extraction::DecisionOnly(decision) => Some(decision),
            _ => None,
        })
}

/// Continues the trusted caller's trace: same trace id and span id, the caller's decision when
/// it made one. Only a missing span id or decision is filled in.
fn continue_trace(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    incoming: &IncomingContext,
    extractions: &Extractions,
    ot: OtValues,
    report: &mut Report,
) -> Result<(TraceContext, Sampling), RandomUnavailable> {
    let span_id = match incoming.span_id {
        Some(span_id) => span_id,
        None => {
            report.span_generated = true;
            new_span_id(host.random)?
        }
    };
    let r = ot.rv.unwrap_or_else(|| randomness(incoming.trace_id));
    let sampling = match (incoming.decision, ot.th) {
        (Some(decision), th) => {
            // The flag is authoritative; a `th` that contradicts it is erased (specification:
            // "If a sampled incoming threshold is apparently inconsistent, erase it").
            let consistent = th.filter(|th| decision.is_sampled() && th.samples(r));
            report.threshold_erased = th.is_some() && consistent.is_none();
            Sampling {
                decision,
                threshold: consistent,
                reason: Reason::Parent,
            }
        }
        // The flag was lost on the way but `th` survived: R >= th reproduces the root's decision.
        (None, Some(th)) => {
            let sampled = th.samples(r);
            Sampling {
                decision: Decision::from_sampled(sampled),
                threshold: sampled.then_some(th),
                reason: Reason::Parent,
            }
        }
        (None, None) => root_decision(config, headers, host, r, report),
    };
    // W3C: a random flag received for this trace id must be kept on every outgoing traceparent,
    // whichever format supplied the context.
    let traceparent_random = extractions
        .get(Format::TraceContext)
        .context()
        .is_some_and(|tp| tp.trace_id == incoming.trace_id && tp.random_trace_id);
    let context = TraceContext {
        trace_id: incoming.trace_id,
        span_id,
        decision: sampling.decision,
        random_trace_id: incoming.random_trace_id || traceparent_random,
    };
    Ok((context, sampling))
}

/// A new trace: no valid (or no trusted) context. A trusted B3 sampling-only header decides it.
fn start_trace(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    requested: Option<Decision>,
    report: &mut Report,
) -> Result<(TraceContext, Sampling), RandomUnavailable> {
    report.trace_started = true;
    let (trace_id, span_id) = new_ids(host.random, host.unix_seconds)?;
    let sampling = match requested {
        Some(decision) => Sampling {
            decision,
            threshold: None,
            reason: Reason::Parent,
        },
        None => root_decision(config, headers, host, randomness(trace_id), report),
    };
    let context = TraceContext {
        trace_id,
        span_id,
        decision: sampling.decision,
        random_trace_id: true,
    };
    Ok((context, sampling))
}

/// The consistent root decision: sampled iff R >= max(T_route, T_cap), then the hard limit.
fn root_decision(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
    r: u64,
    report: &mut Report,
) -> Sampling {
    let (route_threshold, reason) = match rules::matching(&config.sampling.rules, headers) {
        Some((i, rule)) => {
            report.rule = Some(i);
            (rule.threshold, Reason::Rule)
        }
        None => (config.sampling.threshold, Reason::Probability),
    };
    let threshold = if config.sampling.max_sampled_per_second.is_some() {
        route_threshold.max_with(host.budget.cap_threshold())
    } else {
        route_threshold
    };
    let not_sampled = |reason| Sampling {
        decision: Decision::NotSampled,
        threshold: None,
        reason,
    };
    if !threshold.samples(r) {
        let capped = route_threshold.samples(r);
        return not_sampled(if capped { Reason::Capped } else { reason });
    }
    if !host.budget.admit_sampled_root(host.unix_seconds) {
        return not_sampled(Reason::Capped);
    }
    Sampling {
        decision: Decision::Sampled,
        threshold: Some(threshold),
        reason,
    }
}

/// A valid force token samples the request (`th:0`) within its own per-second limit. On a
/// trusted unsampled parent the caller's span id is kept: W3C prefers a new parent id when the
/// sampled flag changes, but that id would name a span nobody reports, which breaks the trace
/// more than an unsampled parent does.
fn apply_force(
    token: Option<ForceToken>,
    mut context: TraceContext,
    sampling: &mut Sampling,
    host: &mut Host,
    report: &mut Report,
) -> TraceContext {
    report.force = match token {
        None => None,
        Some(ForceToken::Rejected) => Some(ForceOutcome::Rejected),
        Some(ForceToken::Valid) if sampling.decision.is_sampled() => Some(ForceOutcome::Accepted),
        Some(ForceToken::Valid) if host.budget.admit_forced(host.unix_seconds) => {
            *sampling = Sampling {
                decision: Decision::Sampled,
                threshold: Some(Threshold::ALWAYS),
                reason: Reason::Forced,
            };
            context.decision = Decision::Sampled;
            Some(ForceOutcome::Accepted)
        }
        Some(ForceToken::Valid) => Some(ForceOutcome::OverLimit),
    };
    context
}
