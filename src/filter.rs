//! The thin proxy-wasm layer: configuration and metrics at `on_configure`, and per request one
//! read of the header map, one call into the transport-free core, and the resulting edits.

#[cfg(feature = "phase-timing")]
mod phases;
mod spans;

use crate::budget::{Budget, BudgetState, Limits};
use crate::config::Config;
use crate::context::TraceContext;
use crate::header_map::SerializedPairs;
use crate::headers::{HeaderEdit, RequestHeaders};
use crate::metrics::{counters, Counter, Event, Pending};
use crate::response::{additions, Present};
use crate::sampling::Threshold;
use crate::spans::record::OpenSpan;
use crate::translate::{translate, Clock, Host, RandomSource, Translation};
use crate::trust::{parse_peer_address, Peer};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use spans::SpanSink;
use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PluginRoot::default()) });
}}

/// Filter state key for the sampling reason: `%FILTER_STATE(wasm.tracebridge.sampling_reason:PLAIN)%`.
const REASON_PROPERTY: &str = "tracebridge.sampling_reason";
/// The cap adapts once per second; each worker refreshes its copy of the cap this often.
const BUDGET_REFRESH: Duration = Duration::from_secs(1);
/// Compare-and-swap attempts before a budget update gives up (and lets the request through).
const CAS_ATTEMPTS: usize = 8;

/// The host's CSPRNG (WASI `random_get`), drawn in bulk: one host call yields the bytes of many
/// new ids. Each byte is handed out once and wiped from the pool when taken.
struct HostRandom;

/// Bytes per `random_get`: a new trace takes 20, so one call serves a dozen new traces.
const RANDOM_POOL: usize = 256;

struct RandomPool {
    bytes: [u8; RANDOM_POOL],
    /// Bytes at and after `next` are unused.
    next: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool { bytes: [0; RANDOM_POOL], next: RANDOM_POOL })
    };
}

impl RandomPool {
    fn take(&mut self, buf: &mut [u8]) -> bool {
        if self.bytes.len().saturating_sub(self.next) < buf.len() {
            if getrandom::fill(&mut self.bytes).is_err() {
                return false;
            }
            self.next = 0;
        }
        let end = self.next.saturating_add(buf.len());
        let Some(taken) = self.bytes.get_mut(self.next..end) else {
            return false;
        };
        buf.copy_from_slice(taken);
        taken.fill(0);
        self.next = end;
        true
    }
}

impl RandomSource for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        if buf.len() > RANDOM_POOL {
            return getrandom::fill(buf).is_ok();
        }
        POOL.with(|pool| match pool.try_borrow_mut() {
            Ok(mut pool) => pool.take(buf),
            Err(_) => getrandom::fill(buf).is_ok(),
        })
    }
}

/// The host's clock, read at most once per request and only if the request needs the time.
#[derive(Default)]
struct HostClock {
    now: Option<SystemTime>,
}

impl HostClock {
    fn now(&mut self) -> SystemTime {
        *self
            .now
            .get_or_insert_with(|| proxy_wasm::hostcalls::get_current_time().unwrap_or(UNIX_EPOCH))
    }
}

impl Clock for HostClock {
    fn unix_seconds(&mut self) -> u64 {
        unix_seconds(self.now())
    }
}

/// The downstream peer, from Envoy's `source.*` attributes.
struct HostPeer;

impl Peer for HostPeer {
    fn address(&mut self) -> Option<IpAddr> {
        let bytes = proxy_wasm::hostcalls::get_property(vec!["source", "address"]).ok()??;
        parse_peer_address(&bytes)
    }

