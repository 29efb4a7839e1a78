//! The proxy-wasm side of the proxy's own spans (`crate::spans` is the transport-free core):
//! the properties a span reads, the worker's exporter shared by the root context and the
//! request contexts, and the HTTP calls to the collector's cluster.
//!
//! Only the root context sends: a call made by a request context is cancelled when its stream
//! ends. A request context that queues the span completing a batch therefore asks for an early
//! tick (Envoy sets the tick of a context's root), and the root sends the batch on that tick.

use super::unix_nanos;
use crate::config::Config;
use crate::formats::Format;
use crate::header_map::SerializedPairs;
use crate::headers::{HeaderName, RequestHeaders};
use crate::spans::config::{KindSetting, SpansConfig};
use crate::spans::export::{self, Counts, Exporter, Outcome};
use crate::spans::otlp::{self, SpanKind};
use crate::spans::record::{self, HttpRequest, OpenSpan, SpanEnd, SpanStart};
use crate::spans::resource::{self, NodeInfo};
use crate::spans::{SCOPE_NAME, SCOPE_VERSION};
use crate::translate::{OwnSpan, Translation};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The tick a request context asks for when a full batch is waiting.
const EARLY_TICK: Duration = Duration::from_millis(1);
const USER_AGENT: &str = concat!("tracebridge/", env!("CARGO_PKG_VERSION"));
/// The listener's `traffic_direction` (`envoy.config.core.v3.TrafficDirection`).
const OUTBOUND: i64 = 2;

/// One worker's span exporter, shared by the root context (which sends the batches) and the
/// request contexts (which queue finished spans). It outlives a reconfiguration, so the spans
/// it holds are not lost.
pub(super) struct SpanSink {
    exporter: RefCell<Exporter>,
    /// Metric ids of exported, dropped, export_failed.
    metrics: [Option<u32>; 3],
    cluster: RefCell<String>,
    /// The last export failed (failures are logged when they start and when they end).
    failing: Cell<bool>,
}

impl SpanSink {
    /// The worker's exporter for `config`: `existing` reconfigured (its queue kept), or a new
    /// one. The resource is read from Envoy's node here, once per configuration.
    pub(super) fn for_config(
        existing: Option<&Rc<SpanSink>>,
        config: &SpansConfig,
        now: SystemTime,
    ) -> Rc<SpanSink> {
        let node = node_info();
        let attributes = resource::attributes(config.service_name.as_deref(), &node);
        let described: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        log::info!(
            "tracebridge: {}; resource {}",
            config.summary(),
            described.join(" ")
        );
        let resource = otlp::resource(&attributes);
        let scope = otlp::scope(SCOPE_NAME, SCOPE_VERSION);
        let now = unix_nanos(now);
        match existing {
            Some(sink) => {
                if let Ok(mut exporter) = sink.exporter.try_borrow_mut() {
                    exporter.reconfigure(config.limits(), resource, scope, now);
                }
                sink.cluster.replace(config.cluster.clone());
                sink.clone()
            }
            None => Rc::new(SpanSink {
                exporter: RefCell::new(Exporter::new(config.limits(), resource, scope, now)),
                metrics: [export::EXPORTED, export::DROPPED, export::EXPORT_FAILED].map(|name| {
                    hostcalls::define_metric(MetricType::Counter, name)
                        .map_err(|status| {
                            log::warn!("tracebridge: cannot define metric {name}: {status:?}")
                        })
                        .ok()
                }),
                cluster: RefCell::new(config.cluster.clone()),
                failing: Cell::new(false),
            }),
        }
    }

    /// Queues a finished span (a request context, at the stream's end).
    pub(super) fn push(&self, span: Vec<u8>) {
        let Ok(mut exporter) = self.exporter.try_borrow_mut() else {
            return;
        };
        if exporter.push(span) {
            let _ = hostcalls::set_tick_period(EARLY_TICK);
        }
    }

