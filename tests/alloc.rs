//! Heap allocations on the request path, counted by a global allocator.
//!
//! Extraction (building the header view and reading every format) must not allocate at all: it
//! runs on every request, and in the proxy every allocation is a call into the module's
//! allocator. Injection allocates the values it writes; its count is asserted against a small
//! explicit bound (see `injection_bound`).
//!
//! The counter is per thread, so the test harness's other threads do not disturb it. Run with
//! `cargo test --test alloc -- --nocapture` to see the counts.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tracebridge::budget::Unlimited;
use tracebridge::config::Config;
use tracebridge::formats::{tracecontext, Format};
use tracebridge::headers::{HeaderEdit, HeaderName, RequestHeaders, MAX_TRACESTATE_LINES};
use tracebridge::metrics::{counters, Pending};
use tracebridge::translate::{translate, FixedClock, Host, RandomSource, Translation};
use tracebridge::trust::Peer;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    // `try_with`: the allocator may run while the thread-local is being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the number of allocations (alloc, alloc_zeroed and
/// realloc calls) it made on this thread. Dropping the result is not counted.
fn counting<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    let after = ALLOCATIONS.with(Cell::get);
    (result, after - before)
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the other tests against a counter that silently counts nothing.
    let (v, n) = counting(|| std::hint::black_box(vec![1u8; 16]));
    assert_eq!(v.len(), 16);
    assert_eq!(n, 1);
    let (s, n) = counting(|| {
        let mut s = String::with_capacity(1);
        s.push_str("grows past its capacity");
        s
    });
    assert!(!s.is_empty());
    assert_eq!(n, 2);
}

