//! Where a request's time goes, timed inside the proxy: only in a module built with
//! `--features phase-timing` (the Envoy load benchmark builds one, `make bench`; the filter of
//! `make build` has none of this).
//!
//! Before the real work of each request, each phase runs [`REPEAT`] times between two clock
//! readings, on that request's own headers and configuration, and the median nanoseconds per
//! run over the last [`WINDOW`] requests is published as the gauge
//! `tracebridge.phase.<phase>_ns` (the clock's own cost subtracted, except from `clock`). The
//! counts the repeated runs add are discarded before the request's real pass, so the counters
//! stay true.

use super::*;
use crate::metrics::Pending;
use std::cell::RefCell;
use std::hint::black_box;

/// Runs per clock-reading pair.
const REPEAT: u64 = 20;
/// Requests whose timings make up a published median.
const WINDOW: usize = 101;

/// What is timed, in order (the gauge names).
const PHASES: [&str; 14] = [
    // proxy_get_current_time_nanoseconds: the timer itself
    "clock",
    // proxy_get_header_map_pairs: the whole request map in one buffer
    "map_read",
    // RequestHeaders::scan over that buffer
    "scan",
    // translate(): extraction, choice, trust, decision, the edits
    "translate",
    // every edit of the request written (set_http_request_header each)
    "header_writes",
    // one of them (header_writes / number of edits)
    "header_write",
    // one proxy_increment_metric (of tracebridge.phase.scratch, by 1)
    "counter_increment",
    // the request's counters as host calls, one each (the filter before the per-worker counts)
    "counters_direct",
    // the request's counters added to the worker's pending counts (the filter now)
    "counters_pending",
    // one set_property of the sampling reason (filter_state.sampling_reason)
    "set_property",
    // one WASI random_get of 20 bytes (a new trace's ids)
    "random_get",
    // 20 bytes from the filter's pool (one random_get per 256 bytes)
    "random_pooled",
    // the filter's whole request path: read, scan, translate, writes, counters
    "request",
    // the same, once: the request's real pass, every other request (the caches as Envoy's own
    // work since the previous request left them)
    "request_once",
];

struct Timer {
    /// Whether the next request's real pass is timed (every other request: a request whose
    /// phases were timed has warm caches, and its real pass sees headers already translated).
    once_next: bool,
    /// The last real pass timed, in nanoseconds.
    once: u64,
    gauges: Vec<Option<u32>>,
    samples: Vec<Vec<u64>>,
    /// A counter of its own for the increments timed (the filter's counters stay true).
    scratch: Option<u32>,
}

