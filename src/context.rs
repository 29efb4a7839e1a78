//! The trace context every format maps to and from.

use crate::ids::{SpanId, TraceId};

/// A sampling decision that has been made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    NotSampled,
    Sampled,
    /// Sampled, and the caller asked for debug tracing (B3 `d` / `X-B3-Flags: 1`).
    Debug,
}

impl Decision {
    pub fn from_sampled(sampled: bool) -> Self {
        if sampled {
            Decision::Sampled
        } else {
            Decision::NotSampled
        }
    }

    pub fn is_sampled(self) -> bool {
        self != Decision::NotSampled
    }
}

/// What one format's headers carried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IncomingContext {
    pub trace_id: TraceId,
    /// The caller's span id; absent for a first-hop load balancer id (X-Ray `Root=` only).
    pub span_id: Option<SpanId>,
    /// `None` when the caller deferred the decision.
    pub decision: Option<Decision>,
    /// W3C Level 2 `random-trace-id` flag; only `traceparent` can carry it.
    pub random_trace_id: bool,
}

/// The outcome of reading one format's headers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Extraction {
    /// No header of this format on the request.
    #[default]
    Absent,
    /// A header is present but does not follow the format's grammar.
    Invalid,
    /// A decision without ids (B3 `b3: 1` or `X-B3-Sampled` alone): applies to a new trace.
    DecisionOnly(Decision),
    Context(IncomingContext),
}

impl Extraction {
    pub fn context(&self) -> Option<&IncomingContext> {
        match self {
            Extraction::Context(ctx) => Some(ctx),
            _ => None,
        }
    }
}

/// The one context the filter writes into every injected format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub decision: Decision,
    pub random_trace_id: bool,
}

impl TraceContext {
    /// Whether `incoming` already says exactly this (so its headers can stay untouched).
    /// Formats that cannot express debug compare only "sampled or not"; the random flag is
    /// compared separately by the one format that carries it.
    pub fn matches(&self, incoming: &IncomingContext, carries_debug: bool) -> bool {
        let same_decision = match incoming.decision {
            Some(decision) if carries_debug => decision == self.decision,
            Some(decision) => decision.is_sampled() == self.decision.is_sampled(),
            None => false,
        };
        incoming.trace_id == self.trace_id
            && incoming.span_id == Some(self.span_id)
            && same_decision
    }
}

/// What to do with `tracestate`: the translator decides (sampling may rewrite its `ot` entry),
/// W3C Trace Context's inject carries it out.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TracestateOut {
    /// Forward the incoming lines unchanged.
    Keep,
    /// Remove any incoming lines.
    Remove,
    Set(String),
}
