//! A probe for the Envoy load benchmark's host-call experiment: how should a filter read the
//! trace headers, and how should it write its edits?
//!
//! The plugin configuration is a string of `key=value` words, for example `read=map write=each`:
//!
//! | read  | per request                                                                         |
//! |-------|-------------------------------------------------------------------------------------|
//! | map   | `get_http_request_headers_bytes`: one host call, the SDK copies every line into a `Vec<(String, Vec<u8>)>` (what tracebridge does) |
//! | each  | `get_http_request_header_bytes` once per trace header name (10 host calls)          |
//! | raw   | one `proxy_get_header_map_pairs` call, the trace lines borrowed from the host's buffer (no copy per line) |
//! | none  | nothing                                                                             |
//!
//! | write | per request                                                                         |
//! |-------|-------------------------------------------------------------------------------------|
//! | each  | `set_http_request_header` (replace) once per edited header (5 calls)                |
//! | map   | one `set_http_request_headers_bytes` call replacing the whole map with the edits applied |
//! | add   | `add_http_request_header` once per edited header (only right when they are absent)  |
//! | none  | nothing                                                                             |
//!
//! The edits are the five headers a W3C request gets when translated to B3 multi, X-Ray and
//! Cloud Trace, with values of the real lengths.
//!
//! `mode=time` instead times every strategy inside the proxy, where the noise of a shared machine
//! hardly reaches: on each request each operation runs `REPEAT` times between two clock reads,
//! and the median nanoseconds per operation over the last `WINDOW` requests is published as the
//! gauge `hostcall_probe.<operation>_ns` (see `OPERATIONS`). It also times the other host calls
//! tracebridge makes per request (clock, counter, property get and set).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { strategy: Rc::new(Strategy::default()), timer: None })
    });
}}

const TRACE_NAMES: [&str; 10] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
];

const EDITS: [(&str, &str); 5] = [
    ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("x-b3-spanid", "00f067aa0ba902b7"),
    ("x-b3-sampled", "1"),
    (
        "x-amzn-trace-id",
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1",
    ),
    (
        "x-cloud-trace-context",
        "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1",
    ),
];

