//! The native request path, for instruction counts: builds the header view and translates one
//! request, `ITERATIONS` times, for one configuration and one request. Wall-clock time is noise on
//! a shared machine; the instructions valgrind counts are not.
//!
//! ```sh
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hot_path widest w3c 1000
//! ```
//!
//! The instructions of one request are the difference between two runs of different iteration
//! counts divided by the difference in iterations (start-up and configuration parsing cancel
//! out). `hot_path list` prints every configuration and request name.
//! `make callgrind` (benches/callgrind.py) does this for every case and prints the table.

use std::hint::black_box;
use tracebridge::budget::Unlimited;
use tracebridge::config::Config;
use tracebridge::headers::RequestHeaders;
use tracebridge::translate::{translate, FixedClock, Host};

mod common;
use common::{Loopback, XorShift};

type Request = &'static [(&'static str, &'static str)];

/// The other lines of an ordinary request, which the filter scans too.
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
            "Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1|68fd508a:5",
        )],
    ),
    (
        "cloudtrace",
        &[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )],
    ),
    (
        "jaeger",
        &[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )],
    ),
    (
        "datadog",
        &[
            ("x-datadog-trace-id", "11803532876627986230"),
            ("x-datadog-parent-id", "67667974448284343"),
            ("x-datadog-sampling-priority", "2"),
            ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4"),
        ],
    ),
    (
        "grpc",
        &[("grpc-trace-bin", "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=")],
    ),
    (
        "baggage",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("baggage", "tenant=acme,region=eu%20west;ttl=30,user=u-123"),
            ("uberctx-session", "s%2B1"),
            ("ot-baggage-team", "payments"),
        ],
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

const CONFIGS: &[(&str, &str)] = &[
    ("default", "{}"),
    ("widest", include_str!("envoy/tracebridge-widest.json")),
    (
        "four",
        r#"{"extract": ["tracecontext", "b3", "b3multi", "xray"],
            "inject": ["tracecontext", "b3", "b3multi", "xray"]}"#,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("list") {
        let configs: Vec<&str> = CONFIGS.iter().map(|(name, _)| *name).collect();
        let requests: Vec<&str> = REQUESTS.iter().map(|(name, _)| *name).collect();
        println!("configurations: {}", configs.join(" "));
        println!("requests: {}", requests.join(" "));
        return;
    }
    let [config_name, request_name, iterations] = args.as_slice() else {
        eprintln!("usage: hot_path CONFIG REQUEST ITERATIONS | hot_path list");
        std::process::exit(2);
    };
    let Some((_, json)) = CONFIGS.iter().find(|(name, _)| name == config_name) else {
        eprintln!("unknown configuration {config_name:?}");
        std::process::exit(2);
    };
    let Some((_, trace)) = REQUESTS.iter().find(|(name, _)| name == request_name) else {
        eprintln!("unknown request {request_name:?}");
        std::process::exit(2);
    };
    let Ok(iterations) = iterations.parse::<u64>() else {
        eprintln!("ITERATIONS must be a whole number");
        std::process::exit(2);
    };
    let config = match Config::from_json(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("invalid configuration: {err}");
            std::process::exit(2);
        }
    };
    let pairs: Vec<(&str, &[u8])> = ORDINARY
        .iter()
        .chain(trace.iter())
        .map(|(name, value)| (*name, value.as_bytes()))
        .collect();
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut edits = 0usize;
    for _ in 0..iterations {
        let headers = RequestHeaders::scan(black_box(&pairs).iter().copied(), config.scan());
        let mut host = Host {
            random: &mut random,
            peer: &mut Loopback,
            budget: &mut Unlimited,
            clock: &mut FixedClock(0x6b06_3027),
        };
        if let Ok(translation) = translate(&config, &headers, &mut host) {
            edits = edits.wrapping_add(black_box(translation).edits.len());
        }
    }
    println!("{edits}");
}
