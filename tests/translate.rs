//! Whole-request translation, natively: headers in, headers out, as the filter applies them.
//! Expected values are written out by hand from the format specifications.

use std::collections::BTreeMap;
use tracebridge::config::Config;
use tracebridge::formats::Format;
use tracebridge::headers::{HeaderEdit, RequestHeaders};
use tracebridge::translate::{translate, RandomSource, Report};

/// Unix time 0x6b063027 (2026-11-24): new trace ids start with these 8 hex digits.
const NOW: u64 = 0x6b063027;

/// The first fill is all 0xab, the second all 0xcd, and so on: predictable new ids.
struct Sequence(Vec<u8>);

impl RandomSource for Sequence {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        let byte = self.0.remove(0);
        buf.fill(byte);
        true
    }
}

type Headers = BTreeMap<String, Vec<String>>;

/// Runs the translator and applies its edits the way Envoy does (set replaces every line).
fn run(config: &str, request: &[(&str, &[u8])]) -> (Headers, Report) {
    let config = Config::from_json(config.as_bytes()).expect("test config is valid");
    let headers = RequestHeaders::from_pairs(request.iter().copied());
    let translation = translate(
        &config,
        &headers,
        &mut Sequence(vec![0xab, 0xcd, 0xef]),
        NOW,
    )
    .unwrap();
    let mut out: Headers = BTreeMap::new();
    for (name, value) in request {
        out.entry(name.to_string())
            .or_default()
            .push(String::from_utf8_lossy(value).into_owned());
    }
    for edit in translation.edits {
        match edit {
            HeaderEdit::Set(name, value) => {
                out.insert(name.as_str().to_string(), vec![value]);
            }
            HeaderEdit::Remove(name) => {
                out.remove(name.as_str());
            }
        }
    }
    (out, translation.report)
}

fn text(request: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
    request.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
}

fn expect(headers: &Headers, want: &[(&str, &str)]) {
    for (name, value) in want {
        assert_eq!(
            headers.get(*name),
            Some(&vec![value.to_string()]),
            "header {name}; all: {headers:#?}"
        );
    }
}

const ALL_OUT: &str = r#"{"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"]}"#;

#[test]
fn cloud_trace_reaches_every_format() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
            ("accept", "*/*"),
        ]),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-105445aa7843bc8bf206b12000100000-0000000000000001-01",
            ),
            ("b3", "105445aa7843bc8bf206b12000100000-0000000000000001-1"),
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
            ("accept", "*/*"),
        ],
    );
    assert_eq!(report.source, Some(Format::CloudTrace));
    assert_eq!(report.decided, None);
}

#[test]
fn traceparent_and_tracestate_pass_unchanged() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]),
    );
    assert_eq!(
        out["tracestate"],
        vec!["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            (
                "x-amzn-trace-id",
                "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1",
            ),
            // 0x00f067aa0ba902b7 in decimal.
            (
                "x-cloud-trace-context",
                "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1",
            ),
        ],
    );
    assert_eq!(report.source, Some(Format::TraceContext));
}

#[test]
fn first_valid_format_wins_and_conflicts_are_overwritten() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            ("traceparent", "00-11111111111111111111111111111111-2222222222222222-00"),
            ("tracestate", "vendor=x"),
            ("x-b3-traceid", "33333333333333333333333333333333"),
            ("x-b3-spanid", "4444444444444444"),
            ("x-b3-parentspanid", "5555555555555555"),
            ("x-b3-sampled", "1"),
            ("x-amzn-trace-id", "Root=1-66666666-666666666666666666666666;Parent=7777777777777777;Sampled=1;Lineage=a:1"),
        ]),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-00",
            ),
            ("tracestate", "vendor=x"),
            ("x-b3-traceid", "11111111111111111111111111111111"),
            ("x-b3-spanid", "2222222222222222"),
            ("x-b3-sampled", "0"),
            (
                "x-amzn-trace-id",
                "Root=1-11111111-111111111111111111111111;Parent=2222222222222222;Sampled=0",
            ),
            (
                "x-cloud-trace-context",
                "11111111111111111111111111111111/2459565876494606882;o=0",
            ),
            ("b3", "11111111111111111111111111111111-2222222222222222-0"),
        ],
    );
    assert!(!out.contains_key("x-b3-parentspanid"));
    assert_eq!(report.source, Some(Format::TraceContext));
}

