//! Step 4: the header edits that make every injected format carry the decided context.

use super::{Decided, Parent, Trust};
use crate::baggage::{self, BaggageReport};
use crate::config::Config;
use crate::context::TracestateOut;
use crate::formats::tracecontext::{self, Tracestate};
use crate::formats::{datadog, Extractions, Format};
use crate::headers::{HeaderEdit, HeaderName, RequestHeaders};
use crate::otel_tracestate;
use crate::sampling::Threshold;

/// The outcome of step 4.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Written {
    /// In the order the filter applies them.
    pub edits: Vec<HeaderEdit>,
    pub baggage: BaggageReport,
}

/// Step 4: the force header removed, every injected format written (with the `tracestate`
/// verdict), an untrusted caller's other trace headers removed, then baggage.
pub fn write(
    config: &Config,
    headers: &RequestHeaders,
    extractions: &Extractions,
    trust: &Trust,
    decided: &Decided,
) -> Written {
    let mut edits = Vec::new();
    if let Some(force) = &config.sampling.force {
        // Valid or not, the token never travels further.
        if headers.custom(force.header_index).is_some() {
            edits.push(HeaderEdit::RemoveCustom(force.header.clone()));
        }
    }
    let tracestate = match decided.randomness {
        // An adopted trace id: the caller's tracestate is gone, the drawn `rv` travels.
        Some(rv) => TracestateOut::Set(otel_tracestate::with_randomness(
            decided.sampling.threshold,
            rv,
        )),
        None => tracestate_verdict(&trust.parent, headers, decided.sampling.threshold),
    };
    let tracestate = with_datadog_member(config, headers, &trust.parent, decided, tracestate);
    // An untrusted caller's headers shape nothing that is written, not even for a trace id it
    // keeps (`keep_trace_id_from`): its X-Ray fields and Datadog tags go with the rest.
    let untrusted_read;
    let read = if trust.trusted {
        extractions
    } else {
        untrusted_read = Extractions::default();
        &untrusted_read
    };
    for &format in &config.inject {
        read.inject(format, &decided.context, &tracestate, headers, &mut edits);
    }
    if !trust.trusted {
        strip_untrusted(config, headers, &mut edits);
    }
    let baggage = write_baggage(config, headers, trust.trusted, &mut edits);
    Written { edits, baggage }
}

/// The caller's `tracestate` is forwarded as it came when it is valid and its `th` is the one
/// sampled with; otherwise it is rewritten with that `th` (or removed when nothing is left).
fn tracestate_verdict(
    parent: &Parent,
    headers: &RequestHeaders,
    threshold: Option<Threshold>,
) -> TracestateOut {
    let lines = match parent.tracestate() {
        Tracestate::Valid if parent.ot().th == threshold => return TracestateOut::Keep,
        // A repeated key is rewritten with its first entry only.
        Tracestate::Valid | Tracestate::Duplicates => {
            headers.tracestate_lines().unwrap_or_default()
        }
        Tracestate::Absent | Tracestate::Invalid => &[],
    };
    match otel_tracestate::with_threshold(lines, threshold) {
        Some(value) => TracestateOut::Set(value),
        None => TracestateOut::Remove,
    }
}

/// A context continued from Datadog headers and written as W3C carries dd-trace's `dd` member
/// at the front of `tracestate` (replacing any earlier one), as dd-trace's own W3C injection
/// does, so that a Datadog-instrumented service behind keeps the priority and origin. Any
/// other source leaves `tracestate`, and a `dd` member in it, to the verdict.
fn with_datadog_member(
    config: &Config,
    headers: &RequestHeaders,
    parent: &Parent,
    decided: &Decided,
    verdict: TracestateOut,
) -> TracestateOut {
    let Parent::Continue {
        format: Format::Datadog,
        context,
        ..
    } = parent
    else {
        return verdict;
    };
    if !config.inject.contains(&Format::TraceContext) {
        return verdict;
    }
    let set;
    let lines: &[&[u8]] = match &verdict {
        TracestateOut::Keep => headers.tracestate_lines().unwrap_or_default(),
        TracestateOut::Remove => &[],
        TracestateOut::Set(value) => {
            set = [value.as_bytes()];
            &set
        }
    };
    // Room for the member and every other one: one allocation.
    let others: usize = lines.iter().map(|line| line.len().saturating_add(1)).sum();
    let mut out = String::with_capacity(others.saturating_add(datadog::MAX_TRACESTATE_MEMBER));
    datadog::push_tracestate_member(&mut out, headers, context, decided.context.decision);
    tracecontext::push_other_members(&mut out, datadog::TRACESTATE_KEY, lines);
    TracestateOut::Set(out)
}

