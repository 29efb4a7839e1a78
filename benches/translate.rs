//! Native micro-benchmarks: tracebridge's extraction, injection and whole-request translation,
//! beside the same work done by the opentelemetry-rust propagators (`opentelemetry_sdk`
//! TraceContext, `opentelemetry-zipkin` B3, `opentelemetry-aws` X-Ray).
//!
//! ```sh
//! cargo bench --bench translate              # divan's tables, then the ratio summary
//! cargo bench --bench translate -- extract   # only benchmarks whose path contains "extract"
//! BENCH_SUMMARY_ROUNDS=51 cargo bench --bench translate
//! ```
//!
//! After divan's tables, a summary times each tracebridge/opentelemetry pair in interleaved
//! batches (A B A B ...) in the same process and prints the median ns per operation and the
//! ratio. Nothing here asserts a timing: the numbers are for people to read.
//!
//! Fair-comparison rules: both sides read the same header lines from a borrowed slice (the
//! opentelemetry side through an `Extractor` that searches that slice, without building a map),
//! and both write into a sink that keeps only the values (the opentelemetry `Injector` does not
//! copy the header names). The comparisons cover the four formats the three named crates
//! implement (W3C, B3 single, B3 multi, X-Ray); the tracebridge-only benchmarks cover every
//! format.
//!
//! `opentelemetry-zipkin` (the home of opentelemetry-rust's B3 propagator) is deprecated as an
//! exporter crate; its propagator still works and is what OpenTelemetry Rust users run today.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![allow(deprecated)]

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use opentelemetry::Context;
use opentelemetry_aws::trace::XrayPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_zipkin::{B3Encoding, Propagator as B3Propagator};
use std::hint;
use std::time::Instant;
use tracebridge::budget::Unlimited;
use tracebridge::config::Config;
use tracebridge::context::Extraction;
use tracebridge::formats::{tracecontext, Format};
use tracebridge::headers::RequestHeaders;
use tracebridge::translate::{translate, FixedClock, Host, Translation};

mod common;
use common::{Loopback, XorShift};

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

type Request = &'static [(&'static str, &'static str)];

/// Lines Envoy's header map holds on an ordinary request besides the trace headers: the filter
/// reads the whole map, so the benchmark scans them too.
const ORDINARY: Request = &[
    (":authority", "api.example.com"),
    (":path", "/v1/orders/12345?expand=items"),
    (":method", "GET"),
    (":scheme", "http"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5d3c2b1a-0f9e-4d8c-b7a6-123456789abc"),
];

/// Each format's case table: valid forms first, then the invalid ones the README's choices
/// table names. One entry is the trace header lines of one request.
const TRACECONTEXT_CASES: &[Request] = &[
    &[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )],
    &[
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ],
    &[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )],
    &[(
        "traceparent",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
    )],
    &[(
        "traceparent",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    )],
    &[(
        "traceparent",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    )],
    &[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
    )],
    &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736")],
];

const B3_CASES: &[Request] = &[
    &[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )],
    &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
    &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
    &[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
    &[("b3", "1")],
    &[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-true",
    )],
    &[("b3", "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1")],
];

const B3MULTI_CASES: &[Request] = &[
    &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ],
    &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "0"),
    ],
    &[
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-flags", "1"),
    ],
    &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ],
    &[("x-b3-sampled", "1")],
    &[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "True"),
    ],
    &[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")],
    &[
        ("x-b3-traceid", "80F198EE56343BA864FE8B2A57D3EFF7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ],
];

const XRAY_CASES: &[Request] = &[
    &[(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    )],
    &[(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?",
    )],
    &[(
        "x-amzn-trace-id",
        "Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1|68fd508a:5",
    )],
    &[(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
    )],
    &[(
        "x-amzn-trace-id",
        "Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Sampled=0",
    )],
    &[(
        "x-amzn-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-5759e988-bd862e3fe1be46a994272793",
    )],
    &[(
        "x-amzn-trace-id",
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
    )],
    &[("x-amzn-trace-id", "Parent=53995c3f42cd8ad8;Sampled=1")],
];

const CLOUDTRACE_CASES: &[Request] = &[
    &[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/1;o=1",
    )],
    &[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/18446744073709551615;o=0",
    )],
    &[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/123456789",
    )],
    &[("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000")],
    &[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/1;o=3",
    )],
    &[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/18446744073709551616;o=1",
    )],
    &[(
        "x-cloud-trace-context",
        "105445AA7843BC8BF206B12000100000/1;o=1",
    )],
    &[("x-cloud-trace-context", "not-a-trace/1;o=1")],
];