#[test]
fn configured_order_decides_and_foreign_tracestate_is_dropped() {
    let config = r#"{"extract": ["xray", "tracecontext"], "inject": ["tracecontext", "xray"]}"#;
    let (out, report) = run(
        config,
        &text(&[
            ("traceparent", "00-11111111111111111111111111111111-2222222222222222-01"),
            ("tracestate", "vendor=x"),
            ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1|68fd508a:5"),
            ("x-b3-traceid", "33333333333333333333333333333333"),
        ]),
    );
    expect(
        &out,
        &[
            ("traceparent", "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1|68fd508a:5",
            ),
            // b3multi is neither extracted nor injected here: left exactly as it came.
            ("x-b3-traceid", "33333333333333333333333333333333"),
        ],
    );
    assert!(!out.contains_key("tracestate"));
    assert_eq!(report.source, Some(Format::XRay));
}

#[test]
fn invalid_traceparent_falls_through_and_is_replaced() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            ),
            ("tracestate", "vendor=x"),
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
        ]),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
            ),
            // The chosen b3 header already says exactly this context: untouched, parent included.
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
        ],
    );
    assert!(!out.contains_key("tracestate"));
    assert_eq!(report.source, Some(Format::B3));
    assert!(report.invalid[Format::TraceContext.index()]);
}

#[test]
fn repeated_traceparent_lines_are_invalid() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-00",
            ),
            // 64-bit ids stay 16 hex in the format that brought them.
            ("x-b3-traceid", "463ac35c9f6413ad"),
            (
                "x-amzn-trace-id",
                "Root=1-00000000-00000000463ac35c9f6413ad;Parent=a2fb4a1d1a96d312;Sampled=0",
            ),
        ],
    );
    assert_eq!(report.source, Some(Format::B3Multi));
    assert!(report.invalid[Format::TraceContext.index()]);
}

#[test]
fn invalid_tracestate_is_dropped_and_counted() {
    let (out, report) = run(
        ALL_OUT,
        &text(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "foo=1,foo=2"),
        ]),
    );
    expect(
        &out,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert!(!out.contains_key("tracestate"));
    assert!(report.invalid_tracestate);
}

#[test]
fn no_context_starts_a_trace_with_a_time_prefixed_id() {
    let (out, report) = run(r#"{"sampling": {"probability": 1}}"#, &[]);
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-03",
            ),
            ("x-b3-traceid", "6b063027abababababababababababab"),
            ("x-b3-spanid", "cdcdcdcdcdcdcdcd"),
            ("x-b3-sampled", "1"),
            (
                "x-amzn-trace-id",
                "Root=1-6b063027-abababababababababababab;Parent=cdcdcdcdcdcdcdcd;Sampled=1",
            ),
            // 0xcdcdcdcdcdcdcdcd in decimal.
            (
                "x-cloud-trace-context",
                "6b063027abababababababababababab/14829735431805717965;o=1",
            ),
        ],
    );
    assert!(
        !out.contains_key("b3"),
        "b3 single is not injected by default"
    );
    assert!(report.trace_started);
    assert_eq!(report.decided, Some(true));
}

#[test]
fn probability_zero_never_samples_a_new_trace() {
    let (out, report) = run(r#"{"sampling": {"probability": 0}}"#, &[]);
    expect(
        &out,
        &[(
            "traceparent",
            "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-02",
        )],
    );
    assert_eq!(report.decided, Some(false));
}

#[test]
fn b3_sampling_only_header_decides_the_new_trace() {
    let (out, report) = run(r#"{"sampling": {"probability": 1}}"#, &text(&[("b3", "0")]));
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-02",
            ),
            ("x-b3-sampled", "0"),
        ],
    );
    assert!(report.trace_started);
    assert_eq!(report.decided, None);
}