/// Trace header lines of one request, as bytes (values need not be UTF-8).
type Lines = Vec<(&'static str, Vec<u8>)>;

fn lines(pairs: &[(&'static str, &str)]) -> Lines {
    pairs
        .iter()
        .map(|(k, v)| (*k, v.as_bytes().to_vec()))
        .collect()
}

/// Rules, a trust policy, force tokens and a rate cap on top of every format: the benchmarks'
/// widest configuration.
const WIDEST_FILE: &str = include_str!("../benches/envoy/tracebridge-widest.json");

/// The other lines of an ordinary request, which the filter scans too.
const ORDINARY: &[(&str, &str)] = &[
    (":authority", "api.example.com"),
    (":path", "/v1/orders/12345"),
    (":method", "GET"),
    ("user-agent", "curl/8.5.0"),
    ("accept", "*/*"),
    ("x-request-id", "5d3c2b1a-0f9e-4d8c-b7a6-123456789abc"),
];

/// Valid, invalid and hostile inputs for every format.
fn extraction_inputs() -> Vec<(String, Lines)> {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const B3M: &[(&str, &str)] = &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
    ];
    let mut inputs: Vec<(String, Lines)> = vec![
        ("no trace headers".into(), vec![]),
        ("traceparent".into(), lines(&[("traceparent", TP)])),
        (
            "traceparent + tracestate".into(),
            lines(&[
                ("traceparent", TP),
                ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            ]),
        ),
        (
            "tracestate on two lines".into(),
            lines(&[
                ("traceparent", TP),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ]),
        ),
        (
            "tracestate with a duplicate key".into(),
            lines(&[("traceparent", TP), ("tracestate", "a=1,b=2,a=3")]),
        ),
        (
            "traceparent, future version".into(),
            lines(&[(
                "traceparent",
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
            )]),
        ),
        (
            "traceparent twice".into(),
            lines(&[("traceparent", TP), ("traceparent", TP)]),
        ),
        (
            "traceparent upper case".into(),
            lines(&[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )]),
        ),
        (
            "b3 single".into(),
            lines(&[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            )]),
        ),
        ("b3 sampling only".into(), lines(&[("b3", "d")])),
        (
            "b3 single invalid".into(),
            lines(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-true")]),
        ),
        ("b3 multi".into(), lines(B3M)),
        (
            "b3 multi invalid sampled".into(),
            lines(&[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "yes"),
            ]),
        ),
        (
            "x-ray with extra fields".into(),
            lines(&[(
                "x-amzn-trace-id",
                "Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?;Lineage=a87bd80c:1|68fd508a:5",
            )]),
        ),
        (
            "x-ray root only, upper case".into(),
            lines(&[("x-amzn-trace-id", "Root=1-5759E988-BD862E3FE1BE46A994272793")]),
        ),
        (
            "x-ray duplicate key".into(),
            lines(&[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272793",
            )]),
        ),
        (
            "cloud trace".into(),
            lines(&[(
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/18446744073709551615;o=1",
            )]),
        ),
        (
            "cloud trace overflow".into(),
            lines(&[(
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/18446744073709551616;o=1",
            )]),
        ),
        (
            "every format at once".into(),
            lines(&[
                ("traceparent", TP),
                ("tracestate", "rojo=00f067aa0ba902b7"),
                ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                (
                    "x-amzn-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
                ),
                (
                    "x-cloud-trace-context",
                    "105445aa7843bc8bf206b12000100000/1;o=1",
                ),
            ]),
        ),
    ];
    inputs.push((
        "jaeger".into(),
        lines(&[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )]),
    ));
    inputs.push((
        "datadog with tags".into(),
        lines(&[
            ("x-datadog-trace-id", "11803532876627986230"),
            ("x-datadog-parent-id", "67667974448284343"),
            ("x-datadog-sampling-priority", "2"),
            ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4"),
        ]),
    ));
    inputs.push((
        "grpc-trace-bin".into(),
        lines(&[("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=")]),
    ));
    // Hostile: non-UTF-8 bytes, oversized values, more tracestate lines than are valid.
    let mut non_utf8 = TP.as_bytes().to_vec();
    non_utf8[10] = 0xff;
    inputs.push((
        "non-UTF-8 values".into(),
        vec![
            ("traceparent", non_utf8.clone()),
            ("b3", non_utf8.clone()),
            ("x-amzn-trace-id", non_utf8.clone()),
            ("x-cloud-trace-context", non_utf8),
        ],
    ));
    inputs.push((
        "oversized values".into(),
        vec![
            ("traceparent", vec![b'0'; 100_000]),
            ("tracestate", vec![b'a'; 100_000]),
            ("b3", vec![b'1'; 100_000]),
            ("x-amzn-trace-id", vec![b';'; 100_000]),
            ("x-cloud-trace-context", vec![b'/'; 100_000]),
        ],
    ));
    // The force header of the widest configuration (key "bench" in its file).
    let token = tracebridge::force::sign("bench", b"0123456789abcdef0123", 4_102_444_800);
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    inputs.push((
        "force token".into(),
        vec![
            ("traceparent", TP.as_bytes().to_vec()),
            ("x-force-trace", token.into_bytes()),
        ],
    ));
    inputs.push((
        "force token, forged".into(),
        vec![
            ("traceparent", TP.as_bytes().to_vec()),
            ("x-force-trace", forged),
        ],
    ));
    let mut many = lines(&[("traceparent", TP)]);
    many.extend(
        (0..MAX_TRACESTATE_LINES + 5).map(|i| ("tracestate", format!("k{i}=v").into_bytes())),
    );
    inputs.push(("too many tracestate lines".into(), many));
    inputs
}

fn with_ordinary(trace: &Lines) -> Vec<(&'static str, &[u8])> {
    ORDINARY
        .iter()
        .map(|(k, v)| (*k, v.as_bytes()))
        .chain(trace.iter().map(|(k, v)| (*k, v.as_slice())))
        .collect()
}

#[test]
fn extraction_allocates_nothing() {
    let widest = Config::from_json(WIDEST_FILE.as_bytes()).unwrap();
    assert!(!widest.custom_headers.is_empty());
    for (name, trace) in extraction_inputs() {
        let pairs = with_ordinary(&trace);
        let (found, allocations) = counting(|| {
            let headers = RequestHeaders::scan(pairs.iter().copied(), widest.scan());
            let mut found = 0;
            for format in Format::ALL {
                if format.extract(&headers).context().is_some() {
                    found += 1;
                }
            }
            // `tracestate` is read when `traceparent` is valid.
            let _ = std::hint::black_box(tracecontext::tracestate(&headers));
            found
        });
        println!("extract {name:<36} formats with a context: {found}  allocations: {allocations}");
        assert_eq!(allocations, 0, "extraction allocated on {name:?}");
    }
}