const JAEGER_CASES: &[Request] = &[
    &[(
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
    )],
    &[("uber-trace-id", "a3ce929d0e0e4736:00f067aa0ba902b7:0:0")],
    &[(
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:05e3ac9a4f6e3b90:3",
    )],
    &[(
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7",
    )],
    &[("uber-trace-id", "not:a:jaeger:header")],
];

const DATADOG_CASES: &[Request] = &[
    &[
        ("x-datadog-trace-id", "11803532876627986230"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "1"),
    ],
    &[
        ("x-datadog-trace-id", "11803532876627986230"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4"),
    ],
    &[
        ("x-datadog-trace-id", "11803532876627986230"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "-1"),
    ],
    &[("x-datadog-trace-id", "not-a-number")],
    &[("x-datadog-parent-id", "67667974448284343")],
];

const GRPCTRACEBIN_CASES: &[Request] = &[
    &[("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=")],
    &[("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgA=")],
    &[("grpc-trace-bin", "AQBL+S81d7NNpqPOkp0ODkc2")],
    &[("grpc-trace-bin", "not base64!")],
];

/// Representative whole requests: the context in each format, none, and conflicting formats.
const REQUESTS: &[(&str, Request)] = &[
    (
        "w3c",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ],
    ),
    (
        "b3",
        &[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )],
    ),
    (
        "b3multi",
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
        ],
    ),
    (
        "xray",
        &[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )],
    ),
    ("none", &[]),
    (
        "mixed",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            ),
        ],
    ),
];

/// The request the Envoy load benchmark sends (W3C in, every other format out).
const CLOUDTRACE_REQUEST: Request = &[(
    "x-cloud-trace-context",
    "105445aa7843bc8bf206b12000100000/1;o=1",
)];

/// Trace lines followed by the ordinary ones, as Envoy's map would hold them.
fn full_request(trace: Request) -> Vec<(&'static str, &'static str)> {
    let mut pairs = ORDINARY.to_vec();
    pairs.extend_from_slice(trace);
    pairs
}

fn view<'a>(pairs: &'a [(&'a str, &'a str)]) -> RequestHeaders<'a> {
    RequestHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
}

const DEFAULT_CONFIG: &str = include_str!("envoy/tracebridge-default.json");
/// Every format read and written, sampling rules, a trust policy, force tokens and a rate cap:
/// the same file the Envoy load benchmark gives the filter.
const WIDEST_CONFIG: &str = include_str!("envoy/tracebridge-widest.json");
/// The formats opentelemetry-rust implements, read and written by both sides.
const COMPARE_CONFIG: &str = r#"{"extract": ["tracecontext", "b3", "b3multi", "xray"],
    "inject": ["tracecontext", "b3", "b3multi", "xray"]}"#;

fn config(json: &str) -> Config {
    Config::from_json(json.as_bytes()).expect("benchmark configuration is valid")
}

const NOW: u64 = 0x6b06_3027;

fn run_translate(config: &Config, pairs: &[(&str, &str)], random: &mut XorShift) -> Translation {
    let headers = view(pairs);
    let mut host = Host {
        random,
        peer: &mut Loopback,
        budget: &mut Unlimited,
        clock: &mut FixedClock(NOW),
    };
    translate(config, &headers, &mut host).expect("random source never fails")
}

/// Writing only: a configuration that reads nothing, so every request starts a new trace (two
/// random ids from the cheap generator and a sampling decision) and every listed format is
/// written into a request without trace headers.
fn inject_config(formats: &[Format]) -> Config {
    let names: Vec<String> = formats
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    config(&format!(
        r#"{{"extract": [], "inject": [{}]}}"#,
        names.join(", ")
    ))
}

