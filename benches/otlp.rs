//! The proxy's span, encoded: tracebridge's hand-written OTLP protobuf (`spans::record`) beside
//! the same span built as opentelemetry-rust's generated prost types and encoded by prost, the
//! way a filter using that crate would.
//!
//! ```sh
//! cargo bench --bench otlp
//! ```
//!
//! Both sides start from the same borrowed request values and produce the bytes of one `Span`
//! message (the reference decodes tracebridge's output to the same span: tests/spans.rs).
//! Nothing here asserts a timing.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use divan::black_box;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use prost::Message;
use tracebridge::ids::{SpanId, TraceId};
use tracebridge::spans::otlp::SpanKind;
use tracebridge::spans::record::{HttpRequest, OpenSpan, SpanEnd, SpanStart};

fn main() {
    divan::main();
}

const REQUEST: HttpRequest<'static> = HttpRequest {
    method: Some(b"GET"),
    path: Some(b"/v1/orders/12345?expand=items"),
    scheme: Some(b"http"),
    authority: Some(b"api.example.com"),
    user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) bench"),
    downstream_peer: Some(b"10.0.0.7:41234"),
    protocol: Some(b"HTTP/1.1"),
};

fn start() -> SpanStart<'static> {
    SpanStart {
        trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
        span_id: SpanId::new(0xabababababababab).unwrap(),
        parent: SpanId::new(0x00f067aa0ba902b7),
        trace_flags: 0x01,
        trace_state: Some("ot=th:fd70a"),
        kind: SpanKind::Server,
        start_unix_nanos: 1_700_000_000_000_000_000,
        request: REQUEST,
        sampling_reason: "probability",
        source_format: Some("tracecontext"),
    }
}

const END: SpanEnd<'static> = SpanEnd {
    end_unix_nanos: 1_700_000_000_002_500_000,
    status_code: Some(503),
    upstream_peer: None,
};

#[divan::bench]
fn tracebridge_span() -> Vec<u8> {
    OpenSpan::start(black_box(&start())).finish(black_box(&END))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// The same span as prost types: the attributes tracebridge writes, from the same inputs.
#[divan::bench]
fn prost_span() -> Vec<u8> {
    use any_value::Value::{IntValue, StringValue};
    let start = black_box(start());
    let end = black_box(END);
    let r = &start.request;
    let path = text(r.path);
    let (url_path, query) = path.split_once('?').unwrap_or((&path, ""));
    let peer = text(r.downstream_peer);
    let (address, port) = peer.rsplit_once(':').unwrap_or((&peer, "0"));
    let span = Span {
        trace_id: start.trace_id.value().to_be_bytes().to_vec(),
        span_id: start.span_id.value().to_be_bytes().to_vec(),
        trace_state: start.trace_state.unwrap_or_default().to_string(),
        parent_span_id: start
            .parent
            .map_or(vec![], |p| p.value().to_be_bytes().to_vec()),
        flags: 0x301,
        name: text(r.method),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start.start_unix_nanos,
        end_time_unix_nano: end.end_unix_nanos,
        attributes: vec![
            kv("http.request.method", StringValue(text(r.method))),
            kv("url.scheme", StringValue(text(r.scheme))),
            kv("server.address", StringValue(text(r.authority))),
            kv("url.path", StringValue(url_path.to_string())),
            kv("url.query", StringValue(query.to_string())),
            kv("network.peer.address", StringValue(address.to_string())),
            kv("network.peer.port", IntValue(port.parse().unwrap_or(0))),
            kv("network.protocol.version", StringValue("1.1".into())),
            kv("user_agent.original", StringValue(text(r.user_agent))),
            kv(
                "tracebridge.sampling.reason",
                StringValue(start.sampling_reason.into()),
            ),
            kv(
                "tracebridge.source_format",
                StringValue("tracecontext".into()),
            ),
            kv("http.response.status_code", IntValue(503)),
            kv("error.type", StringValue("503".into())),
        ],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            ..Status::default()
        }),
        ..Span::default()
    };
    span.encode_to_vec()
}