/// Deterministic "random" bytes: the first fill is all 0xab, then 0xac, ...
struct Counter(u8);

impl RandomSource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        buf.fill(self.0);
        self.0 = self.0.wrapping_add(1);
        true
    }
}

/// A caller on the loopback address without a principal.
struct Loopback;

impl Peer for Loopback {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        Some([127, 0, 0, 1].into())
    }

    fn principal(&mut self) -> Option<String> {
        None
    }
}

/// `translate` with a fixed clock, no rate cap and a loopback caller, counting allocations.
fn counted_translate(
    config: &Config,
    headers: &RequestHeaders,
    random: &mut dyn RandomSource,
) -> (Translation, usize) {
    let mut peer = Loopback;
    let mut budget = Unlimited;
    let mut host = Host {
        random,
        peer: &mut peer,
        budget: &mut budget,
        clock: &mut FixedClock(0x6b06_3027),
    };
    let (translation, allocations) = counting(|| translate(config, headers, &mut host));
    (
        translation.expect("the counter never runs dry"),
        allocations,
    )
}

/// The allocations `translate` may make for a result with these edits:
/// - one per `Set` edit: the new header value, written into a string sized for it;
/// - for an X-Ray `Set`, one more for the temporary hex string its encoder builds, and one per
///   doubling of its 80-byte buffer when kept `Self`/`Lineage`/custom fields make it longer;
/// - for a `tracestate` `Set`, one more: the translator builds the list once, and W3C's inject
///   copies it into the edit;
/// - one per `RemoveCustom` edit (the force header): the configured name is copied into it;
/// - for the list of edits, its first allocation (room for four) and one per doubling beyond.
///   `Remove` edits need no value.
///
/// So the five classic formats on a request without trace headers, which set `traceparent`,
/// `tracestate` (the `ot` threshold), `b3`, three `x-b3-*`, `x-amzn-trace-id` and
/// `x-cloud-trace-context`, may make 8 + 1 + 2 = 11.
fn injection_bound(edits: &[HeaderEdit]) -> usize {
    let sets = edits
        .iter()
        .filter(|e| matches!(e, HeaderEdit::Set(..) | HeaderEdit::RemoveCustom(..)))
        .count();
    let xray: usize = edits
        .iter()
        .map(|e| match e {
            HeaderEdit::Set(HeaderName::AmznTraceId, value) => 1 + doublings(80, value.len()),
            HeaderEdit::Set(HeaderName::Tracestate, _) => 1,
            _ => 0,
        })
        .sum();
    let list = match edits.len() {
        0 => 0,
        n => 1 + doublings(4, n),
    };
    sets + xray + list
}

/// How often a buffer of `capacity` bytes doubles to hold `len` bytes.
fn doublings(mut capacity: usize, len: usize) -> usize {
    let mut n = 0;
    while capacity < len {
        capacity *= 2;
        n += 1;
    }
    n
}

/// No request, whatever it carries, may cost more allocations than this. The widest
/// configuration (all eight formats and baggage) on a request without trace headers sets 13
/// headers: 13 values + the X-Ray temporary + 3 for the list of edits (4, 8, 16) = 17; kept
/// X-Ray fields can grow that header's buffer once more. A new format or header written per
/// request has to raise this number deliberately.
const MAX_ALLOCATIONS_PER_REQUEST: usize = 18;

const ALL_FORMATS: &str = r#"{"extract": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"],
    "inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"]}"#;

#[test]
fn injection_allocations_are_bounded() {
    let configs = [
        ("default", "{}"),
        ("all-formats", ALL_FORMATS),
        (
            "widest",
            include_str!("../benches/envoy/tracebridge-widest.json"),
        ),
    ];
    let mut worst = 0;
    for (config_name, json) in configs {
        let config = Config::from_json(json.as_bytes()).unwrap();
        for (name, trace) in extraction_inputs() {
            let pairs = with_ordinary(&trace);
            // As the filter builds it: with the header names rules and `force` look at.
            let headers = RequestHeaders::scan(pairs.iter().copied(), config.scan());
            let (translation, allocations) =
                counted_translate(&config, &headers, &mut Counter(0xab));
            let edits = translation.edits;
            let bound = injection_bound(&edits);
            println!(
                "translate {config_name:<7} {name:<36} edits: {:>2}  allocations: {allocations:>2}  bound: {bound:>2}",
                edits.len()
            );
            assert!(
                allocations <= bound,
                "{config_name} config, {name:?}: {allocations} allocations for {} edits (bound {bound}): {edits:?}",
                edits.len()
            );
            worst = worst.max(allocations);
        }
    }
    assert!(
        worst <= MAX_ALLOCATIONS_PER_REQUEST,
        "a request cost {worst} allocations"
    );
}