#[test]
fn load_balancer_root_keeps_its_trace_id_with_a_new_span() {
    let (out, report) = run(
        r#"{"sampling": {"probability": 1}}"#,
        &text(&[(
            "x-amzn-trace-id",
            "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678",
        )]),
    );
    expect(
        &out,
        &[
            ("traceparent", "00-67891233abcdef012345678912345678-abababababababab-01"),
            (
                "x-amzn-trace-id",
                "Root=1-67891233-abcdef012345678912345678;Parent=abababababababab;Sampled=1;Self=1-67891234-12456789abcdef012345678",
            ),
        ],
    );
    assert!(report.span_generated);
    assert!(!report.trace_started);
    assert_eq!(report.decided, Some(true));
}

#[test]
fn missing_decision_uses_the_low_56_bits() {
    // R = 0x485a3953bb6124: below T(0.5) = 0x80000000000000, above T(0.75) = 0x40000000000000.
    let request = text(&[
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]);
    let (out, report) = run(r#"{"sampling": {"probability": 0.5}}"#, &request);
    expect(
        &out,
        &[
            ("x-b3-sampled", "0"),
            (
                "traceparent",
                "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-00",
            ),
        ],
    );
    assert_eq!(report.decided, Some(false));
    let (out, report) = run(r#"{"sampling": {"probability": 0.75}}"#, &request);
    expect(
        &out,
        &[
            ("x-b3-sampled", "1"),
            (
                "traceparent",
                "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01",
            ),
        ],
    );
    assert_eq!(report.decided, Some(true));
}

#[test]
fn random_flag_survives_when_another_format_wins() {
    let config = r#"{"extract": ["b3multi", "tracecontext"]}"#;
    let (out, _) = run(
        config,
        &text(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            ),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "1111111111111111"),
            ("x-b3-sampled", "1"),
        ]),
    );
    expect(
        &out,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-03",
        )],
    );
}

#[test]
fn debug_becomes_sampled_where_it_cannot_be_expressed() {
    let (out, _) = run(
        ALL_OUT,
        &text(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
            ),
            ("x-b3-flags", "1"),
            (
                "x-amzn-trace-id",
                "Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent=e457b5a2e4d86bd1;Sampled=1",
            ),
            // 0xe457b5a2e4d86bd1 in decimal.
            (
                "x-cloud-trace-context",
                "80f198ee56343ba864fe8b2a57d3eff7/16453819474850114513;o=1",
            ),
        ],
    );
    assert!(!out.contains_key("x-b3-sampled"));
}

#[test]
fn hostile_bytes_are_invalid_not_fatal() {
    let huge = vec![b'a'; 20_000];
    let request: Vec<(&str, &[u8])> = vec![
        (
            "x-amzn-trace-id",
            b"Root=1-5759e988-bd862e3fe1be46a99427279\xff",
        ),
        ("traceparent", &huge),
        ("tracestate", &huge),
        ("x-cloud-trace-context", b"\xc3\x28"),
        ("b3", b"\x00"),
        ("x-b3-traceid", b"\xe2\x82\xac"),
        ("x-b3-spanid", b"a2fb4a1d1a96d312"),
        ("user-agent", b"\xff\xfe"),
    ];
    let (out, report) = run(r#"{"sampling": {"probability": 1}}"#, &request);
    for format in Format::ALL {
        assert!(
            report.invalid[format.index()],
            "{format:?} should be invalid"
        );
    }
    assert!(report.trace_started);
    expect(
        &out,
        &[(
            "traceparent",
            "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-03",
        )],
    );
    assert!(!out.contains_key("tracestate"));
    assert_eq!(
        out["user-agent"],
        vec![String::from_utf8_lossy(b"\xff\xfe").into_owned()]
    );
}