/// Merges the baggage spellings and writes the configured ones; an untrusted caller's baggage
/// never travels on.
fn write_baggage(
    config: &Config,
    headers: &RequestHeaders,
    trusted: bool,
    edits: &mut Vec<HeaderEdit>,
) -> BaggageReport {
    let mut report = BaggageReport::default();
    let settings = &config.baggage;
    if !(settings.extract || settings.inject) {
        return report;
    }
    if !trusted {
        baggage::remove_all(headers, edits);
        return report;
    }
    let entries = if settings.extract {
        baggage::extract(headers, &mut report)
    } else {
        Vec::new()
    };
    if settings.inject {
        report.headers_limited = baggage::inject(&entries, settings, headers, edits);
    }
    report
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Decision, IncomingContext, TraceContext};
    use crate::ids::{SpanId, TraceId};
    use crate::translate::Force;
    use crate::translate::{Reason, Sampling};

    const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn context() -> TraceContext {
        TraceContext {
            trace_id: TraceId::new(TRACE).unwrap(),
            span_id: SpanId::new(0x00f067aa0ba902b7).unwrap(),
            decision: Decision::Sampled,
            random_trace_id: false,
        }
    }

    fn decided(threshold: Option<&str>) -> Decided {
        Decided {
            context: context(),
            sampling: Sampling {
                decision: Decision::Sampled,
                threshold: threshold.and_then(|th| Threshold::parse_th(th.as_bytes())),
                reason: Reason::Parent,
                rule: None,
            },
            trace_started: false,
            span_generated: false,
            randomness: None,
            threshold_erased: false,
            force: None,
        }
    }

    fn continuing(tracestate: Tracestate, ot: &str) -> Trust {
        Trust {
            trusted: true,
            parent: Parent::Continue {
                format: Format::TraceContext,
                context: IncomingContext {
                    trace_id: TraceId::new(TRACE).unwrap(),
                    span_id: SpanId::new(0x00f067aa0ba902b7),
                    decision: Some(Decision::Sampled),
                    random_trace_id: false,
                },
                tracestate,
                ot: otel_tracestate::read(&[ot.as_bytes()]),
            },
            force: None,
        }
    }

    fn edits(
        config: &str,
        pairs: &[(&str, &str)],
        trust: &Trust,
        decided: &Decided,
    ) -> Vec<HeaderEdit> {
        let config = Config::from_json(config.as_bytes()).unwrap();
        let headers = RequestHeaders::scan(
            pairs.iter().map(|(name, value)| (*name, value.as_bytes())),
            config.scan(),
        );
        let extractions = Extractions::read(config.formats_read(), &headers);
        write(&config, &headers, &extractions, trust, decided).edits
    }

    /// OpenTelemetry specification, "TraceState Handling": the `ot` entry carries the threshold
    /// sampled with; a changed entry moves to the front (W3C Trace Context, "Mutating the
    /// tracestate Field"); an unchanged list is forwarded as it came.
    #[test]
    fn tracestate_table() {
        let only_w3c = r#"{"extract": ["tracecontext"], "inject": ["tracecontext"]}"#;
        let incoming = [("traceparent", TRACEPARENT), ("tracestate", "a=1,ot=th:8")];
        let set = |value: &str| vec![HeaderEdit::Set(HeaderName::Tracestate, value.into())];
        // (tracestate verdict, its ot entry, th decided, want edits)
        let cases: Vec<(Tracestate, &str, Option<&str>, Vec<HeaderEdit>)> = vec![
            (Tracestate::Valid, "ot=th:8", Some("8"), vec![]),
            (Tracestate::Valid, "ot=th:8", Some("c"), set("ot=th:c,a=1")),
            (Tracestate::Valid, "ot=th:8", None, set("a=1")),
            (
                Tracestate::Invalid,
                "",
                None,
                vec![HeaderEdit::Remove(HeaderName::Tracestate)],
            ),
            (Tracestate::Absent, "", Some("0"), set("ot=th:0")),
        ];
        for (tracestate, ot, th, want) in cases {
            let trust = continuing(tracestate, ot);
            let got = edits(only_w3c, &incoming, &trust, &decided(th));
            assert_eq!(got, want, "{tracestate:?} {ot} {th:?}");
        }
    }

    /// README, trust boundary: an untrusted caller's headers of formats not injected, Envoy's
    /// `x-client-trace-id`, Jaeger's `jaeger-debug-id` and its baggage do not travel on; the
    /// force header never does, whoever sends it.
    #[test]
    fn untrusted_callers_headers_are_removed() {
        let config = r#"{"extract": ["tracecontext", "b3"], "inject": ["tracecontext", "baggage"],
            "sampling": {"trust_incoming": false,
                "force": {"header": "x-force", "keys": {"ops": "0123456789abcdef"}}}}"#;
        let pairs = [
            ("x-force", "ops.1.00"),
            ("traceparent", TRACEPARENT),
            ("b3", "1"),
            ("x-client-trace-id", "abc"),
            ("jaeger-debug-id", "abc"),
            ("baggage", "k=v"),
            ("uberctx-k", "v"),
        ];
        let untrusted = Trust {
            trusted: false,
            parent: Parent::Start {
                requested: None,
                untrusted_restart: true,
            },
            force: Some(Force::Rejected),
        };
        let mut decided = decided(None);
        decided.sampling.decision = Decision::NotSampled;
        decided.context.decision = Decision::NotSampled;
        let want = vec![
            HeaderEdit::RemoveCustom("x-force".into()),
            HeaderEdit::Set(
                HeaderName::Traceparent,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
            ),
            HeaderEdit::Remove(HeaderName::B3),
            HeaderEdit::Remove(HeaderName::ClientTraceId),
            HeaderEdit::Remove(HeaderName::JaegerDebugId),
            HeaderEdit::Remove(HeaderName::Baggage),
            HeaderEdit::RemoveCustom("uberctx-k".into()),
        ];
        assert_eq!(edits(config, &pairs, &untrusted, &decided), want);
    }

    #[test]
    fn unchanged_formats_are_left_alone() {
        let config = r#"{"inject": ["tracecontext", "b3"]}"#;
        let pairs = [
            ("traceparent", TRACEPARENT),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        ];
        let trust = continuing(Tracestate::Absent, "");
        // No tracestate and no th: nothing to write there either.
        assert_eq!(edits(config, &pairs, &trust, &decided(None)), vec![]);
    }
}