/// The same five edits under names no request carries (for the replace-vs-add timing).
const ABSENT_EDITS: [(&str, &str); 5] = [
    ("x-probe-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("x-probe-b3-spanid", "00f067aa0ba902b7"),
    ("x-probe-b3-sampled", "1"),
    (
        "x-probe-amzn-trace-id",
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1",
    ),
    (
        "x-probe-cloud-trace-context",
        "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Read {
    #[default]
    Map,
    Each,
    Raw,
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Write {
    #[default]
    Each,
    Map,
    Add,
    None,
}

#[derive(Clone, Copy, Debug, Default)]
struct Strategy {
    read: Read,
    write: Write,
    time: bool,
}

impl Strategy {
    fn parse(text: &str) -> Option<Strategy> {
        let mut strategy = Strategy::default();
        for word in text.split_whitespace() {
            match word.split_once('=')? {
                ("read", "map") => strategy.read = Read::Map,
                ("read", "each") => strategy.read = Read::Each,
                ("read", "raw") => strategy.read = Read::Raw,
                ("read", "none") => strategy.read = Read::None,
                ("write", "each") => strategy.write = Write::Each,
                ("write", "map") => strategy.write = Write::Map,
                ("write", "add") => strategy.write = Write::Add,
                ("write", "none") => strategy.write = Write::None,
                ("mode", "time") => strategy.time = true,
                ("mode", "load") => strategy.time = false,
                _ => return None,
            }
        }
        Some(strategy)
    }
}

struct Root {
    strategy: Rc<Strategy>,
    timer: Option<Rc<RefCell<timing::Timer>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        match Strategy::parse(&text) {
            Some(strategy) => {
                self.strategy = Rc::new(strategy);
                if strategy.time {
                    self.timer = Some(Rc::new(RefCell::new(timing::Timer::new())));
                }
                log::warn!("hostcall-probe: {strategy:?}");
                true
            }
            None => {
                log::error!("hostcall-probe: bad configuration {text:?}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            strategy: *self.strategy,
            timer: self.timer.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    strategy: Strategy,
    timer: Option<Rc<RefCell<timing::Timer>>>,
}

impl Context for Probe {}

fn trace_index(name: &[u8]) -> Option<usize> {
    TRACE_NAMES.iter().position(|n| n.as_bytes() == name)
}

/// The whole map through the SDK (a `Vec<(String, Vec<u8>)>` copy), scanned for trace names.
fn read_map(
    ctx: &dyn HttpContext,
    seen: &mut [usize; TRACE_NAMES.len()],
) -> Vec<(String, Vec<u8>)> {
    let pairs = ctx.get_http_request_headers_bytes();
    for (name, value) in &pairs {
        if let Some(i) = trace_index(name.as_bytes()) {
            seen[i] += value.len();
        }
    }
    pairs
}

/// The whole map in one host buffer, scanned in place.
fn read_raw(seen: &mut [usize; TRACE_NAMES.len()]) {
    if let Some(buffer) = raw::request_header_map() {
        raw::for_each_pair(&buffer, |name, value| {
            if let Some(i) = trace_index(name) {
                seen[i] += value.len();
            }
        });
    }
}

/// One host call per trace header name.
fn read_each(ctx: &dyn HttpContext, seen: &mut [usize; TRACE_NAMES.len()]) {
    for (i, name) in TRACE_NAMES.iter().enumerate() {
        if let Some(value) = ctx.get_http_request_header_bytes(name) {
            seen[i] += value.len();
        }
    }
}

fn write_each(ctx: &dyn HttpContext) {
    for (name, value) in EDITS {
        ctx.set_http_request_header(name, Some(value));
    }
}

/// Replaces the whole map with `pairs` and the edits.
fn write_map(ctx: &dyn HttpContext, pairs: &[(String, Vec<u8>)]) {
    let mut out: Vec<(&str, &[u8])> = pairs
        .iter()
        .filter(|(name, _)| !EDITS.iter().any(|(edited, _)| edited == name))
        .map(|(name, value)| (name.as_str(), value.as_slice()))
        .collect();
    out.extend(EDITS.iter().map(|(n, v)| (*n, v.as_bytes())));
    ctx.set_http_request_headers_bytes(out);
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(timer) = &self.timer {
            timer.borrow_mut().time_request(self);
            return Action::Continue;
        }
        let mut seen = [0usize; TRACE_NAMES.len()];
        let mut map = None;
        match self.strategy.read {
            Read::Map => map = Some(read_map(self, &mut seen)),
            Read::Each => read_each(self, &mut seen),
            Read::Raw => read_raw(&mut seen),
            Read::None => {}
        }
        std::hint::black_box(&seen);
        match self.strategy.write {
            Write::Each => write_each(self),
            Write::Add => {
                for (name, value) in EDITS {
                    self.add_http_request_header(name, value);
                }
            }
            Write::Map => {
                let pairs = map.unwrap_or_else(|| self.get_http_request_headers_bytes());
                write_map(self, &pairs);
            }
            Write::None => {}
        }
        Action::Continue
    }
}

/// The header map as the host serialises it, read in place: a little-endian u32 count, then a
/// (name length, value length) u32 pair per line, then each name and value followed by a NUL.
mod raw {
    use std::ptr::null_mut;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
    }

    const HTTP_REQUEST_HEADERS: u32 = 0;
    const STATUS_OK: u32 = 0;

    pub fn request_header_map() -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host fills `data`/`size` with a buffer it allocated through the SDK's
        // `proxy_on_memory_allocate` (a boxed `[u8]` of exactly `size` bytes), which we own.
        unsafe {
            if proxy_get_header_map_pairs(HTTP_REQUEST_HEADERS, &mut data, &mut size) != STATUS_OK
                || data.is_null()
            {
                return None;
            }
            Some(Vec::from_raw_parts(data, size, size))
        }
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
        let word = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]) as usize)
    }

    pub fn for_each_pair(bytes: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
        let Some(count) = u32_at(bytes, 0) else {
            return;
        };
        let mut data = 4 + count * 8;
        for i in 0..count {
            let (Some(name_len), Some(value_len)) =
                (u32_at(bytes, 4 + i * 8), u32_at(bytes, 8 + i * 8))
            else {
                return;
            };
            let (Some(name), Some(value)) = (
                bytes.get(data..data + name_len),
                bytes.get(data + name_len + 1..data + name_len + 1 + value_len),
            ) else {
                return;
            };
            f(name, value);
            data += name_len + value_len + 2;
        }
    }
}

