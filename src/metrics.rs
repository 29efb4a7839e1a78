//! The filter's counters: their names and which ones a request's report increments.
//!
//! Names are dotted so that Envoy shows them under `wasmcustom.tracebridge.*` in `/stats` and as
//! `tracebridge_*` in `/stats/prometheus`.
//!
//! A request does not call the host for its counters: it adds them to the worker's [`Pending`]
//! counts, which the filter hands to Envoy on its tick (`metrics.flush_interval_ms`), one
//! `increment_metric` per counter that moved. A host call costs about as much as a whole
//! translation; Envoy's stats are at most one flush interval late instead.

use crate::config::json::{check_keys, error, object};
use crate::config::ConfigError;
use crate::formats::Format;
use crate::translate::{ForceOutcome, Reason, Report};
use serde_json::Value;
use std::cell::Cell;
use std::time::Duration;

/// How often counts reach Envoy when `metrics.flush_interval_ms` is not set.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(1000);

/// The `metrics` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// How late Envoy's stats may be: the period of the flush.
    pub flush_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }
}

impl MetricsConfig {
    /// Parses the value of `metrics`.
    pub fn from_json(value: &Value) -> Result<MetricsConfig, ConfigError> {
        let object = object(value, "metrics")?;
        check_keys(object, "metrics.", &["flush_interval_ms"])?;
        let mut config = MetricsConfig::default();
        if let Some(value) = object.get("flush_interval_ms") {
            // proxy-wasm tick periods are u32 milliseconds.
            let max = u64::from(u32::MAX);
            match value.as_u64() {
                Some(ms) if (1..=max).contains(&ms) => {
                    config.flush_interval = Duration::from_millis(ms);
                }
                _ => {
                    return Err(error(
                        "metrics.flush_interval_ms",
                        format!("must be a whole number from 1 to {max}, got {value}"),
                    ))
                }
            }
        }
        Ok(config)
    }
}

/// Counts not yet handed to the host, one per [`Counter`], kept per worker.
pub struct Pending {
    counts: [Cell<u64>; Counter::COUNT],
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            counts: std::array::from_fn(|_| Cell::new(0)),
        }
    }
}

impl Pending {
    pub fn add(&self, counter: Counter) {
        if let Some(count) = self.counts.get(counter.index()) {
            count.set(count.get().saturating_add(1));
        }
    }

    /// Takes every non-zero count (leaving zero), with its counter's index.
    pub fn drain(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(index, count)| match count.take() {
                0 => None,
                n => Some((index, n)),
            })
    }
}

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
    fn pending_counts_drain_once() {
        let pending = Pending::default();
        pending.add(Counter::Reason(Reason::Parent));
        pending.add(Counter::Reason(Reason::Parent));
        pending.add(Counter::Extracted(Format::B3));
        let mut got: Vec<(usize, u64)> = pending.drain().collect();
        got.sort_unstable();
        let mut want = vec![
            (Counter::Reason(Reason::Parent).index(), 2),
            (Counter::Extracted(Format::B3).index(), 1),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(pending.drain().count(), 0);
    }

    #[test]
    fn metrics_section() {
        let parse = |text: &str| MetricsConfig::from_json(&serde_json::from_str(text).unwrap());
        assert_eq!(parse("{}"), Ok(MetricsConfig::default()));
        assert_eq!(
            parse(r#"{"flush_interval_ms": 20}"#)
                .unwrap()
                .flush_interval,
            Duration::from_millis(20)
        );
        for bad in [
            r#"{"flush_interval_ms": 0}"#,
            r#"{"flush_interval_ms": "1s"}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().path, "metrics.flush_interval_ms");
        }
        assert_eq!(
            parse(r#"{"interval": 1}"#).unwrap_err().path,
            "metrics.interval"
        );
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