    /// Sends the next batch if one is due, and adds the exporter's counts to the counters (the
    /// root context, on its tick and when an export ends). `tick` is the root's normal period,
    /// restored after an early tick.
    pub(super) fn export(
        &self,
        config: Option<&SpansConfig>,
        tick: Option<Duration>,
        now: SystemTime,
    ) {
        let (Some(config), Ok(mut exporter)) = (config, self.exporter.try_borrow_mut()) else {
            return;
        };
        if exporter.take_early_tick() {
            if let Some(tick) = tick {
                let _ = hostcalls::set_tick_period(tick);
            }
        }
        if let Some(batch) = exporter.take_batch(unix_nanos(now)) {
            let headers = vec![
                (":method", "POST"),
                (":path", config.path.as_str()),
                (":authority", config.authority.as_str()),
                ("content-type", "application/x-protobuf"),
                ("user-agent", USER_AGENT),
            ];
            // Registers the call with the SDK for the current (root) context.
            match hostcalls::dispatch_http_call(
                &config.cluster,
                headers,
                Some(&batch.body),
                vec![],
                config.timeout,
            ) {
                Ok(token) => exporter.sent(token, batch.spans, unix_nanos(now)),
                Err(_) => {
                    exporter.not_sent(batch.spans);
                    self.log_health(false, "the host refused the call: no such cluster?");
                }
            }
        }
        self.add_counts(exporter.take_counts());
    }

    /// An export call ended (the root context's `on_http_call_response`).
    pub(super) fn completed(&self, token: u32, num_headers: usize, body_size: usize) {
        let outcome = outcome(num_headers, body_size);
        let Ok(mut exporter) = self.exporter.try_borrow_mut() else {
            return;
        };
        if exporter.completed(token, outcome) {
            match outcome {
                Outcome::Answered { status, .. } if (200..300).contains(&status) => {
                    self.log_health(true, "")
                }
                Outcome::Answered { status, .. } => {
                    self.log_health(false, &format!("HTTP status {status}"))
                }
                Outcome::NoAnswer => {
                    self.log_health(false, "no answer: connection failure, reset or timeout")
                }
            }
        }
    }

    fn add_counts(&self, counts: Counts) {
        let deltas = [counts.exported, counts.dropped, counts.export_failed];
        for (id, n) in self.metrics.iter().zip(deltas) {
            if let (Some(id), true) = (id, n > 0) {
                let _ = hostcalls::increment_metric(*id, n as i64);
            }
        }
    }

    /// Logs when exports start failing and when they work again, not every failure: a collector
    /// that is down must not flood the log.
    fn log_health(&self, ok: bool, what: &str) {
        let cluster = self.cluster.borrow();
        if !ok && !self.failing.replace(true) {
            log::warn!(
                "tracebridge: span export to cluster {cluster} failed ({what}); failed batches are dropped and counted in {}",
                export::EXPORT_FAILED
            );
        } else if ok && self.failing.replace(false) {
            log::info!("tracebridge: span export to cluster {cluster} works again");
        }
    }
}

/// How an export call ended, from its response (no headers: Envoy's failure callback, for a
/// refused connection, a reset or the timeout).
fn outcome(num_headers: usize, body_size: usize) -> Outcome {
    if num_headers == 0 {
        return Outcome::NoAnswer;
    }
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<u16>().ok());
    let Some(status) = status else {
        return Outcome::NoAnswer;
    };
    // A partial success names the spans the receiver rejected; an unreadable body rejects none.
    let rejected = if (200..300).contains(&status) && body_size > 0 {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .and_then(|body| otlp::rejected_spans(&body).ok())
            .unwrap_or(0)
    } else {
        0
    };
    Outcome::Answered { status, rejected }
}

