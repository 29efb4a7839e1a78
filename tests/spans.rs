//! The proxy's own span, natively: which requests get one and which ids it carries (through the
//! translator), and its OTLP encoding, decoded with opentelemetry-rust's generated types
//! (`opentelemetry-proto`, prost) as the reference reader. Expected values are written out from
//! the OTLP proto, the HTTP semantic conventions and W3C Trace Context.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::BTreeMap;
use tracebridge::budget::Unlimited;
use tracebridge::config::Config;
use tracebridge::headers::{HeaderEdit, HeaderName, RequestHeaders};
use tracebridge::ids::{SpanId, TraceId};
use tracebridge::spans::export::{Exporter, Limits};
use tracebridge::spans::otlp::{self, SpanKind};
use tracebridge::spans::record::{HttpRequest, OpenSpan, SpanEnd, SpanStart};
use tracebridge::translate::{translate, FixedClock, Host, OwnSpan, RandomSource, Translation};
use tracebridge::trust::Peer;

const NOW: u64 = 0x6b063027;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// 12 bytes of 0xab, 8 of 0xcd, then 0xef: a new trace takes 20 bytes (span id 0xcd..), a span
/// id alone 8 (0xab..).
struct Stream(std::vec::IntoIter<u8>);

impl RandomSource for Stream {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for byte in buf {
            let Some(next) = self.0.next() else {
                return false;
            };
            *byte = next;
        }
        true
    }
}

fn stream() -> Stream {
    Stream(
        [[0xab; 12].as_slice(), &[0xcd; 8], &[0xef; 64]]
            .concat()
            .into_iter(),
    )
}

struct Loopback;

impl Peer for Loopback {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        Some([127, 0, 0, 1].into())
    }
    fn principal(&mut self) -> Option<String> {
        None
    }
}

fn run(config: &str, request: &[(&str, &str)], random: &mut dyn RandomSource) -> Translation {
    let config = Config::from_json(config.as_bytes()).expect("valid test configuration");
    let pairs: Vec<(&str, &[u8])> = request.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let headers = RequestHeaders::scan(pairs, config.scan());
    let mut host = Host {
        random,
        peer: &mut Loopback,
        budget: &mut Unlimited,
        clock: &mut FixedClock(NOW),
    };
    translate(&config, &headers, &mut host).expect("random bytes are available")
}

fn set(translation: &Translation) -> BTreeMap<&'static str, String> {
    translation
        .edits
        .iter()
        .filter_map(|edit| match edit {
            HeaderEdit::Set(name, value) => Some((name.as_str(), value.clone())),
            _ => None,
        })
        .collect()
}

const SPANS: &str = r#""spans": {"cluster": "otel"}"#;

fn with_spans(sampling: &str) -> String {
    format!(
        r#"{{"inject": ["tracecontext", "b3multi", "xray", "cloudtrace"], "sampling": {sampling}, {SPANS}}}"#
    )
}

fn without_spans(sampling: &str) -> String {
    format!(
        r#"{{"inject": ["tracecontext", "b3multi", "xray", "cloudtrace"], "sampling": {sampling}}}"#
    )
}

#[test]
fn a_sampled_request_gets_a_new_span_id_in_every_format_with_the_caller_as_parent() {
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let t = run(&with_spans("{}"), &[("traceparent", &tp)], &mut stream());
    let caller = SpanId::new(0x00f067aa0ba902b7).unwrap();
    assert_eq!(
        t.own_span,
        Some(OwnSpan {
            parent: Some(caller)
        })
    );
    // The new id is the next 8 random bytes.
    let own = "abababababababab";
    assert_eq!(t.context.span_id.to_hex(), own);
    let got = set(&t);
    assert_eq!(got["traceparent"], format!("00-{TRACE}-{own}-01"));
    assert_eq!(got["x-b3-spanid"], own);
    assert_eq!(
        got["x-amzn-trace-id"],
        format!("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={own};Sampled=1")
    );
    // Cloud Trace carries the span id in decimal: 0xabababababababab.
    assert_eq!(
        got["x-cloud-trace-context"],
        format!("{TRACE}/{};o=1", 0xabababababababab_u64)
    );
}