const COMPARED_FORMATS: [Format; 4] = [
    Format::TraceContext,
    Format::B3,
    Format::B3Multi,
    Format::XRay,
];

// ---------------------------------------------------------------------------------------------
// The opentelemetry-rust side
// ---------------------------------------------------------------------------------------------

/// Reads the same borrowed lines tracebridge reads; `get` returns the first line of a name.
struct SliceExtractor<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for SliceExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Keeps the values only (names are static in every propagator), like tracebridge's edits.
#[derive(Default)]
struct ValueSink(Vec<String>);

impl Injector for ValueSink {
    fn set(&mut self, _key: &str, value: String) {
        self.0.push(value);
    }
}

struct Otel {
    tracecontext: TraceContextPropagator,
    b3: B3Propagator,
    xray: XrayPropagator,
}

impl Otel {
    fn new() -> Self {
        Otel {
            tracecontext: TraceContextPropagator::new(),
            // Extracts `b3` first, then `x-b3-*`; injects both.
            b3: B3Propagator::with_encoding(B3Encoding::SingleAndMultiHeader),
            xray: XrayPropagator::default(),
        }
    }

    /// The first propagator (tracecontext, b3 single or multi, xray) that finds a valid remote
    /// context, as a composite in precedence order would.
    fn extract(&self, pairs: &[(&str, &str)]) -> Context {
        let extractor = SliceExtractor(pairs);
        let propagators: [&dyn TextMapPropagator; 3] = [&self.tracecontext, &self.b3, &self.xray];
        for propagator in propagators {
            let cx = propagator.extract(&extractor);
            if cx.span().span_context().is_valid() {
                return cx;
            }
        }
        Context::new()
    }

    fn inject_all(&self, cx: &Context) -> ValueSink {
        let mut sink = ValueSink::default();
        self.tracecontext.inject_context(cx, &mut sink);
        self.b3.inject_context(cx, &mut sink);
        self.xray.inject_context(cx, &mut sink);
        sink
    }

    fn translate(&self, pairs: &[(&str, &str)]) -> ValueSink {
        self.inject_all(&self.extract(pairs))
    }
}

fn otel_context() -> Context {
    let span = SpanContext::new(
        OtelTraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
        OtelSpanId::from(0x00f0_67aa_0ba9_02b7_u64),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    Context::new().with_remote_span_context(span)
}

// ---------------------------------------------------------------------------------------------
// divan benchmarks
// ---------------------------------------------------------------------------------------------

fn cases(table: &[Request]) -> Vec<Vec<(&'static str, &'static str)>> {
    table.iter().map(|trace| full_request(trace)).collect()
}

fn tracebridge_extract_table(format: Format, table: &[Vec<(&str, &str)>]) -> usize {
    let mut valid = 0;
    for pairs in table {
        let headers = view(black_box(pairs));
        if let Extraction::Context(_) = black_box(format.extract(&headers)) {
            valid += 1;
        }
    }
    valid
}

fn bench_tracebridge_extract(bencher: Bencher, format: Format, table: &[Request]) {
    let table = cases(table);
    bencher
        .counter(ItemsCount::new(table.len()))
        .bench_local(|| tracebridge_extract_table(format, &table));
}

fn otel_extract_table(propagator: &dyn TextMapPropagator, table: &[Vec<(&str, &str)>]) -> usize {
    let mut valid = 0;
    for pairs in table {
        let cx = propagator.extract(&SliceExtractor(black_box(pairs)));
        if cx.span().span_context().is_valid() {
            valid += 1;
        }
    }
    valid
}

fn bench_otel_extract(bencher: Bencher, propagator: &dyn TextMapPropagator, table: &[Request]) {
    let table = cases(table);
    bencher
        .counter(ItemsCount::new(table.len()))
        .bench_local(|| otel_extract_table(propagator, &table));
}

/// Extraction over each format's case table (per item: one request of that table).
mod extract {
    use super::*;

    #[divan::bench]
    fn tracecontext(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::TraceContext, TRACECONTEXT_CASES);
    }

    #[divan::bench]
    fn b3(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::B3, B3_CASES);
    }

    #[divan::bench]
    fn b3multi(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::B3Multi, B3MULTI_CASES);
    }

    #[divan::bench]
    fn xray(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::XRay, XRAY_CASES);
    }

    #[divan::bench]
    fn cloudtrace(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::CloudTrace, CLOUDTRACE_CASES);
    }

    #[divan::bench]
    fn jaeger(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::Jaeger, JAEGER_CASES);
    }

    #[divan::bench]
    fn datadog(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::Datadog, DATADOG_CASES);
    }

    #[divan::bench]
    fn grpctracebin(bencher: Bencher) {
        bench_tracebridge_extract(bencher, Format::GrpcTraceBin, GRPCTRACEBIN_CASES);
    }

    /// `tracestate` validation, which runs when `traceparent` is valid.
    #[divan::bench]
    fn tracestate(bencher: Bencher) {
        let pairs = full_request(TRACECONTEXT_CASES[1]);
        bencher.bench_local(|| {
            let headers = view(black_box(&pairs));
            tracecontext::tracestate(&headers)
        });
    }
}