/// A property Envoy serialises as a little-endian int64 (`response.code`,
/// `xds.listener_direction`).
fn int_value(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn property(path: Vec<&str>) -> Option<Vec<u8>> {
    hostcalls::get_property(path).ok().flatten()
}

/// An `xds.*` attribute (the only spelling Envoy 1.40 knows), else its older wasm-only name
/// without the prefix (`node`, `listener_direction`).
fn xds_property(path: &[&str]) -> Option<Vec<u8>> {
    let xds: Vec<&str> = std::iter::once("xds").chain(path.iter().copied()).collect();
    property(xds).or_else(|| property(path.to_vec()))
}

fn node_text(path: &[&str]) -> Option<String> {
    String::from_utf8(xds_property(path)?)
        .ok()
        .filter(|text| !text.is_empty())
}

/// Envoy's node, as the resource needs it.
fn node_info() -> NodeInfo {
    NodeInfo {
        cluster: node_text(&["node", "cluster"]),
        name: node_text(&["node", "metadata", "NAME"]),
        namespace: node_text(&["node", "metadata", "NAMESPACE"]),
        workload_name: node_text(&["node", "metadata", "WORKLOAD_NAME"]),
        owner: node_text(&["node", "metadata", "OWNER"]),
    }
}

/// Opens the span of a sampled request (`own_span`): everything known now is encoded, so no
/// request text is kept until the stream ends. `map` is the request's header map as read for
/// the translation, `now` the time read for it.
pub(super) fn start(
    config: &Config,
    map: &[u8],
    headers: &RequestHeaders,
    translation: &Translation,
    own_span: OwnSpan,
    now: SystemTime,
) -> Option<OpenSpan> {
    let spans = config.spans.as_ref()?;
    let kind = match spans.kind {
        KindSetting::Server => SpanKind::Server,
        KindSetting::Client => SpanKind::Client,
        KindSetting::Listener => {
            match xds_property(&["listener_direction"]).and_then(|b| int_value(&b)) {
                Some(OUTBOUND) => SpanKind::Client,
                _ => SpanKind::Server,
            }
        }
    };
    // The two lines the translation does not read, from the map already in hand.
    let (mut scheme, mut user_agent) = (None, None);
    for (name, value) in SerializedPairs::new(map) {
        match name {
            ":scheme" if scheme.is_none() => scheme = Some(value),
            "user-agent" if user_agent.is_none() => user_agent = Some(value),
            _ => {}
        }
    }
    let scheme_property = match scheme {
        Some(_) => None,
        None => property(vec!["request", "scheme"]),
    };
    let (downstream_peer, protocol) = match kind {
        SpanKind::Server => (
            property(vec!["source", "address"]),
            property(vec!["request", "protocol"]),
        ),
        SpanKind::Client => (None, None),
    };
    let trace_state = record::outgoing_tracestate(
        &translation.edits,
        headers.tracestate_lines(),
        config.inject.contains(&Format::TraceContext),
    );
    let context = &translation.context;
    let report = &translation.report;
    Some(OpenSpan::start(&SpanStart {
        trace_id: context.trace_id,
        span_id: context.span_id,
        parent: own_span.parent,
        // W3C flags: sampled, and random when the trace id is.
        trace_flags: 0x01 | if context.random_trace_id { 0x02 } else { 0 },
        trace_state: trace_state.as_deref(),
        kind,
        start_unix_nanos: unix_nanos(now),
        request: HttpRequest {
            method: headers.get(HeaderName::Method),
            path: headers.get(HeaderName::Path),
            scheme: scheme.or(scheme_property.as_deref()),
            authority: headers.get(HeaderName::Authority),
            user_agent,
            downstream_peer: downstream_peer.as_deref(),
            protocol: protocol.as_deref(),
        },
        sampling_reason: report.reason.name(),
        source_format: report.source.map(|format| format.name()),
    }))
}

/// Ends a span at the stream's end and queues it.
pub(super) fn finish(sink: &SpanSink, span: OpenSpan, now: SystemTime) {
    let upstream = match span.kind() {
        SpanKind::Client => property(vec!["upstream", "address"]),
        SpanKind::Server => None,
    };
    let end = SpanEnd {
        end_unix_nanos: unix_nanos(now),
        status_code: property(vec!["response", "code"])
            .and_then(|b| int_value(&b))
            .and_then(|code| u64::try_from(code).ok()),
        upstream_peer: upstream.as_deref(),
    };
    sink.push(span.finish(&end));
}