#[test]
fn a_new_trace_uses_its_generated_span_id_and_has_no_parent() {
    let t = run(&with_spans(r#"{"probability": 1}"#), &[], &mut stream());
    assert_eq!(t.own_span, Some(OwnSpan { parent: None }));
    assert_eq!(t.context.span_id.to_hex(), "cdcdcdcdcdcdcdcd");
    assert_eq!(
        set(&t)["traceparent"],
        "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-03"
    );
    // An X-Ray Root without Parent (an ALB's first hop): the generated id is the span's own.
    let t = run(
        &with_spans(r#"{"probability": 1}"#),
        &[(
            "x-amzn-trace-id",
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736",
        )],
        &mut stream(),
    );
    assert_eq!(t.own_span, Some(OwnSpan { parent: None }));
    assert!(t.report.span_generated);
    // An untrusted caller's trace id kept (`keep_trace_id_from`): the caller's span id is
    // dropped, so the generated one (the first 8 random bytes) is the root span's own.
    let keep = format!(
        r#"{{"inject": ["tracecontext"], "sampling": {{"probability": 1, "trust_incoming": false,
            "keep_trace_id_from": ["xray"]}}, {SPANS}}}"#
    );
    let alb = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";
    let t = run(&keep, &[("x-amzn-trace-id", alb)], &mut stream());
    assert_eq!(t.own_span, Some(OwnSpan { parent: None }));
    assert_eq!(t.context.trace_id.to_hex(), TRACE);
    assert_eq!(t.context.span_id.to_hex(), "abababababababab");
}

#[test]
fn unsampled_requests_and_configurations_without_spans_pass_the_callers_span_through() {
    for (config, traceparent) in [
        (with_spans("{}"), format!("00-{TRACE}-{CALLER_SPAN}-00")),
        (without_spans("{}"), format!("00-{TRACE}-{CALLER_SPAN}-01")),
        (without_spans("{}"), format!("00-{TRACE}-{CALLER_SPAN}-00")),
    ] {
        let request = [("traceparent", traceparent.as_str())];
        let t = run(&config, &request, &mut stream());
        assert_eq!(t.own_span, None, "{config}");
        assert_eq!(t.context.span_id.to_hex(), CALLER_SPAN, "{config}");
        // traceparent is left as it came.
        assert!(!set(&t).contains_key("traceparent"), "{config}");
    }
    // Exactly today's translation when unsampled: the same edits with and without `spans`.
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-00");
    let request = [("traceparent", tp.as_str())];
    let with = run(&with_spans("{}"), &request, &mut stream());
    let without = run(&without_spans("{}"), &request, &mut stream());
    assert_eq!((with.context, with.edits), (without.context, without.edits));
}

#[test]
fn no_randomness_means_no_span_not_a_failed_request() {
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let t = run(
        &with_spans("{}"),
        &[("traceparent", &tp)],
        &mut Stream(vec![].into_iter()),
    );
    assert_eq!(t.own_span, None);
    assert_eq!(t.context.span_id.to_hex(), CALLER_SPAN);
}

// -------------------------------------------------------------------------------------------
// Encoding, decoded by the reference reader
// -------------------------------------------------------------------------------------------

fn attributes(span: &Span) -> BTreeMap<String, AnyValue> {
    span.attributes
        .iter()
        .map(|KeyValue { key, value, .. }| {
            let value = value
                .clone()
                .and_then(|v| v.value)
                .expect("attribute value");
            (key.clone(), value)
        })
        .collect()
}

fn s(text: &str) -> AnyValue {
    AnyValue::StringValue(text.into())
}

fn int(n: i64) -> AnyValue {
    AnyValue::IntValue(n)
}

fn request<'a>() -> HttpRequest<'a> {
    HttpRequest {
        method: Some(b"GET"),
        path: Some(b"/orders/7?id=7&sig=s3cr3t"),
        scheme: Some(b"http"),
        authority: Some(b"shop.example.com:8080"),
        user_agent: Some(b"curl/8.5.0"),
        downstream_peer: Some(b"10.0.0.7:41234"),
        protocol: Some(b"HTTP/1.1"),
    }
}

fn start<'a>(kind: SpanKind, parent: Option<SpanId>, request: HttpRequest<'a>) -> SpanStart<'a> {
    SpanStart {
        trace_id: TraceId::new(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap(),
        span_id: SpanId::new(0xabababababababab).unwrap(),
        parent,
        trace_flags: 0x03,
        trace_state: Some("ot=th:0,rojo=00f067aa0ba902b7"),
        kind,
        start_unix_nanos: 1_700_000_000_000_000_000,
        request,
        sampling_reason: "parent",
        source_format: Some("tracecontext"),
    }
}

fn end(status: Option<u64>) -> SpanEnd<'static> {
    SpanEnd {
        end_unix_nanos: 1_700_000_000_002_500_000,
        status_code: status,
        upstream_peer: Some(b"10.0.1.9:8080"),
    }
}

fn decode(body: &[u8]) -> Span {
    Span::decode(body).expect("the reference reader decodes the span")
}