/// The same case tables through the opentelemetry-rust propagators.
mod extract_otel {
    use super::*;

    #[divan::bench]
    fn tracecontext(bencher: Bencher) {
        bench_otel_extract(bencher, &TraceContextPropagator::new(), TRACECONTEXT_CASES);
    }

    #[divan::bench]
    fn b3(bencher: Bencher) {
        let b3 = B3Propagator::with_encoding(B3Encoding::SingleAndMultiHeader);
        bench_otel_extract(bencher, &b3, B3_CASES);
    }

    #[divan::bench]
    fn b3multi(bencher: Bencher) {
        let b3 = B3Propagator::with_encoding(B3Encoding::SingleAndMultiHeader);
        bench_otel_extract(bencher, &b3, B3MULTI_CASES);
    }

    #[divan::bench]
    fn xray(bencher: Bencher) {
        bench_otel_extract(bencher, &XrayPropagator::default(), XRAY_CASES);
    }
}

/// Writing one context into every format of a request that has none.
mod inject {
    use super::*;

    /// Every format tracebridge knows.
    #[divan::bench]
    fn all_formats(bencher: Bencher) {
        let config = inject_config(&Format::ALL);
        let pairs = full_request(&[]);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher.bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }

    #[divan::bench]
    fn four_formats(bencher: Bencher) {
        let config = inject_config(&COMPARED_FORMATS);
        let pairs = full_request(&[]);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher.bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }

    #[divan::bench]
    fn four_formats_otel(bencher: Bencher) {
        let otel = Otel::new();
        let cx = otel_context();
        bencher.bench_local(|| otel.inject_all(black_box(&cx)));
    }
}

/// A whole request: read the map, choose, decide, compute every edit.
mod request {
    use super::*;

    const NAMES: &[&str] = &["w3c", "b3", "b3multi", "xray", "none", "mixed"];

    fn request(name: &str) -> Vec<(&'static str, &'static str)> {
        let trace = REQUESTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(CLOUDTRACE_REQUEST, |(_, r)| r);
        full_request(trace)
    }

    #[divan::bench(args = NAMES)]
    fn default_config(bencher: Bencher, name: &str) {
        let config = config(DEFAULT_CONFIG);
        let pairs = request(name);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher.bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }

    #[divan::bench(args = ["w3c", "b3", "b3multi", "xray", "cloudtrace", "none", "mixed"])]
    fn widest_config(bencher: Bencher, name: &str) {
        let config = config(WIDEST_CONFIG);
        let pairs = request(name);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher.bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }

    /// The four formats opentelemetry-rust implements, read and written.
    #[divan::bench(args = NAMES)]
    fn four_formats(bencher: Bencher, name: &str) {
        let config = config(COMPARE_CONFIG);
        let pairs = request(name);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher.bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }

