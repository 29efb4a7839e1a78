//! The core of the filter, free of any proxy-wasm type: read every configured format, choose one
//! context, decide sampling when nobody has, and compute the header edits that make every
//! injected format carry that same context.

use crate::config::Config;
use crate::context::{Decision, Extraction, IncomingContext, TraceContext};
use crate::formats::{b3, b3multi, cloudtrace, tracecontext, xray, Format};
use crate::headers::{HeaderEdit, RequestHeaders};
use crate::ids::{SpanId, TraceId};
use crate::sampling::randomness;

/// Where new ids come from (the host's CSPRNG in the filter, a fixed sequence in tests).
pub trait RandomSource {
    /// Fills `buf` with random bytes; `false` when no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// The host could not provide random bytes, so no new id could be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RandomUnavailable;

/// What happened on one request, for the metrics.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Report {
    /// The format that supplied the context; `None` when a new trace started.
    pub source: Option<Format>,
    /// Formats whose headers were present but invalid.
    pub invalid: [bool; Format::COUNT],
    pub invalid_tracestate: bool,
    pub trace_started: bool,
    pub span_generated: bool,
    /// A decision the filter made itself (`None` when the context already carried one).
    pub decided: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    pub context: TraceContext,
    pub edits: Vec<HeaderEdit>,
    pub report: Report,
}

/// New trace ids are 4 bytes of Unix time followed by 12 random bytes: X-Ray requires the time
/// prefix, and the low 56 bits stay random as W3C's random-trace-id flag and sampling require.
pub fn new_trace_id(
    random: &mut dyn RandomSource,
    unix_seconds: u64,
) -> Result<TraceId, RandomUnavailable> {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&(unix_seconds as u32).to_be_bytes());
    for _ in 0..4 {
        if !random.fill(&mut bytes[4..]) {
            return Err(RandomUnavailable);
        }
        if let Some(id) = TraceId::new(u128::from_be_bytes(bytes)) {
            return Ok(id);
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

pub fn translate(
    config: &Config,
    headers: &RequestHeaders,
    random: &mut dyn RandomSource,
    unix_seconds: u64,
) -> Result<Translation, RandomUnavailable> {
    let mut report = Report::default();
    let mut extractions = [Extraction::Absent; Format::COUNT];
    for &format in config.extract.iter().chain(&config.inject) {
        let i = format.index();
        if extractions[i] == Extraction::Absent {
            extractions[i] = format.extract(headers);
            report.invalid[i] = extractions[i] == Extraction::Invalid;
        }
    }

    let chosen = config
        .extract
        .iter()
        .find_map(|&f| extractions[f.index()].context().map(|ctx| (f, *ctx)));
    let context = match chosen {
        Some((format, incoming)) => {
            report.source = Some(format);
            continue_trace(config, &incoming, &extractions, random, &mut report)?
        }
        None => start_trace(config, &extractions, random, unix_seconds, &mut report)?,
    };

    let traceparent = &extractions[Format::TraceContext.index()];
    let tracestate = match traceparent {
        Extraction::Context(_) => tracecontext::tracestate(headers),
        _ => tracecontext::Tracestate::Absent,
    };
    report.invalid_tracestate = tracestate == tracecontext::Tracestate::Invalid;

    let mut edits = Vec::new();
    for &format in &config.inject {
        let incoming = &extractions[format.index()];
        match format {
            Format::TraceContext => {
                tracecontext::inject(&context, headers, incoming, tracestate, &mut edits)
            }
            Format::B3 => b3::inject(&context, headers, incoming, &mut edits),
            Format::B3Multi => b3multi::inject(&context, headers, incoming, &mut edits),
            Format::XRay => xray::inject(&context, headers, &mut edits),
            Format::CloudTrace => cloudtrace::inject(&context, headers, incoming, &mut edits),
        }
    }
    Ok(Translation {
        context,
        edits,
        report,
    })
}

/// Continues the caller's trace: same trace id and span id, the caller's decision when it made
/// one. Only a missing span id or decision is filled in.
fn continue_trace(
    config: &Config,
    incoming: &IncomingContext,
    extractions: &[Extraction; Format::COUNT],
    random: &mut dyn RandomSource,
    report: &mut Report,
) -> Result<TraceContext, RandomUnavailable> {
    let span_id = match incoming.span_id {
        Some(span_id) => span_id,
        None => {
            report.span_generated = true;
            new_span_id(random)?
        }
    };
    let decision = match incoming.decision {
        Some(decision) => decision,
        None => decide(config, incoming.trace_id, report),
    };
    // W3C: a random flag received for this trace id must be kept on every outgoing traceparent,
    // whichever format supplied the context.
    let traceparent_random = extractions[Format::TraceContext.index()]
        .context()
        .is_some_and(|tp| tp.trace_id == incoming.trace_id && tp.random_trace_id);
    Ok(TraceContext {
        trace_id: incoming.trace_id,
        span_id,
        decision,
        random_trace_id: incoming.random_trace_id || traceparent_random,
    })
}

/// No valid context: a new trace, with a B3 sampling-only decision when the caller sent one.
fn start_trace(
    config: &Config,
    extractions: &[Extraction; Format::COUNT],
    random: &mut dyn RandomSource,
    unix_seconds: u64,
    report: &mut Report,
) -> Result<TraceContext, RandomUnavailable> {
    report.trace_started = true;
    let trace_id = new_trace_id(random, unix_seconds)?;
    let span_id = new_span_id(random)?;
    let requested = config
        .extract
        .iter()
        .find_map(|&f| match extractions[f.index()] {
            Extraction::DecisionOnly(decision) => Some(decision),
            _ => None,
        });
    let decision = match requested {
        Some(decision) => decision,
        None => decide(config, trace_id, report),
    };
    Ok(TraceContext {
        trace_id,
        span_id,
        decision,
        random_trace_id: true,
    })
}

/// The consistent decision: sampled iff R >= T.
fn decide(config: &Config, trace_id: TraceId, report: &mut Report) -> Decision {
    let sampled = config.sampling.threshold.samples(randomness(trace_id));
    report.decided = Some(sampled);
    Decision::from_sampled(sampled)
}