/// `mode=time`: each operation timed inside the proxy.
mod timing {
    use super::*;
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MetricType;
    use std::time::UNIX_EPOCH;

    /// Operations per clock-read pair.
    const REPEAT: u64 = 20;
    /// Requests whose timings make up a published median.
    const WINDOW: usize = 101;

    /// What is timed, in order. `*_ns` gauges hold nanoseconds per operation, the clock's own
    /// cost (`clock`) already subtracted from the others.
    pub const OPERATIONS: [&str; 12] = [
        "clock",
        "read_map",
        "read_raw",
        "read_each",
        "write_each",
        "write_map",
        "increment_metric",
        "set_property",
        "get_property",
        "read_map_and_write_each",
        "replace_then_remove",
        "add_then_remove",
    ];

    pub struct Timer {
        gauges: Vec<Option<u32>>,
        samples: Vec<Vec<u64>>,
        counter: Option<u32>,
    }

    fn now_ns() -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn time(mut op: impl FnMut()) -> u64 {
        let start = now_ns();
        for _ in 0..REPEAT {
            op();
        }
        now_ns().saturating_sub(start) / REPEAT
    }

    fn median(values: &[u64]) -> u64 {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }

    impl Timer {
        pub fn new() -> Timer {
            let gauges = OPERATIONS
                .iter()
                .map(|op| {
                    hostcalls::define_metric(MetricType::Gauge, &format!("hostcall_probe.{op}_ns"))
                        .ok()
                })
                .collect();
            let counter =
                hostcalls::define_metric(MetricType::Counter, "hostcall_probe.timed_requests").ok();
            Timer {
                gauges,
                samples: vec![Vec::with_capacity(WINDOW); OPERATIONS.len()],
                counter,
            }
        }

        pub fn time_request(&mut self, ctx: &dyn HttpContext) {
            let mut seen = [0usize; TRACE_NAMES.len()];
            let pairs = ctx.get_http_request_headers_bytes();
            let counter = self.counter.unwrap_or(0);
            let results = [
                time(|| {}),
                time(|| drop(read_map(ctx, &mut seen))),
                time(|| read_raw(&mut seen)),
                time(|| read_each(ctx, &mut seen)),
                time(|| write_each(ctx)),
                time(|| write_map(ctx, &pairs)),
                time(|| {
                    let _ = hostcalls::increment_metric(counter, 0);
                }),
                time(|| {
                    let _ = hostcalls::set_property(
                        vec!["hostcall_probe.reason"],
                        Some(b"probability"),
                    );
                }),
                time(|| {
                    let _ =
                        std::hint::black_box(hostcalls::get_property(vec!["source", "address"]));
                }),
                time(|| {
                    drop(read_map(ctx, &mut seen));
                    write_each(ctx);
                }),
                // Headers the request does not have: replacing and adding both create them.
                time(|| {
                    for (name, value) in ABSENT_EDITS {
                        ctx.set_http_request_header(name, Some(value));
                    }
                    for (name, _) in ABSENT_EDITS {
                        ctx.set_http_request_header(name, None);
                    }
                }),
                time(|| {
                    for (name, value) in ABSENT_EDITS {
                        ctx.add_http_request_header(name, value);
                    }
                    for (name, _) in ABSENT_EDITS {
                        ctx.set_http_request_header(name, None);
                    }
                }),
            ];
            std::hint::black_box(&seen);
            let clock = results[0];
            for (i, ns) in results.into_iter().enumerate() {
                let ns = if i == 0 { ns } else { ns.saturating_sub(clock) };
                self.samples[i].push(ns);
            }
            if let Some(id) = self.counter {
                let _ = hostcalls::increment_metric(id, 1);
            }
            if self.samples[0].len() == WINDOW {
                for (samples, gauge) in self.samples.iter_mut().zip(&self.gauges) {
                    if let Some(id) = gauge {
                        let _ = hostcalls::record_metric(*id, median(samples));
                    }
                    samples.clear();
                }
            }
        }
    }
}