    /// Extract in precedence order, then inject the four formats. With no context
    /// opentelemetry's propagators inject nothing (a tracer would start a span first), so
    /// "none" is cheaper for them than the work tracebridge does.
    #[divan::bench(args = NAMES)]
    fn four_formats_otel(bencher: Bencher, name: &str) {
        let otel = Otel::new();
        let pairs = request(name);
        bencher.bench_local(|| otel.translate(black_box(&pairs)));
    }
}

/// Baggage at growing sizes (issue 10, defect 4): the cost must grow linearly with the input
/// and stop growing at W3C's limits (180 entries, 8,192 bytes), so a hostile 16 KB header costs
/// about what a full valid one does.
mod baggage {
    use super::*;
    use tracebridge::baggage::{self, BaggageReport};

    const BAGGAGE_CONFIG: &str =
        r#"{"extract": ["tracecontext", "baggage"], "inject": ["tracecontext", "baggage"]}"#;

    /// One `baggage` header of `keys` distinct keys (`<hex i>=1`): 2,500 keys are about 15 KB,
    /// under the 16 KiB a header may have before it is refused unread.
    fn w3c_header(keys: usize) -> String {
        (0..keys)
            .map(|i| format!("{i:x}=1"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn w3c_pairs(header: &str) -> Vec<(&str, &str)> {
        let mut pairs: Vec<(&str, &str)> = ORDINARY.to_vec();
        pairs.push(("baggage", header));
        pairs
    }

    /// `count` `uberctx-<i>` headers with 200-byte values.
    fn prefixed(count: usize) -> Vec<(String, String)> {
        (0..count)
            .map(|i| (format!("uberctx-k{i}"), "v".repeat(200)))
            .collect()
    }

    #[divan::bench(args = [10, 100, 1000, 2500])]
    fn extract_w3c(bencher: Bencher, keys: usize) {
        let header = w3c_header(keys);
        let pairs = w3c_pairs(&header);
        bencher.counter(ItemsCount::new(keys)).bench_local(|| {
            let headers = view(black_box(&pairs));
            let mut report = BaggageReport::default();
            baggage::extract(&headers, &mut report)
        });
    }

    #[divan::bench(args = [10, 100, 256])]
    fn extract_uberctx(bencher: Bencher, count: usize) {
        let owned = prefixed(count);
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        bencher.counter(ItemsCount::new(count)).bench_local(|| {
            let headers = view(black_box(&pairs));
            let mut report = BaggageReport::default();
            baggage::extract(&headers, &mut report)
        });
    }

    /// The whole request, every spelling read and written.
    #[divan::bench(args = [10, 100, 1000, 2500])]
    fn translate_w3c(bencher: Bencher, keys: usize) {
        let config = config(BAGGAGE_CONFIG);
        let header = w3c_header(keys);
        let pairs = w3c_pairs(&header);
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        bencher
            .counter(ItemsCount::new(keys))
            .bench_local(|| run_translate(&config, black_box(&pairs), &mut random));
    }
}

// ---------------------------------------------------------------------------------------------
// Interleaved summary with ratios
// ---------------------------------------------------------------------------------------------

/// Median ns per call of each closure, timed in alternating batches so that a noisy neighbour
/// slows both sides alike.
fn interleaved(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    // Size a batch to roughly 2 ms of the slower side.
    let mut batch = 1usize;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            a();
            b();
        }
        if start.elapsed().as_micros() > 2_000 || batch >= 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side goes first.
        if round % 2 == 0 {
            ta.push(time(&mut a));
            tb.push(time(&mut b));
        } else {
            tb.push(time(&mut b));
            ta.push(time(&mut a));
        }
    }
    (median(&mut ta), median(&mut tb))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn summary(rounds: usize) {
    let otel = Otel::new();
    println!();
    println!("Summary: median ns per operation over {rounds} interleaved batches (tracebridge vs opentelemetry-rust)");
    println!(
        "{:<44} {:>12} {:>12} {:>9}",
        "operation", "tracebridge", "otel", "otel/tb"
    );
    let row = |name: &str, (tb, ot): (f64, f64)| {
        println!("{name:<44} {tb:>12.1} {ot:>12.1} {:>8.1}x", ot / tb);
    };

    let tables: [(&str, Format, &[Request], &dyn TextMapPropagator); 4] = [
        (
            "tracecontext",
            Format::TraceContext,
            TRACECONTEXT_CASES,
            &otel.tracecontext,
        ),
        ("b3", Format::B3, B3_CASES, &otel.b3),
        ("b3multi", Format::B3Multi, B3MULTI_CASES, &otel.b3),
        ("xray", Format::XRay, XRAY_CASES, &otel.xray),
    ];
    for (name, format, table, propagator) in tables {
        let table = cases(table);
        let per_case = table.len() as f64;
        let (tb, ot) = interleaved(
            rounds,
            || {
                hint::black_box(tracebridge_extract_table(format, hint::black_box(&table)));
            },
            || {
                hint::black_box(otel_extract_table(propagator, hint::black_box(&table)));
            },
        );
        row(
            &format!("extract {name} (per case, {} cases)", table.len()),
            (tb / per_case, ot / per_case),
        );
    }

    let inject = inject_config(&COMPARED_FORMATS);
    let empty = full_request(&[]);
    let cx = otel_context();
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    row(
        "inject tracecontext+b3+b3multi+xray",
        interleaved(
            rounds,
            || {
                hint::black_box(run_translate(&inject, hint::black_box(&empty), &mut random));
            },
            || {
                hint::black_box(otel.inject_all(hint::black_box(&cx)));
            },
        ),
    );

    let compare = config(COMPARE_CONFIG);
    for (name, trace) in REQUESTS {
        let pairs = full_request(trace);
        row(
            &format!("request {name}: extract + inject 4 formats"),
            interleaved(
                rounds,
                || {
                    hint::black_box(run_translate(
                        &compare,
                        hint::black_box(&pairs),
                        &mut random,
                    ));
                },
                || {
                    hint::black_box(otel.translate(hint::black_box(&pairs)));
                },
            ),
        );
    }

    println!();
    println!("tracebridge alone: median ns per whole request, widest and default configuration");
    let widest = config(WIDEST_CONFIG);
    let default = config(DEFAULT_CONFIG);
    let mut all: Vec<(&str, Request)> = REQUESTS.to_vec();
    all.push(("cloudtrace", CLOUDTRACE_REQUEST));
    let mut random2 = XorShift(0x2545_f491_4f6c_dd1d);
    for (name, trace) in all {
        let pairs = full_request(trace);
        let (wide, def) = interleaved(
            rounds,
            || {
                hint::black_box(run_translate(&widest, hint::black_box(&pairs), &mut random));
            },
            || {
                hint::black_box(run_translate(
                    &default,
                    hint::black_box(&pairs),
                    &mut random2,
                ));
            },
        );
        println!(
            "  request {name:<12} widest config {wide:>8.1} ns   default config {def:>8.1} ns"
        );
    }
}

/// Same trace id chosen by both sides on every comparison request: they do the same work.
fn check_same_work() {
    let otel = Otel::new();
    let compare = config(COMPARE_CONFIG);
    for (name, trace) in REQUESTS.iter().filter(|(name, _)| *name != "none") {
        let pairs = full_request(trace);
        let ours = run_translate(&compare, &pairs, &mut XorShift(1)).context;
        let theirs = otel.extract(&pairs).span().span_context().trace_id();
        if u128::from_be_bytes(theirs.to_bytes()) != ours.trace_id.value() {
            println!(
                "warning: request {name}: tracebridge and opentelemetry chose different trace ids"
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Without --bench (`cargo test --benches`, clippy's test runs) divan runs each benchmark
    // once as a test; --list only lists. Neither wants the timed summary.
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list");
    check_same_work();
    divan::main();
    if !quick {
        let rounds = std::env::var("BENCH_SUMMARY_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(21);
        if rounds > 0 {
            summary(rounds);
        }
    }
}