thread_local! {
    static TIMER: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

fn now_ns() -> u64 {
    proxy_wasm::hostcalls::get_current_time().map_or(0, unix_nanos)
}

fn time(mut run: impl FnMut()) -> u64 {
    let start = now_ns();
    for _ in 0..REPEAT {
        run();
    }
    now_ns().saturating_sub(start) / REPEAT
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

impl Timer {
    fn new() -> Timer {
        let gauges = PHASES
            .iter()
            .map(|phase| {
                let name = format!("tracebridge.phase.{phase}_ns");
                proxy_wasm::hostcalls::define_metric(MetricType::Gauge, &name).ok()
            })
            .collect();
        let scratch =
            proxy_wasm::hostcalls::define_metric(MetricType::Counter, "tracebridge.phase.scratch")
                .ok();
        Timer {
            once_next: true,
            once: 0,
            gauges,
            samples: vec![Vec::with_capacity(WINDOW); PHASES.len()],
            scratch,
        }
    }

    /// `results` in the order of [`PHASES`], each with the clock's cost in it; `edits`: how many
    /// header writes `header_writes` made.
    fn record(&mut self, mut results: [u64; PHASES.len()], edits: u64) {
        let clock = results.first().copied().unwrap_or(0);
        for ns in results.iter_mut().skip(1) {
            *ns = ns.saturating_sub(clock);
        }
        if let Some(last) = results.last_mut() {
            // One clock pair around one pass: its whole cost is the clock's.
            *last = self.once.saturating_sub(clock.saturating_mul(REPEAT));
        }
        if let Some(writes) = results.get(HEADER_WRITES).copied() {
            if let Some(one) = results.get_mut(HEADER_WRITES.saturating_add(1)) {
                *one = writes.checked_div(edits).unwrap_or(0);
            }
        }
        for (ns, samples) in results.iter().zip(&mut self.samples) {
            samples.push(*ns);
        }
        if self.samples.first().map_or(0, Vec::len) < WINDOW {
            return;
        }
        for (samples, gauge) in self.samples.iter_mut().zip(&self.gauges) {
            if let Some(id) = gauge {
                let _ = proxy_wasm::hostcalls::record_metric(*id, median(samples));
            }
            samples.clear();
        }
    }
}

/// Where `header_writes` is in [`PHASES`] (`header_write` follows it).
const HEADER_WRITES: usize = 4;

/// Handles the request: its real pass timed on every other request, the phases timed before
/// its real pass on the others. Returns what [`RequestFilter::translate_request`] returns.
pub(super) fn timed_request(filter: &mut RequestFilter, plugin: &Plugin) -> Option<TraceContext> {
    let once_next = TIMER.with(|timer| match timer.try_borrow_mut() {
        Ok(mut timer) => {
            let timer = timer.get_or_insert_with(Timer::new);
            let once = timer.once_next;
            timer.once_next = !once;
            once
        }
        Err(_) => false,
    });
    if !once_next {
        time_phases(filter, plugin);
        return filter.translate_request(plugin);
    }
    let start = now_ns();
    let sent = filter.translate_request(plugin);
    let once = now_ns().saturating_sub(start);
    TIMER.with(|timer| {
        if let Ok(mut timer) = timer.try_borrow_mut() {
            if let Some(timer) = timer.as_mut() {
                timer.once = once;
            }
        }
    });
    sent
}

/// Times every phase on this request, before its real pass.
fn time_phases(filter: &mut RequestFilter, plugin: &Plugin) {
    let map = request_header_map().unwrap_or_default();
    let headers = RequestHeaders::scan(SerializedPairs::new(&map), plugin.config.scan());
    let translate_once = || {
        let mut host = Host {
            random: &mut HostRandom,
            peer: &mut HostPeer,
            budget: &mut RequestBudget(&plugin.budget),
            clock: &mut HostClock::default(),
        };
        translate(&plugin.config, &headers, &mut host)
    };
    let Ok(translation) = translate_once() else {
        return;
    };
    let edits = u64::try_from(translation.edits.len()).unwrap_or(0);
    let metric = TIMER.with(|timer| match timer.try_borrow_mut() {
        Ok(mut timer) => timer.get_or_insert_with(Timer::new).scratch,
        Err(_) => None,
    });
    let scratch = Pending::default();
    // The counts of earlier requests go out now: the repeated runs' counts are discarded below.
    plugin.metrics.flush();
    let results = [
        time(|| {
            let _ = black_box(proxy_wasm::hostcalls::get_current_time());
        }),
        time(|| drop(black_box(request_header_map()))),
        time(|| {
            black_box(RequestHeaders::scan(
                SerializedPairs::new(&map),
                plugin.config.scan(),
            ));
        }),
        time(|| {
            let _ = black_box(translate_once());
        }),
        time(|| filter.apply(&translation.edits)),
        // header_write: from header_writes in `record`
        0,
        time(|| {
            if let Some(id) = metric {
                let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
            }
        }),
        time(|| {
            for _ in counters(&translation.report) {
                if let Some(id) = metric {
                    let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
                }
            }
        }),
        time(|| {
            for counter in counters(&translation.report) {
                scratch.add(counter);
            }
        }),
        time(|| {
            let _ = proxy_wasm::hostcalls::set_property(
                vec![REASON_PROPERTY],
                Some(translation.report.reason.name().as_bytes()),
            );
        }),
        time(|| {
            let _ = black_box(getrandom::fill(&mut [0u8; 20]));
        }),
        time(|| {
            black_box(HostRandom.fill(&mut [0u8; 20]));
        }),
        time(|| {
            black_box(filter.translate_request(plugin));
        }),
        // request_once: the previous request's real pass, in `record`
        0,
    ];
    // The repeated request paths counted REPEAT times; the real pass that follows counts once.
    plugin.metrics.pending.drain().for_each(drop);
    filter.span = None;
    filter.sent = None;
    TIMER.with(|timer| {
        if let Ok(mut timer) = timer.try_borrow_mut() {
            timer.get_or_insert_with(Timer::new).record(results, edits);
        }
    });
}
