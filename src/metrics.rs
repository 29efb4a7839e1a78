//! The filter's counters: their names and which ones a request's report increments.
//!
//! Names are dotted so that Envoy shows them under `wasmcustom.tracebridge.*` in `/stats` and as
//! `tracebridge_*` in `/stats/prometheus`.

use crate::formats::Format;
use crate::translate::{ForceOutcome, Reason, Report};

listed_enum! {
    /// Things that happen to a request, counted once each.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Event {
        /// A `tracestate` that broke the grammar.
        InvalidTracestate,
        /// No valid context: the filter started a new trace.
        TraceStarted,
        /// A trace id without the caller's span id (none sent, or only the trace id kept from an
        /// untrusted caller); the filter generated one.
        SpanGenerated,
        /// Decisions the filter made itself.
        DecisionSampled,
        DecisionNotSampled,
        /// The host had no random bytes; the request passed unchanged.
        RandomUnavailable,
        /// An incoming `th` contradicted the sampled flag and was erased.
        ThresholdErased,
        /// Requests from callers whose context is not trusted.
        Untrusted,
        /// Requests whose baggage had at least one entry.
        BaggageExtracted,
        /// A W3C `baggage` header that broke the grammar.
        InvalidBaggage,
        /// Baggage entries dropped to stay within the W3C limits.
        BaggageTruncated,
        /// Baggage entries left out of the `uberctx-`/`ot-baggage-` headers to stay within
        /// `baggage.max_headers` and `baggage.max_header_bytes`.
        BaggageHeadersLimited,
    }
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::InvalidTracestate => "tracebridge.invalid.tracestate",
            Event::TraceStarted => "tracebridge.trace_started",
            Event::SpanGenerated => "tracebridge.span_generated",
            Event::DecisionSampled => "tracebridge.decision.sampled",
            Event::DecisionNotSampled => "tracebridge.decision.not_sampled",
            Event::RandomUnavailable => "tracebridge.random_unavailable",
            Event::ThresholdErased => "tracebridge.threshold_erased",
            Event::Untrusted => "tracebridge.untrusted",
            Event::BaggageExtracted => "tracebridge.extracted.baggage",
            Event::InvalidBaggage => "tracebridge.invalid.baggage",
            Event::BaggageTruncated => "tracebridge.baggage_truncated",
            Event::BaggageHeadersLimited => "tracebridge.baggage_headers_limited",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    /// The format that supplied the request's context.
    Extracted(Format),
    /// A present but invalid header of the format (non-UTF-8, oversized or malformed).
    Invalid(Format),
    Event(Event),
    /// Why each request got its decision.
    Reason(Reason),
    Force(ForceOutcome),
}

impl Counter {
    // Where each group starts in the dense index: after the groups before it.
    const EXTRACTED: usize = 0;
    const INVALID: usize = Counter::EXTRACTED + Format::COUNT;
    const EVENTS: usize = Counter::INVALID + Format::COUNT;
    const REASONS: usize = Counter::EVENTS + Event::ALL.len();
    const FORCE: usize = Counter::REASONS + Reason::ALL.len();
    /// How many counters there are.
    pub const COUNT: usize = Counter::FORCE + ForceOutcome::ALL.len();

    pub fn all() -> impl Iterator<Item = Counter> {
        let per_format = Format::ALL
            .into_iter()
            .map(Counter::Extracted)
            .chain(Format::ALL.into_iter().map(Counter::Invalid));
        per_format
            .chain(Event::ALL.into_iter().map(Counter::Event))
            .chain(Reason::ALL.into_iter().map(Counter::Reason))
            .chain(ForceOutcome::ALL.into_iter().map(Counter::Force))
    }

    /// A dense index in `0..COUNT`, for a table of metric ids. Each position is below its
    /// group's size, so no sum reaches `COUNT`.
    pub fn index(self) -> usize {
        match self {
            Counter::Extracted(f) => Counter::EXTRACTED.saturating_add(f.index()),
            Counter::Invalid(f) => Counter::INVALID.saturating_add(f.index()),
            Counter::Event(event) => Counter::EVENTS.saturating_add(event as usize),
            Counter::Reason(reason) => Counter::REASONS.saturating_add(reason as usize),
            Counter::Force(outcome) => Counter::FORCE.saturating_add(outcome as usize),
        }
    }

    pub fn name(self) -> String {
        match self {
            Counter::Extracted(f) => format!("tracebridge.extracted.{}", f.name()),
            Counter::Invalid(f) => format!("tracebridge.invalid.{}", f.name()),
            Counter::Event(event) => event.name().into(),
            Counter::Reason(reason) => format!("tracebridge.reason.{}", reason.name()),
            Counter::Force(ForceOutcome::Accepted) => "tracebridge.force.accepted".into(),
            Counter::Force(ForceOutcome::Rejected) => "tracebridge.force.rejected".into(),
            Counter::Force(ForceOutcome::OverLimit) => "tracebridge.force.over_limit".into(),
        }
    }
}

/// The counters one request's report increments.
pub fn counters(report: &Report) -> impl Iterator<Item = Counter> + '_ {
    let invalid = Format::ALL
        .into_iter()
        .zip(report.invalid)
        .filter(|&(_, invalid)| invalid)
        .map(|(format, _)| Counter::Invalid(format));
    let flags = [
        report.source.map(Counter::Extracted),
        report
            .invalid_tracestate
            .then_some(Counter::Event(Event::InvalidTracestate)),
        report
            .trace_started
            .then_some(Counter::Event(Event::TraceStarted)),
        report
            .span_generated
            .then_some(Counter::Event(Event::SpanGenerated)),
        report.decided.map(|sampled| {
            if sampled {
                Counter::Event(Event::DecisionSampled)
            } else {
                Counter::Event(Event::DecisionNotSampled)
            }
        }),
        Some(Counter::Reason(report.reason)),
        report
            .threshold_erased
            .then_some(Counter::Event(Event::ThresholdErased)),
        report.force.map(Counter::Force),
        report.untrusted.then_some(Counter::Event(Event::Untrusted)),
        (report.baggage.entries > 0).then_some(Counter::Event(Event::BaggageExtracted)),
        report
            .baggage
            .invalid
            .then_some(Counter::Event(Event::InvalidBaggage)),
        report
            .baggage
            .truncated
            .then_some(Counter::Event(Event::BaggageTruncated)),
        report
            .baggage
            .headers_limited
            .then_some(Counter::Event(Event::BaggageHeadersLimited)),
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
                Counter::Event(Event::SpanGenerated),
                Counter::Event(Event::DecisionNotSampled),
                Counter::Reason(Reason::Probability),
            ]
        );
    }
}
