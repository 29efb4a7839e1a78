//! The thin proxy-wasm layer: configuration and metrics at `on_configure`, and per request one
//! read of the header map, one call into the transport-free core, and the resulting edits.

use crate::config::Config;
use crate::headers::{HeaderEdit, RequestHeaders};
use crate::metrics::{counters, Counter};
use crate::translate::{translate, RandomSource, Translation};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PluginRoot::default()) });
}}

/// The host's CSPRNG (WASI `random_get`).
struct HostRandom;

impl RandomSource for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
}

/// Metric ids, defined once per plugin configuration.
struct Metrics {
    ids: [Option<u32>; Counter::COUNT],
}

impl Metrics {
    fn define() -> Self {
        let mut ids = [None; Counter::COUNT];
        for counter in Counter::all() {
            match proxy_wasm::hostcalls::define_metric(MetricType::Counter, &counter.name()) {
                Ok(id) => ids[counter.index()] = Some(id),
                Err(status) => log::warn!(
                    "tracebridge: cannot define metric {}: {status:?}",
                    counter.name()
                ),
            }
        }
        Metrics { ids }
    }

    fn increment(&self, counter: Counter) {
        if let Some(id) = self.ids[counter.index()] {
            // A failed increment loses one count; it must not fail the request.
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }
}

/// What every request context of one plugin configuration shares.
struct Plugin {
    config: Config,
    metrics: Metrics,
}

#[derive(Default)]
struct PluginRoot {
    plugin: Option<Rc<Plugin>>,
}

impl Context for PluginRoot {}

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
                self.plugin = Some(Rc::new(Plugin {
                    config,
                    metrics: Metrics::define(),
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter {
            plugin: self.plugin.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RequestFilter {
    plugin: Option<Rc<Plugin>>,
}

impl Context for RequestFilter {}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(plugin) = self.plugin.clone() {
            self.translate_request(&plugin);
        }
        Action::Continue
    }
}

impl RequestFilter {
    fn translate_request(&self, plugin: &Plugin) {
        // One host call for the whole map: it shows repeated lines, which the single-header
        // getter hides, and it yields bytes, so non-UTF-8 values cannot panic.
        let pairs = self.get_http_request_headers_bytes();
        let headers = RequestHeaders::from_pairs(
            pairs
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        );
        let unix_seconds = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        match translate(&plugin.config, &headers, &mut HostRandom, unix_seconds) {
            Ok(translation) => {
                self.apply(&translation.edits);
                for counter in counters(&translation.report) {
                    plugin.metrics.increment(counter);
                }
                log_translation(&translation);
            }
            Err(_) => {
                plugin.metrics.increment(Counter::RandomUnavailable);
                log::warn!("tracebridge: no random bytes from the host; request passed unchanged");
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
            }
        }
    }
}

fn log_translation(translation: &Translation) {
    if log::log_enabled!(log::Level::Debug) {
        let ctx = &translation.context;
        let source = translation.report.source.map_or("new trace", |f| f.name());
        log::debug!(
            "tracebridge: trace={} span={} decision={:?} source={} edits={}",
            ctx.trace_id.to_hex(),
            ctx.span_id.to_hex(),
            ctx.decision,
            source,
            translation.edits.len()
        );
    }
}