#[test]
fn a_server_span_as_the_reference_reader_sees_it() {
    let parent = SpanId::new(0x00f067aa0ba902b7);
    let body = OpenSpan::start(&start(SpanKind::Server, parent, request())).finish(&end(Some(200)));
    let span = decode(&body);
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.span_id), "abababababababab");
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(span.trace_state, "ot=th:0,rojo=00f067aa0ba902b7");
    // Semantic conventions: `{method}` without a route template.
    assert_eq!(span.name, "GET");
    assert_eq!(span.kind(), ProtoKind::Server);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_002_500_000);
    // W3C flags sampled|random, plus SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (0x100) and IS_REMOTE
    // (0x200): the parent came from the caller.
    assert_eq!(span.flags, 0x303);
    assert_eq!(span.status, None, "2xx leaves the status unset");
    let want: BTreeMap<String, AnyValue> = [
        ("http.request.method", s("GET")),
        ("url.scheme", s("http")),
        ("url.path", s("/orders/7")),
        // `sig` is one of the query keys the conventions redact.
        ("url.query", s("id=7&sig=REDACTED")),
        ("server.address", s("shop.example.com")),
        ("server.port", int(8080)),
        ("network.peer.address", s("10.0.0.7")),
        ("network.peer.port", int(41234)),
        ("network.protocol.version", s("1.1")),
        ("user_agent.original", s("curl/8.5.0")),
        ("http.response.status_code", int(200)),
        ("tracebridge.sampling.reason", s("parent")),
        ("tracebridge.source_format", s("tracecontext")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(attributes(&span), want);
    assert_eq!(span.attributes.len(), want.len(), "no attribute twice");
}

#[test]
fn a_client_span_as_the_reference_reader_sees_it() {
    let request = HttpRequest {
        authority: Some(b"inventory.shop"),
        downstream_peer: None,
        protocol: None,
        ..request()
    };
    let body = OpenSpan::start(&start(SpanKind::Client, None, request)).finish(&end(Some(404)));
    let span = decode(&body);
    assert_eq!(span.kind(), ProtoKind::Client);
    assert_eq!(span.parent_span_id, Vec::<u8>::new(), "a root span");
    assert_eq!(
        span.flags, 0x103,
        "the parent is known not to be remote: there is none"
    );
    let got = attributes(&span);
    assert_eq!(
        got["url.full"],
        s("http://inventory.shop/orders/7?id=7&sig=REDACTED")
    );
    // Client spans need server.port: the scheme's default.
    assert_eq!(got["server.port"], int(80));
    assert_eq!(got["network.peer.address"], s("10.0.1.9"));
    assert_eq!(got["network.peer.port"], int(8080));
    assert!(!got.contains_key("url.path"), "client spans carry url.full");
    // Client spans: 4xx is an error, error.type the status code.
    assert_eq!(got["error.type"], s("404"));
    assert_eq!(span.status.unwrap().code(), StatusCode::Error);
}

#[test]
fn status_per_kind_and_code() {
    // HTTP semantic conventions, "Status": server spans error on 5xx only, client spans on 4xx
    // and 5xx; no response at all is an error (error.type _OTHER).
    let cases: &[(SpanKind, Option<u64>, Option<&str>)] = &[
        (SpanKind::Server, Some(200), None),
        (SpanKind::Server, Some(302), None),
        (SpanKind::Server, Some(404), None),
        (SpanKind::Server, Some(500), Some("500")),
        (SpanKind::Server, Some(503), Some("503")),
        (SpanKind::Server, None, Some("_OTHER")),
        (SpanKind::Server, Some(0), Some("_OTHER")),
        (SpanKind::Client, Some(200), None),
        (SpanKind::Client, Some(400), Some("400")),
        (SpanKind::Client, Some(502), Some("502")),
    ];
    for &(kind, code, error_type) in cases {
        let span = decode(&OpenSpan::start(&start(kind, None, request())).finish(&end(code)));
        let got = attributes(&span);
        match error_type {
            Some(error_type) => {
                assert_eq!(
                    span.status.unwrap().code(),
                    StatusCode::Error,
                    "{kind:?} {code:?}"
                );
                assert_eq!(got["error.type"], s(error_type), "{kind:?} {code:?}");
            }
            None => {
                assert_eq!(span.status, None, "{kind:?} {code:?}");
                assert!(!got.contains_key("error.type"), "{kind:?} {code:?}");
            }
        }
        let status_code = got.get("http.response.status_code");
        match code.filter(|&c| c > 0) {
            Some(c) => assert_eq!(status_code, Some(&int(c as i64))),
            None => assert_eq!(status_code, None, "no response, no status code"),
        }
    }
}

#[test]
fn other_methods_and_hostile_values() {
    let long_agent = "x".repeat(70_000);
    let request = HttpRequest {
        method: Some(b"PROPFIND"),
        path: Some(b"/\xff\xfe"),
        user_agent: Some(long_agent.as_bytes()),
        authority: Some(b"[2001:db8::1]:9443"),
        ..request()
    };
    let span = decode(&OpenSpan::start(&start(SpanKind::Server, None, request)).finish(&end(None)));
    // Semantic conventions: an unknown method is _OTHER, the name "HTTP", the original kept.
    assert_eq!(span.name, "HTTP");
    let got = attributes(&span);
    assert_eq!(got["http.request.method"], s("_OTHER"));
    assert_eq!(got["http.request.method_original"], s("PROPFIND"));
    assert_eq!(got["url.path"], s("/\u{fffd}\u{fffd}"));
    assert_eq!(got["server.address"], s("2001:db8::1"));
    assert_eq!(got["server.port"], int(9443));
    let AnyValue::StringValue(agent) = &got["user_agent.original"] else {
        panic!("user agent is a string");
    };
    assert_eq!(agent.len(), 1024);
}

#[test]
fn an_export_request_as_the_reference_reader_sees_it() {
    let resource = otlp::resource(&[
        ("service.name", "checkout.shop"),
        ("k8s.namespace.name", "shop"),
    ]);
    let scope = otlp::scope("tracebridge", "0.1.0");
    let limits = Limits {
        max_queue: 8,
        max_batch: 8,
        flush_interval: std::time::Duration::from_millis(1000),
        timeout: std::time::Duration::from_millis(1000),
    };
    let mut exporter = Exporter::new(limits, resource, scope, 0);
    for code in [200, 503] {
        exporter.push(
            OpenSpan::start(&start(SpanKind::Server, None, request())).finish(&end(Some(code))),
        );
    }
    let batch = exporter
        .take_batch(1_000_000_000)
        .expect("the interval is over");
    assert_eq!(batch.spans, 2);
    let request = ExportTraceServiceRequest::decode(batch.body.as_slice()).expect("decodes");
    assert_eq!(request.resource_spans.len(), 1);
    let resource_spans = &request.resource_spans[0];
    let resource = resource_spans.resource.as_ref().expect("a resource");
    let resource: Vec<(String, AnyValue)> = resource
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
        .collect();
    assert_eq!(
        resource,
        vec![
            ("service.name".to_string(), s("checkout.shop")),
            ("k8s.namespace.name".to_string(), s("shop")),
        ]
    );
    assert_eq!(resource_spans.scope_spans.len(), 1);
    let scope_spans = &resource_spans.scope_spans[0];
    let scope = scope_spans.scope.as_ref().expect("a scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("tracebridge", "0.1.0")
    );
    let codes: Vec<AnyValue> = scope_spans
        .spans
        .iter()
        .map(|span| attributes(span)["http.response.status_code"].clone())
        .collect();
    assert_eq!(codes, vec![int(200), int(503)]);
    // The reference encoder writes the same message (field order aside) to the same length.
    assert_eq!(request.encoded_len(), batch.body.len());
}

#[test]
fn the_tracestate_the_span_carries_is_the_one_the_request_leaves_with() {
    use tracebridge::spans::record::outgoing_tracestate;
    let config = Config::from_json(with_spans(r#"{"probability": 1}"#).as_bytes()).unwrap();
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    // A sampled parent whose `th:0` is consistent: tracestate passes unchanged (no edit), so
    // the span carries the caller's list.
    let request = [
        ("traceparent", tp.as_str()),
        ("tracestate", "ot=th:0,rojo=1"),
    ];
    let t = run(
        &with_spans(r#"{"probability": 1}"#),
        &request,
        &mut stream(),
    );
    assert!(!t
        .edits
        .iter()
        .any(|e| matches!(e, HeaderEdit::Set(HeaderName::Tracestate, _))));
    let pairs = request.map(|(n, v)| (n, v.as_bytes()));
    let headers = RequestHeaders::scan(pairs, config.scan());
    assert_eq!(
        outgoing_tracestate(&t.edits, headers.tracestate_lines(), true).as_deref(),
        Some("ot=th:0,rojo=1")
    );
    // A new root at probability 1 writes `ot=th:0` (OpenTelemetry's threshold for p = 1).
    let t = run(&with_spans(r#"{"probability": 1}"#), &[], &mut stream());
    assert_eq!(
        outgoing_tracestate(&t.edits, None, true).as_deref(),
        Some("ot=th:0")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
