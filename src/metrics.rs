//! The filter's counters: their names and which ones a request's report increments.
//!
//! Names are dotted so that Envoy shows them under `wasmcustom.tracebridge.*` in `/stats` and as
//! `tracebridge_*` in `/stats/prometheus`.

use crate::formats::Format;
use crate::translate::{ForceOutcome, Reason, Report};

const FORCE_OUTCOMES: [ForceOutcome; 3] = [
    ForceOutcome::Accepted,
    ForceOutcome::Rejected,
    ForceOutcome::OverLimit,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    /// The format that supplied the request's context.
    Extracted(Format),
    /// A present but invalid header of the format (non-UTF-8, oversized or malformed).
    Invalid(Format),
    InvalidTracestate,
    /// No valid context: the filter started a new trace.
    TraceStarted,
    /// The context had a trace id but no span id; the filter generated one.
    SpanGenerated,
    /// Decisions the filter made itself.
    DecisionSampled,
    DecisionNotSampled,
    /// The host had no random bytes; the request passed unchanged.
    RandomUnavailable,
    /// Why each request got its decision.
    Reason(Reason),
    /// An incoming `th` contradicted the sampled flag and was erased.
    ThresholdErased,
    Force(ForceOutcome),
    /// Requests from callers whose context is not trusted.
    Untrusted,
    /// Requests whose baggage had at least one entry.
    BaggageExtracted,
    /// A W3C `baggage` header that broke the grammar.
    InvalidBaggage,
    /// Baggage entries dropped to stay within the W3C limits.
    BaggageTruncated,
}

impl Counter {
    pub const COUNT: usize =
        2 * Format::COUNT + 6 + Reason::ALL.len() + 1 + FORCE_OUTCOMES.len() + 4;

    pub fn all() -> impl Iterator<Item = Counter> {
        let per_format = Format::ALL
            .into_iter()
            .flat_map(|f| [Counter::Extracted(f), Counter::Invalid(f)]);
        per_format
            .chain([
                Counter::InvalidTracestate,
                Counter::TraceStarted,
                Counter::SpanGenerated,
                Counter::DecisionSampled,
                Counter::DecisionNotSampled,
                Counter::RandomUnavailable,
            ])
            .chain(Reason::ALL.into_iter().map(Counter::Reason))
            .chain([Counter::ThresholdErased])
            .chain(FORCE_OUTCOMES.into_iter().map(Counter::Force))
            .chain([
                Counter::Untrusted,
                Counter::BaggageExtracted,
                Counter::InvalidBaggage,
                Counter::BaggageTruncated,
            ])
    }

    /// A dense index in `0..COUNT`, for a table of metric ids.
    pub fn index(self) -> usize {
        let n = Format::COUNT;
        match self {
            Counter::Extracted(f) => f.index(),
            Counter::Invalid(f) => n + f.index(),
            Counter::InvalidTracestate => 2 * n,
            Counter::TraceStarted => 2 * n + 1,
            Counter::SpanGenerated => 2 * n + 2,
            Counter::DecisionSampled => 2 * n + 3,
            Counter::DecisionNotSampled => 2 * n + 4,
            Counter::RandomUnavailable => 2 * n + 5,
            Counter::Reason(reason) => 2 * n + 6 + reason as usize,
            Counter::ThresholdErased => 2 * n + 6 + Reason::ALL.len(),
            Counter::Force(outcome) => 2 * n + 7 + Reason::ALL.len() + outcome as usize,
            Counter::Untrusted => 2 * n + 7 + Reason::ALL.len() + FORCE_OUTCOMES.len(),
            Counter::BaggageExtracted => 2 * n + 8 + Reason::ALL.len() + FORCE_OUTCOMES.len(),
            Counter::InvalidBaggage => 2 * n + 9 + Reason::ALL.len() + FORCE_OUTCOMES.len(),
            Counter::BaggageTruncated => 2 * n + 10 + Reason::ALL.len() + FORCE_OUTCOMES.len(),
        }
    }

    pub fn name(self) -> String {
        match self {
            Counter::Extracted(f) => format!("tracebridge.extracted.{}", f.name()),
            Counter::Invalid(f) => format!("tracebridge.invalid.{}", f.name()),
            Counter::InvalidTracestate => "tracebridge.invalid.tracestate".into(),
            Counter::TraceStarted => "tracebridge.trace_started".into(),
            Counter::SpanGenerated => "tracebridge.span_generated".into(),
            Counter::DecisionSampled => "tracebridge.decision.sampled".into(),
            Counter::DecisionNotSampled => "tracebridge.decision.not_sampled".into(),
            Counter::RandomUnavailable => "tracebridge.random_unavailable".into(),
            Counter::Reason(reason) => format!("tracebridge.reason.{}", reason.name()),
            Counter::ThresholdErased => "tracebridge.threshold_erased".into(),
            Counter::Force(ForceOutcome::Accepted) => "tracebridge.force.accepted".into(),
            Counter::Force(ForceOutcome::Rejected) => "tracebridge.force.rejected".into(),
            Counter::Force(ForceOutcome::OverLimit) => "tracebridge.force.over_limit".into(),
            Counter::Untrusted => "tracebridge.untrusted".into(),
            Counter::BaggageExtracted => "tracebridge.extracted.baggage".into(),
            Counter::InvalidBaggage => "tracebridge.invalid.baggage".into(),
            Counter::BaggageTruncated => "tracebridge.baggage_truncated".into(),
        }
    }
}

/// The counters one request's report increments.
pub fn counters(report: &Report) -> impl Iterator<Item = Counter> + '_ {
    let invalid = Format::ALL
        .into_iter()
        .filter(|f| report.invalid[f.index()])
        .map(Counter::Invalid);
    let flags = [
        report.source.map(Counter::Extracted),
        report
            .invalid_tracestate
            .then_some(Counter::InvalidTracestate),
        report.trace_started.then_some(Counter::TraceStarted),
        report.span_generated.then_some(Counter::SpanGenerated),
        report.decided.map(|sampled| {
            if sampled {
                Counter::DecisionSampled
            } else {
                Counter::DecisionNotSampled
            }
        }),
        Some(Counter::Reason(report.reason)),
        report.threshold_erased.then_some(Counter::ThresholdErased),
        report.force.map(Counter::Force),
        report.untrusted.then_some(Counter::Untrusted),
        (report.baggage.entries > 0).then_some(Counter::BaggageExtracted),
        report.baggage.invalid.then_some(Counter::InvalidBaggage),
        report
            .baggage
            .truncated
            .then_some(Counter::BaggageTruncated),
    ];
    invalid.chain(flags.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        let all: Vec<Counter> = Counter::all().collect();
        assert_eq!(all.len(), Counter::COUNT);
        let mut indices: Vec<usize> = all.iter().map(|c| c.index()).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..Counter::COUNT).collect::<Vec<_>>());
        let mut names: Vec<String> = all.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT);
        assert!(names.contains(&"tracebridge.extracted.b3multi".to_string()));
    }

    #[test]
    fn report_to_counters() {
        let mut report = Report {
            source: Some(Format::XRay),
            span_generated: true,
            decided: Some(false),
            ..Report::default()
        };
        report.invalid[Format::TraceContext.index()] = true;
        let got: Vec<Counter> = counters(&report).collect();
        assert_eq!(
            got,
            vec![
                Counter::Invalid(Format::TraceContext),
                Counter::Extracted(Format::XRay),
                Counter::SpanGenerated,
                Counter::DecisionNotSampled,
                Counter::Reason(Reason::Probability),
            ]
        );
    }
}