    fn principal(&mut self) -> Option<String> {
        let bytes = proxy_wasm::hostcalls::get_property(vec!["source", "principal"]).ok()??;
        String::from_utf8(bytes).ok().filter(|p| !p.is_empty())
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

const HTTP_REQUEST_HEADERS: u32 = 0;
const HTTP_RESPONSE_HEADERS: u32 = 2;

/// The request's header map as the host serialises it (see [`SerializedPairs`]); `None` when
/// the host has none to give.
fn request_header_map() -> Option<Vec<u8>> {
    header_map(HTTP_REQUEST_HEADERS)
}

/// A header map of the current stream (`map_type`: proxy-wasm's `MapType`), read in place.
fn header_map(map_type: u32) -> Option<Vec<u8>> {
    const STATUS_OK: u32 = 0;
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer of exactly `size` bytes that it allocated
    // through the SDK's `proxy_on_memory_allocate` (a `Vec<u8>` with that capacity), so this
    // module owns it, as the SDK's own getters assume.
    unsafe {
        if proxy_get_header_map_pairs(map_type, &mut data, &mut size) != STATUS_OK || data.is_null()
        {
            return None;
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn unix_nanos(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// The proxy-wide budget in shared data (one copy per VM, seen by every worker), updated with
/// compare-and-swap. Each worker caches the cap threshold and refreshes it on its tick.
struct SharedBudget {
    key: String,
    limits: Limits,
    cap: Cell<Threshold>,
}

impl SharedBudget {
    /// Applies `change` to the shared state; returns its answer, or `fallback` if the host
    /// keeps refusing the update.
    fn update(&self, change: impl Fn(&mut BudgetState) -> bool, fallback: bool) -> bool {
        for _ in 0..CAS_ATTEMPTS {
            let Ok((bytes, cas)) = proxy_wasm::hostcalls::get_shared_data(&self.key) else {
                return fallback;
            };
            let mut state = bytes
                .as_deref()
                .and_then(BudgetState::decode)
                .unwrap_or_default();
            let answer = change(&mut state);
            match proxy_wasm::hostcalls::set_shared_data(&self.key, Some(&state.encode()), cas) {
                Ok(()) => {
                    self.cap.set(state.cap_threshold(&self.limits));
                    return answer;
                }
                Err(Status::CasMismatch) => continue,
                Err(_) => return fallback,
            }
        }
        fallback
    }

    fn refresh(&self, now: u64) {
        self.update(
            |state| {
                state.roll(now, &self.limits);
                true
            },
            true,
        );
    }
}

/// The budget as one request sees it.
struct RequestBudget<'b>(&'b SharedBudget);

impl Budget for RequestBudget<'_> {
    fn cap_threshold(&mut self) -> Threshold {
        self.0.cap.get()
    }

    fn admit_sampled_root(&mut self, now: u64) -> bool {
        if self.0.limits.max_sampled_per_second.is_none() {
            return true;
        }
        self.0
            .update(|state| state.admit_sampled_root(now, &self.0.limits), true)
    }

    fn admit_forced(&mut self, now: u64) -> bool {
        // A forced trace that cannot be counted is not let through: forcing must stay bounded.
        self.0
            .update(|state| state.admit_forced(now, &self.0.limits), false)
    }
}

/// Metric ids, defined once per plugin configuration.
struct Metrics {
    ids: [Option<u32>; Counter::COUNT],
    /// The worker's counts since the last flush (shared by every configuration of the worker).
    pending: Rc<Pending>,
}

impl Metrics {
    fn define(pending: Rc<Pending>) -> Self {
        let mut ids = [None; Counter::COUNT];
        for counter in Counter::all() {
            match proxy_wasm::hostcalls::define_metric(MetricType::Counter, &counter.name()) {
                Ok(id) => {
                    if let Some(slot) = ids.get_mut(counter.index()) {
                        *slot = Some(id);
                    }
                }
                Err(status) => log::warn!(
                    "tracebridge: cannot define metric {}: {status:?}",
                    counter.name()
                ),
            }
        }
        Metrics { ids, pending }
    }

    /// Counted in the worker; Envoy sees it at the next [`Metrics::flush`].
    fn increment(&self, counter: Counter) {
        self.pending.add(counter);
    }

    /// Hands the worker's counts to Envoy: one host call per counter that moved.
    fn flush(&self) {
        for (index, count) in self.pending.drain() {
            if let Some(&Some(id)) = self.ids.get(index) {
                // A failed increment loses those counts; it must not disturb the filter.
                let _ = proxy_wasm::hostcalls::increment_metric(
                    id,
                    i64::try_from(count).unwrap_or(i64::MAX),
                );
            }
        }
    }
}

/// What every request context of one plugin configuration shares.
struct Plugin {
    config: Config,
    metrics: Metrics,
    budget: SharedBudget,
    needs_budget: bool,
    spans: Option<Rc<SpanSink>>,
}

#[derive(Default)]
struct PluginRoot {
    plugin: Option<Rc<Plugin>>,
    /// The worker's span queue; it outlives a reconfiguration, so queued spans are not lost.
    spans: Option<Rc<SpanSink>>,
    /// The worker's counts not yet flushed; they outlive a reconfiguration too.
    pending: Rc<Pending>,
    /// The tick period of the configuration (`None`: no tick).
    tick: Option<Duration>,
    /// The Unix second of the last budget refresh (the tick may be faster than once a second).
    budget_refreshed: Cell<u64>,
}

impl Context for PluginRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // The only calls the filter makes are span exports.
        if let (Some(sink), Some(plugin)) = (&self.spans, &self.plugin) {
            sink.completed(token_id, num_headers, body_size);
            sink.export(
                plugin.config.spans.as_ref(),
                self.tick,
                self.get_current_time(),
            );
        }
    }
}

impl RootContext for PluginRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Follow Envoy's wasm log level so that disabled debug lines cost no host call.
        if let Ok(level) = proxy_wasm::hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                log::info!("tracebridge: configured: {}", config.summary());
                let name = self
                    .get_property(vec!["plugin_name"])
                    .and_then(|name| String::from_utf8(name).ok())
                    .unwrap_or_default();
                let limits = config.sampling.limits();
                let needs_budget =
                    limits.max_sampled_per_second.is_some() || config.sampling.force.is_some();
                let budget = SharedBudget {
                    key: format!("tracebridge.budget.{name}"),
                    limits,
                    cap: Cell::new(Threshold::ALWAYS),
                };
                let now = self.get_current_time();
                if needs_budget {
                    budget.refresh(unix_seconds(now));
                    self.budget_refreshed.set(unix_seconds(now));
                }
                self.spans = config
                    .spans
                    .as_ref()
                    .map(|spans| SpanSink::for_config(self.spans.as_ref(), spans, now));
                // The counters always need the tick; the budget and the span export may need
                // it more often.
                let mut tick = config.metrics.flush_interval;
                if needs_budget {
                    tick = tick.min(BUDGET_REFRESH);
                }
                if let Some(spans) = &config.spans {
                    tick = tick.min(spans.flush_interval);
                }
                if self.tick != Some(tick) {
                    self.set_tick_period(tick);
                }
                self.tick = Some(tick);
                // Counts of the previous configuration go out under its ids (the same names).
                if let Some(previous) = &self.plugin {
                    previous.metrics.flush();
                }
                self.plugin = Some(Rc::new(Plugin {
                    config,
                    metrics: Metrics::define(self.pending.clone()),
                    budget,
                    needs_budget,
                    spans: self.spans.clone(),
                }));
                true
            }
            Err(err) => {
                // Refusing the configuration makes Envoy reject it (static config: Envoy does
                // not start; ECDS: the update is NACKed and the previous one keeps serving).
                log::error!("tracebridge: invalid configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(plugin) = &self.plugin else {
            return;
        };
        plugin.metrics.flush();
        if !plugin.needs_budget && self.spans.is_none() {
            return;
        }
        let now = self.get_current_time();
        let second = unix_seconds(now);
        if plugin.needs_budget && self.budget_refreshed.get() != second {
            plugin.budget.refresh(second);
            self.budget_refreshed.set(second);
        }
        if let (Some(sink), Some(plugin)) = (&self.spans, &self.plugin) {
            sink.export(plugin.config.spans.as_ref(), self.tick, now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter {
            plugin: self.plugin.clone(),
            sent: None,
            span: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RequestFilter {
    plugin: Option<Rc<Plugin>>,
    /// The context sent upstream, kept only when `response` will put it on the response.
    sent: Option<TraceContext>,
    /// The proxy's span for this request, between the request headers and the stream's end.
    span: Option<OpenSpan>,
}

impl Context for RequestFilter {}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(plugin) = self.plugin.clone() {
            #[cfg(feature = "phase-timing")]
            let sent = phases::timed_request(self, &plugin);
            #[cfg(not(feature = "phase-timing"))]
            let sent = self.translate_request(&plugin);
            if let (Some(response), Some(sent)) = (&plugin.config.response, sent) {
                if response.applies(&sent) {
                    self.sent = Some(sent);
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Nothing kept (no `response`, or a request it does not apply to): no host call.
        let Some(sent) = self.sent.take() else {
            return Action::Continue;
        };
        let Some(response) = self
            .plugin
            .as_ref()
            .and_then(|p| p.config.response.as_ref())
        else {
            return Action::Continue;
        };
        // One read of the whole map: the upstream's Server-Timing may span several lines.
        let map = header_map(HTTP_RESPONSE_HEADERS).unwrap_or_default();
        let present = Present::scan(SerializedPairs::new(&map), response);
        for (name, value) in additions(response, &sent, &present) {
            // Added, never set: the upstream's own lines stay.
            self.add_http_response_header(name, &value);
        }
        Action::Continue
    }

    /// The stream is complete (Envoy calls this when it writes the access log).
    fn on_log(&mut self) {
        let sink = self
            .plugin
            .as_ref()
            .and_then(|plugin| plugin.spans.as_ref());
        if let (Some(span), Some(sink)) = (self.span.take(), sink) {
            spans::finish(sink, span, self.get_current_time());
        }
    }
}

impl RequestFilter {
    /// Translates the request's headers; returns the context as it was sent upstream.
    fn translate_request(&mut self, plugin: &Plugin) -> Option<TraceContext> {
        // One host call for the whole map: it shows repeated lines, which the single-header
        // getter hides, and its lines are read in place as bytes (no copy per line, and no
        // UTF-8 conversion that could panic; measured 1.3 against 2.9 microseconds for the SDK's
        // copying getter).
        let map = request_header_map().unwrap_or_default();
        let headers = RequestHeaders::scan(SerializedPairs::new(&map), plugin.config.scan());
        let mut clock = HostClock::default();
        let mut host = Host {
            random: &mut HostRandom,
            peer: &mut HostPeer,
            budget: &mut RequestBudget(&plugin.budget),
            clock: &mut clock,
        };
        match translate(&plugin.config, &headers, &mut host) {
            Ok(translation) => {
                if let Some(own_span) = translation.own_span {
                    let now = clock.now();
                    self.span =
                        spans::start(&plugin.config, &map, &headers, &translation, own_span, now);
                }
                self.apply(&translation.edits);
                for counter in counters(&translation.report) {
                    plugin.metrics.increment(counter);
                }
                if plugin.config.reason_in_filter_state {
                    self.set_property(
                        vec![REASON_PROPERTY],
                        Some(translation.report.reason.name().as_bytes()),
                    );
                }
                log_translation(&translation);
                Some(translation.context)
            }
            Err(_) => {
                // Nothing else is rewritten, but a force token never travels on.
                if let Some(force) = &plugin.config.sampling.force {
                    if headers.custom(force.header_index).is_some() {
                        self.set_http_request_header(&force.header, None);
                    }
                }
                plugin
                    .metrics
                    .increment(Counter::Event(Event::RandomUnavailable));
                log::warn!(
                    "tracebridge: no random bytes from the host; request passed unchanged (but for the force header)"
                );
                None
            }
        }
    }

    fn apply(&self, edits: &[HeaderEdit]) {
        for edit in edits {
            match edit {
                HeaderEdit::Set(name, value) => {
                    self.set_http_request_header(name.as_str(), Some(value))
                }
                HeaderEdit::Remove(name) => self.set_http_request_header(name.as_str(), None),
                HeaderEdit::RemoveCustom(name) => self.set_http_request_header(name, None),
                HeaderEdit::SetCustom(name, value) => {
                    self.set_http_request_header(name, Some(value))
                }
            }
        }
    }
}

fn log_translation(translation: &Translation) {
    if log::log_enabled!(log::Level::Debug) {
        let ctx = &translation.context;
        let report = &translation.report;
        log::debug!(
            "tracebridge: trace={} span={} decision={:?} reason={} source={} edits={}",
            ctx.trace_id.to_hex(),
            ctx.span_id.to_hex(),
            ctx.decision,
            report.reason.name(),
            report.source.map_or("new trace", |f| f.name()),
            translation.edits.len()
        );
    }
}
