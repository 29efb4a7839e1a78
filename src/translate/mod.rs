//! The core of the filter, free of any proxy-wasm type. [`translate`] reads every configured
//! format once ([`Extractions`]), then takes the request through four steps, each a function with
//! small types of its own, each tested on its own:
//!
//! 1. [`choose`] (in `parent.rs`): from what the formats read, the context the headers offer, by
//!    precedence: a [`Candidate`].
//! 2. [`trust`] (in `parent.rs`): whether the caller is trusted, and so what of the candidate the
//!    request continues (a [`Parent`]), with the force header's verdict: a [`Trust`].
//! 3. [`decide`]: the context to send and its sampling decision: a [`Decided`].
//! 4. [`write()`]: the header edits that make every injected format carry that context.

mod decide;
mod parent;
mod write;

pub use decide::{decide, Decided, Sampling};
pub use parent::{choose, trust, Candidate, Force, Parent, Trust};
pub use write::{write, Written};

use crate::baggage::BaggageReport;
use crate::budget::Budget;
use crate::config::Config;
use crate::context::TraceContext;
use crate::formats::{Extractions, Format};
use crate::headers::{HeaderEdit, RequestHeaders};
use crate::ids::{SpanId, TraceId};
use crate::trust::Peer;

/// Where new ids come from (the host's CSPRNG in the filter, a fixed sequence in tests).
pub trait RandomSource {
    /// Fills `buf` with random bytes; `false` when no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The host could not provide random bytes, so no new id could be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RandomUnavailable;

/// The wall clock, asked only when a request needs the time (a new trace id's prefix, a force
/// token's expiry, the rate budget): in the proxy each reading is a host call.
pub trait Clock {
    fn unix_seconds(&mut self) -> u64;
}

/// A clock that always reads the same second (tests, benchmarks).
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn unix_seconds(&mut self) -> u64 {
        self.0
    }
}

/// What the translator needs from its surroundings.
pub struct Host<'h> {
    pub random: &'h mut dyn RandomSource,
    pub peer: &'h mut dyn Peer,
    pub budget: &'h mut dyn Budget,
    pub clock: &'h mut dyn Clock,
}

listed_enum! {
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
        /// An untrusted caller's trace id was kept (`sampling.keep_trace_id_from`) and decided
        /// with fresh randomness.
        AdoptedTraceId,
    }
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Probability => "probability",
            Reason::Rule => "rule",
            Reason::Parent => "parent",
            Reason::Forced => "forced",
            Reason::Capped => "capped",
            Reason::UntrustedRestart => "untrusted_restart",
            Reason::AdoptedTraceId => "adopted_trace_id",
        }
    }
}

listed_enum! {
    /// What became of a force header.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum ForceOutcome {
        Accepted,
        Rejected,
        /// Valid, but over `sampling.force.max_per_second`.
        OverLimit,
    }
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
    /// The proxy's own span (`spans` configured, request sampled).
    pub own_span: Option<OwnSpan>,
}

/// The span the proxy reports for a sampled request. Its id is the context's span id, so every
/// injected format names it as the upstream's parent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OwnSpan {
    /// The caller's span; `None` when the trace starts here or the caller named no span.
    pub parent: Option<SpanId>,
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

/// A new span id and 56 bits of explicit randomness (`rv`) from one draw.
pub fn new_span_and_randomness(
    random: &mut dyn RandomSource,
) -> Result<(SpanId, u64), RandomUnavailable> {
    let mut bytes = [0u8; 15];
    for _ in 0..4 {
        if !random.fill(&mut bytes) {
            return Err(RandomUnavailable);
        }
        let mut span = [0u8; 8];
        span.copy_from_slice(&bytes[..8]);
        // The other seven bytes, big-endian: a value below 2^56.
        let mut rv = [0u8; 8];
        rv[1..].copy_from_slice(&bytes[8..]);
        let rv = u64::from_be_bytes(rv);
        if let Some(span_id) = SpanId::new(u64::from_be_bytes(span)) {
            return Ok((span_id, rv));
        }
    }
    Err(RandomUnavailable)
}

/// Translates one request: [`choose`], [`trust`], [`decide`], [`write()`]. Fails only when the host
/// has no randomness for a new id (the filter then passes the request unchanged).
pub fn translate(
    config: &Config,
    headers: &RequestHeaders,
    host: &mut Host,
) -> Result<Translation, RandomUnavailable> {
    let extractions = Extractions::read(config.formats_read(), headers);
    let candidate = choose(
        &config.extract,
        &config.sampling.keep_trace_id_from,
        &extractions,
    );
    let trust = trust(config, headers, candidate, host);
    let mut decided = decide(config, headers, host, &trust)?;
    let own_span = own_span(config, &mut decided, host);
    let written = write(config, headers, &extractions, &trust, &decided);
    let sampling = decided.sampling;
    let report = Report {
        source: trust.parent.source(),
        invalid: extractions.invalid(),
        invalid_tracestate: trust.parent.invalid_tracestate(),
        trace_started: decided.trace_started,
        span_generated: decided.span_generated,
        decided: (sampling.reason != Reason::Parent).then_some(sampling.decision.is_sampled()),
        reason: sampling.reason,
        rule: sampling.rule,
        threshold_erased: decided.threshold_erased,
        force: decided.force,
        untrusted: !trust.trusted,
        baggage: written.baggage,
    };
    Ok(Translation {
        context: decided.context,
        edits: written.edits,
        report,
        own_span,
    })
}

/// With `spans` configured, a sampled request gets the proxy's own span: a new span id whose
/// parent is the caller's. A span id the filter generated itself (a new trace, a caller that
/// sent none, or a kept trace id) names no reported span, so it becomes the proxy span's id,
/// without a parent.
/// Unsampled requests keep the caller's span id, as without `spans`: nothing is recorded, and a
/// new id would name a span nobody reports. Without randomness there is no span.
fn own_span(config: &Config, decided: &mut Decided, host: &mut Host) -> Option<OwnSpan> {
    if config.spans.is_none() || !decided.context.decision.is_sampled() {
        return None;
    }
    if decided.trace_started || decided.span_generated {
        return Some(OwnSpan { parent: None });
    }
    let span_id = new_span_id(host.random).ok()?;
    let parent = std::mem::replace(&mut decided.context.span_id, span_id);
    Some(OwnSpan {
        parent: Some(parent),
    })
}