/// A request whose headers already carry the chosen context in every injected format needs no
/// edit, so it must cost no allocation at all.
#[test]
fn an_agreeing_request_allocates_nothing() {
    let trace = lines(&[
        (
            "traceparent",
            "00-105445aa7843bc8bf206b12000100000-0000000000000001-01",
        ),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("x-b3-traceid", "105445aa7843bc8bf206b12000100000"),
        ("x-b3-spanid", "0000000000000001"),
        ("x-b3-sampled", "1"),
        (
            "x-amzn-trace-id",
            "Root=1-105445aa-7843bc8bf206b12000100000;Parent=0000000000000001;Sampled=1",
        ),
        (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        ),
    ]);
    let pairs = with_ordinary(&trace);
    let config = Config::default();
    let headers = RequestHeaders::from_pairs(pairs.iter().copied());
    let (translation, allocations) = counted_translate(&config, &headers, &mut Counter(1));
    assert_eq!(translation.edits, vec![], "the headers already agree");
    assert_eq!(allocations, 0);
}

/// `spans` adds nothing to a request it does not record: with `spans` configured, every
/// unsampled request makes the same edits with the same number of allocations as without it.
#[test]
fn spans_cost_nothing_on_unsampled_requests() {
    let without = Config::from_json(br#"{"sampling": {"probability": 0}}"#).unwrap();
    let with = Config::from_json(
        br#"{"sampling": {"probability": 0}, "spans": {"cluster": "otel-collector"}}"#,
    )
    .unwrap();
    let mut unsampled = 0;
    for (name, trace) in extraction_inputs() {
        let pairs = with_ordinary(&trace);
        let headers = RequestHeaders::scan(pairs.iter().copied(), with.scan());
        let (plain, plain_allocations) = counted_translate(&without, &headers, &mut Counter(0xab));
        let (spanned, spanned_allocations) = counted_translate(&with, &headers, &mut Counter(0xab));
        if plain.context.decision.is_sampled() {
            // A sampled caller: this request is recorded (tests/spans.rs).
            assert!(spanned.own_span.is_some(), "{name}");
            continue;
        }
        unsampled += 1;
        assert_eq!(spanned.own_span, None, "{name}");
        assert_eq!(spanned.edits, plain.edits, "{name}");
        assert_eq!(spanned_allocations, plain_allocations, "{name}");
    }
    assert!(unsampled >= 10, "only {unsampled} unsampled inputs");
}

/// Counting a request allocates nothing: the counters of its report are added to the worker's
/// pending counts in place (the filter hands them to Envoy on its tick). And the sections that
/// only change what happens outside the request path (`metrics`, `filter_state`) change nothing
/// in it: the same edits with the same allocations as the defaults.
#[test]
fn counting_a_request_allocates_nothing() {
    let trace = lines(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )]);
    let pairs = with_ordinary(&trace);
    let headers = RequestHeaders::from_pairs(pairs.iter().copied());
    let defaults = Config::default();
    let (translation, allocations) = counted_translate(&defaults, &headers, &mut Counter(1));
    let pending = Pending::default();
    let ((), counting_allocations) = counting(|| {
        for counter in counters(&translation.report) {
            pending.add(counter);
        }
    });
    assert_eq!(counting_allocations, 0);
    assert_eq!(
        pending.drain().map(|(_, n)| n).sum::<u64>(),
        2,
        "extracted and reason"
    );
    let configured = Config::from_json(
        br#"{"metrics": {"flush_interval_ms": 20}, "filter_state": {"sampling_reason": true}}"#,
    )
    .unwrap();
    let (same, same_allocations) = counted_translate(&configured, &headers, &mut Counter(1));
    assert_eq!(same.edits, translation.edits);
    assert_eq!(same_allocations, allocations);
}
