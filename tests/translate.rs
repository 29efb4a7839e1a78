//! Whole-request translation, natively: headers in, headers out, as the filter applies them.
//! Expected values are written out by hand from the format specifications.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use tracebridge::budget::{Budget, BudgetState, Limits, LocalBudget, Unlimited};
use tracebridge::config::Config;
use tracebridge::force;
use tracebridge::formats::Format;
use tracebridge::headers::{HeaderEdit, RequestHeaders};
use tracebridge::translate::{translate, FixedClock, Host, RandomSource, Report};
use tracebridge::translate::{ForceOutcome, Reason};
use tracebridge::trust::Peer;

/// Unix time 0x6b063027 (2026-11-24): new trace ids start with these 8 hex digits.
const NOW: u64 = 0x6b063027;

/// A fixed byte stream: 12 bytes of 0xab, then 8 of 0xcd, then 0xef. A new trace draws 20
/// bytes at once (trace id `6b063027` + 0xab.., span id 0xcd..); a span id alone draws 8 (0xab..).
struct Stream(std::vec::IntoIter<u8>);

impl Stream {
    fn new() -> Stream {
        let bytes = [[0xab; 12].as_slice(), &[0xcd; 8], &[0xef; 64]].concat();
        Stream(bytes.into_iter())
    }
}

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

/// The caller as the proxy sees it.
struct Caller {
    address: [u8; 4],
    principal: Option<&'static str>,
}

const LOOPBACK: Caller = Caller {
    address: [127, 0, 0, 1],
    principal: None,
};

impl Peer for Caller {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        Some(self.address.into())
    }
    fn principal(&mut self) -> Option<String> {
        self.principal.map(String::from)
    }
}

type Headers = BTreeMap<String, Vec<String>>;

fn run(config: &str, request: &[(&str, &[u8])]) -> (Headers, Report) {
    run_as(config, request, LOOPBACK, &mut Unlimited, NOW)
}

/// Runs the translator and applies its edits the way Envoy does (set replaces every line).
fn run_as(
    config: &str,
    request: &[(&str, &[u8])],
    mut caller: Caller,
    budget: &mut dyn Budget,
    now: u64,
) -> (Headers, Report) {
    let config = Config::from_json(config.as_bytes()).expect("test config is valid");
    let headers = RequestHeaders::scan(request.iter().copied(), config.scan());
    let mut host = Host {
        random: &mut Stream::new(),
        peer: &mut caller,
        budget,
        clock: &mut FixedClock(now),
    };
    let translation = translate(&config, &headers, &mut host).unwrap();
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
            HeaderEdit::RemoveCustom(name) => {
                out.remove(&name);
            }
            HeaderEdit::SetCustom(name, value) => {
                out.insert(name, vec![value]);
            }
        }
    }
    (out, translation.report)
}

fn text(request: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
    request.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
}

fn text_owned<'a>(request: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
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
            ("tracestate", "foo=1,Foo=2"),
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

/// W3C Trace Context, "Combined Header Value": one entry per key; "Mutating the tracestate
/// Field": any entry may be deleted. The W3C test suite's duplicated-keys cases expect the list
/// passed on, and its own parser (test/tracecontext/tracestate.py) keeps the first entry of a
/// repeated key, as the filter does (the leftmost is the most recent position).
#[test]
fn repeated_tracestate_keys_keep_their_first_entry() {
    let tp = "00-12345678901234567890123456789012-1234567890123456-00";
    let cases: &[(&[&str], &str)] = &[
        (&["foo=1,foo=1"], "foo=1"),
        (&["foo=1,foo=2"], "foo=1"),
        (&["foo=1", "foo=1"], "foo=1"),
        (&["foo=1", "foo=2"], "foo=1"),
        (&["a=1,foo=1", "b=2,foo=2,a=3"], "a=1,foo=1,b=2"),
    ];
    for &(lines, want) in cases {
        let mut request: Vec<(&str, &[u8])> = vec![("traceparent", tp.as_bytes())];
        request.extend(lines.iter().map(|line| ("tracestate", line.as_bytes())));
        let (out, report) = run(ALL_OUT, &request);
        expect(&out, &[("traceparent", tp), ("tracestate", want)]);
        assert!(!report.invalid_tracestate, "{lines:?}");
    }
}

/// W3C Trace Context, "version" and "Mutating the traceparent Field" (downgrade the version),
/// and "trace-flags" (a version-00 writer sets only the defined bits, as OpenTelemetry Go's
/// writer masks them). Only the canonical form passes byte for byte.
#[test]
fn traceparent_is_written_as_version_00_with_defined_flags() {
    let trace = "12345678901234567890123456789012";
    let span = "1234567890123456";
    let cases: &[(String, &str)] = &[
        // The W3C test suite's test_traceparent_version_0x_cc (exactly 55 characters).
        (format!("cc-{trace}-{span}-01"), "01"),
        // A higher version longer than 55 characters, `-` at position 55.
        (
            format!("cc-{trace}-{span}-01-what-the-future-will-be-like"),
            "01",
        ),
        (format!("00-{trace}-{span}-ff"), "03"),
        (format!("00-{trace}-{span}-09"), "01"),
        (format!("00-{trace}-{span}-fe"), "02"),
        (format!("00-{trace}-{span}-03"), "03"),
    ];
    for (incoming, flags) in cases {
        let (out, report) = run(ALL_OUT, &[("traceparent", incoming.as_bytes())]);
        let want = format!("00-{trace}-{span}-{flags}");
        expect(&out, &[("traceparent", want.as_str())]);
        assert_eq!(report.source, Some(Format::TraceContext), "{incoming}");
    }
}

const JAEGER_ONLY: &str = r#"{"extract": ["jaeger"], "inject": ["tracecontext", "jaeger"]}"#;

/// OpenTelemetry Go, Java, Rust and Python ignore the deprecated parent field of
/// `uber-trace-id` (test vectors: opentelemetry-go-contrib's `...:whatever:1`, OpenTelemetry
/// Rust's `12345:54321:ignored_parent_span_id:3`); a header that is not in the `:`-separated form with
/// a hex parent is rewritten, so that OpenTelemetry Python's reader can read it.
#[test]
fn jaeger_parent_field_is_ignored_and_odd_forms_are_rewritten() {
    let full = "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7";
    let cases: &[(&str, &str, &str)] = &[
        (
            "12345:54321:ignored_parent_span_id:3",
            "00000000000000000000000000012345:0000000000054321:0:3",
            "00-00000000000000000000000000012345-0000000000054321-01",
        ),
        (
            "12345%3A54321%3Aignored_parent_span_id%3A3",
            "00000000000000000000000000012345:0000000000054321:0:3",
            "00-00000000000000000000000000012345-0000000000054321-01",
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:whatever:1",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        // Canonical: left byte for byte.
        (
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:53995c3f42cd8ad8:1",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:53995c3f42cd8ad8:1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    assert!(cases[2].1.starts_with(full));
    for &(incoming, uber, traceparent) in cases {
        let (out, report) = run(JAEGER_ONLY, &text_owned(&[("uber-trace-id", incoming)]));
        expect(
            &out,
            &[("uber-trace-id", uber), ("traceparent", traceparent)],
        );
        assert_eq!(report.source, Some(Format::Jaeger), "{incoming}");
    }
}

const XRAY_ONLY: &str = r#"{"extract": ["xray"], "inject": ["xray"]}"#;

/// OpenTelemetry Python's AwsXRayPropagator rejects an empty field (a trailing `;`); the AWS
/// SDKs trim and skip it. Read as the SDKs read it, written in the form every reader takes.
#[test]
fn xray_trailing_semicolon_and_spaces_are_rewritten() {
    let canonical = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let cases = [
        format!("{canonical};"),
        "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8;Sampled=1".to_string(),
        canonical.to_string(),
    ];
    for incoming in &cases {
        let (out, report) = run(XRAY_ONLY, &[("x-amzn-trace-id", incoming.as_bytes())]);
        expect(&out, &[("x-amzn-trace-id", canonical)]);
        assert_eq!(report.source, Some(Format::XRay), "{incoming}");
    }
}

const DATADOG_TO_W3C: &str =
    r#"{"extract": ["datadog", "tracecontext"], "inject": ["tracecontext", "datadog"]}"#;

/// dd-trace's W3C injection (dd-trace-go `ddtrace/tracer/textmap.go` `composeTracestate`,
/// dd-trace-py `ddtrace/internal/utils/http.py` `w3c_get_dd_list_member` and
/// `w3c_tracestate_add_p`): `dd=s:<priority>;o:<origin>;p:<16 hex parent>;t.<tag>:<value>`,
/// the origin and tag values with `,` `;` `~` as `_` and `=` as `~`, `_dd.p.` written `t.`.
#[test]
fn datadog_context_carries_the_dd_member_in_tracestate() {
    // 0x00f067aa0ba902b7 = 67667974448284343, 0xa3ce929d0e0e4736 = 11803532876627986230.
    let dd = |extra: &[(&'static str, &'static str)]| {
        let mut request = vec![
            ("x-datadog-trace-id", "11803532876627986230"),
            ("x-datadog-parent-id", "67667974448284343"),
        ];
        request.extend_from_slice(extra);
        request
    };
    let tp = "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7";
    // (request, traceparent, tracestate)
    type Case = (Vec<(&'static str, &'static str)>, String, &'static str);
    let cases: Vec<Case> = vec![
        (
            dd(&[
                ("x-datadog-sampling-priority", "2"),
                ("x-datadog-origin", "synthetics"),
                ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.usr.id=baz64=="),
            ]),
            format!("{tp}-01"),
            "dd=s:2;o:synthetics;p:00f067aa0ba902b7;t.dm:-4;t.usr.id:baz64~~",
        ),
        (
            dd(&[("x-datadog-sampling-priority", "-1")]),
            format!("{tp}-00"),
            "dd=s:-1;p:00f067aa0ba902b7",
        ),
        (
            dd(&[
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-origin", "rum;a,b~c=d"),
            ]),
            format!("{tp}-01"),
            "dd=s:1;o:rum_a_b_c~d;p:00f067aa0ba902b7",
        ),
        // The upper half travels in traceparent, not as t.tid.
        (
            vec![
                ("x-datadog-trace-id", "11803532876627986230"),
                ("x-datadog-parent-id", "67667974448284343"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-0"),
            ],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            "dd=s:1;p:00f067aa0ba902b7;t.dm:-0",
        ),
        // A traceparent of the same trace: its tracestate follows, its old dd member replaced.
        (
            dd(&[
                ("x-datadog-sampling-priority", "1"),
                (
                    "traceparent",
                    "00-0000000000000000a3ce929d0e0e4736-1111111111111111-01",
                ),
                ("tracestate", "foo=1,dd=s:0;p:1111111111111111,bar=2"),
            ]),
            format!("{tp}-01"),
            "dd=s:1;p:00f067aa0ba902b7,foo=1,bar=2",
        ),
    ];
    for (request, traceparent, tracestate) in cases {
        let (out, report) = run(DATADOG_TO_W3C, &text_owned(&request));
        expect(
            &out,
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", tracestate),
            ],
        );
        assert_eq!(report.source, Some(Format::Datadog), "{request:?}");
    }
}

/// A `dd` member in the caller's tracestate survives when the context came from elsewhere:
/// the list is forwarded as it came (W3C: a vendor deletes only its own entries).
#[test]
fn an_existing_dd_member_is_kept_for_other_sources() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ts = "dd=s:2;o:rum;p:0123456789abcdef,foo=1";
    let (out, report) = run(
        DATADOG_TO_W3C,
        &text(&[("traceparent", tp), ("tracestate", ts)]),
    );
    expect(&out, &[("traceparent", tp), ("tracestate", ts)]);
    assert_eq!(report.source, Some(Format::TraceContext));
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
        ("uber-trace-id", b"\xff:1:0:1"),
        ("x-datadog-trace-id", b"12\xff"),
        ("x-datadog-parent-id", b"1"),
        ("grpc-trace-bin", b"\xff\xfe"),
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
    // The new trace is a sampled root at p = 1: its threshold is recorded.
    assert_eq!(out["tracestate"], vec!["ot=th:0"]);
    assert_eq!(
        out["user-agent"],
        vec![String::from_utf8_lossy(b"\xff\xfe").into_owned()]
    );
}

// ---- Sampling at the edge: rules, thresholds in tracestate, trust, forcing, the cap ----

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn sampled_root_records_its_threshold() {
    // R = 0xababababababab >= T(0.5) = 0x80000000000000.
    let (out, report) = run(r#"{"sampling": {"probability": 0.5}}"#, &[]);
    assert_eq!(out["tracestate"], vec!["ot=th:8"]);
    assert_eq!(report.reason, Reason::Probability);
    // R < T(0.25) = 0xc0000000000000: not sampled, no threshold.
    let (out, report) = run(r#"{"sampling": {"probability": 0.25}}"#, &[]);
    assert!(!out.contains_key("tracestate"));
    assert_eq!(report.decided, Some(false));
}

#[test]
fn default_precision_is_four_hex_digits() {
    // 0.01 at precision 4 is th fd70a; R = 0xababab... is below it.
    let config =
        r#"{"sampling": {"rules": [{"match": {}, "probability": 0.01}], "probability": 0}}"#;
    let (_, report) = run(config, &[]);
    assert_eq!((report.reason, report.decided), (Reason::Rule, Some(false)));
    let config = r#"{"sampling": {"probability": 0.75, "precision": 1}}"#;
    let (out, _) = run(config, &[]);
    assert_eq!(out["tracestate"], vec!["ot=th:4"]);
}

#[test]
fn first_matching_rule_sets_the_probability() {
    let config = r#"{"sampling": {"probability": 0, "rules": [
        {"match": {"authority": "api.example.com", "path_prefix": "/checkout", "method": "POST"}, "probability": 1},
        {"match": {"header": {"name": "X-Load-Test", "value": "yes"}}, "probability": 0.5},
        {"match": {"authority": "*.internal.example.com"}, "probability": 1}
    ]}}"#;
    // (request headers, reason, matching rule, sampled)
    type Case<'a> = (&'a [(&'a str, &'a str)], Reason, Option<usize>, bool);
    let cases: &[Case] = &[
        (
            &[
                (":authority", "api.example.com"),
                (":path", "/checkout/cart"),
                (":method", "POST"),
            ],
            Reason::Rule,
            Some(0),
            true,
        ),
        (
            &[
                (":authority", "api.example.com"),
                (":path", "/checkout/cart"),
                (":method", "GET"),
            ],
            Reason::Probability,
            None,
            false,
        ),
        (
            &[(":authority", "api.example.com"), (":path", "/home")],
            Reason::Probability,
            None,
            false,
        ),
        (&[("x-load-test", "yes")], Reason::Rule, Some(1), true),
        (&[("x-load-test", "no")], Reason::Probability, None, false),
        (
            &[(":authority", "db.internal.example.com:5432")],
            Reason::Rule,
            Some(2),
            true,
        ),
    ];
    for &(request, reason, rule, sampled) in cases {
        let (out, report) = run(config, &text(request));
        assert_eq!(
            (report.reason, report.rule, report.decided),
            (reason, rule, Some(sampled)),
            "{request:?}"
        );
        assert_eq!(
            out["x-b3-sampled"],
            vec![if sampled { "1" } else { "0" }],
            "{request:?}"
        );
    }
}

const FORGED: &[(&str, &str)] = &[
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-01",
    ),
    ("tracestate", "ot=th:0,vendor=x"),
    ("b3", "4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-d"),
    ("x-b3-traceid", "4bf92f3577b34da6a3ffffffffffffff"),
    ("x-b3-spanid", "00f067aa0ba902b7"),
    ("x-b3-flags", "1"),
    (
        "x-amzn-trace-id",
        "Root=1-4bf92f35-77b34da6a3ffffffffffffff;Parent=00f067aa0ba902b7;Sampled=1",
    ),
    (
        "x-cloud-trace-context",
        "4bf92f3577b34da6a3ffffffffffffff/1;o=1",
    ),
    ("x-client-trace-id", "force-me"),
    ("user-agent", "curl"),
];

#[test]
fn untrusted_callers_restart_the_trace() {
    let (out, report) = run(
        r#"{"sampling": {"trust_incoming": false, "probability": 0}}"#,
        &text(FORGED),
    );
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-02",
            ),
            ("x-b3-traceid", "6b063027abababababababababababab"),
            ("x-b3-sampled", "0"),
            (
                "x-amzn-trace-id",
                "Root=1-6b063027-abababababababababababab;Parent=cdcdcdcdcdcdcdcd;Sampled=0",
            ),
            (
                "x-cloud-trace-context",
                "6b063027abababababababababababab/14829735431805717965;o=0",
            ),
            ("user-agent", "curl"),
        ],
    );
    for gone in ["tracestate", "b3", "x-b3-flags", "x-client-trace-id"] {
        assert!(
            !out.contains_key(gone),
            "{gone} must not reach the upstream: {out:#?}"
        );
    }
    assert_eq!(report.reason, Reason::UntrustedRestart);
    assert!(report.untrusted && report.trace_started);
    assert_eq!(report.source, None);
}

#[test]
fn untrusted_caller_without_context_is_an_ordinary_root() {
    let (_, report) = run(
        r#"{"sampling": {"trust_incoming": false, "probability": 0}}"#,
        &[],
    );
    assert_eq!(report.reason, Reason::Probability);
}

#[test]
fn trusted_sources_are_continued() {
    let config = r#"{"sampling": {"trust_incoming": false, "probability": 0, "trusted_sources": {
        "cidrs": ["10.0.0.0/8"], "principals": ["spiffe://cluster.local/ns/mesh/*"]}}}"#;
    let request = text(&[("traceparent", TRACEPARENT)]);
    let callers = [
        (
            Caller {
                address: [10, 1, 2, 3],
                principal: None,
            },
            true,
        ),
        (
            Caller {
                address: [203, 0, 113, 7],
                principal: Some("spiffe://cluster.local/ns/mesh/sa/web"),
            },
            true,
        ),
        (
            Caller {
                address: [203, 0, 113, 7],
                principal: Some("spiffe://cluster.local/ns/other/sa/web"),
            },
            false,
        ),
        (
            Caller {
                address: [203, 0, 113, 7],
                principal: None,
            },
            false,
        ),
    ];
    for (caller, trusted) in callers {
        let label = format!("{:?} {:?}", caller.address, caller.principal);
        let (out, report) = run_as(config, &request, caller, &mut Unlimited, NOW);
        assert_eq!(!report.untrusted, trusted, "{label}");
        let kept = out["traceparent"] == vec![TRACEPARENT.to_string()];
        assert_eq!(kept, trusted, "{label}");
    }
}

#[test]
fn parent_threshold_is_kept_when_consistent_and_erased_otherwise() {
    // R of the W3C example id is 0xce929d0e0e4736.
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        // sampled, R >= th(8): kept as it came
        (TRACEPARENT, "vendor=x,ot=th:8", None, false),
        // sampled, R < th(f): erased, the ot entry (now empty) disappears
        (TRACEPARENT, "vendor=x,ot=th:f", Some("vendor=x"), true),
        // not sampled with a th: erased, other sub-keys stay, moved to the front
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "vendor=x,ot=th:8;rv:ce929d0e0e4736",
            Some("ot=rv:ce929d0e0e4736,vendor=x"),
            true,
        ),
        // explicit randomness wins over the trace id: rv 00000000000001 < th(8)
        (
            TRACEPARENT,
            "ot=th:8;rv:00000000000001",
            Some("ot=rv:00000000000001"),
            true,
        ),
    ];
    for &(traceparent, tracestate, want, erased) in cases {
        let (out, report) = run(
            "{}",
            &text(&[("traceparent", traceparent), ("tracestate", tracestate)]),
        );
        match want {
            None => assert_eq!(out["tracestate"], vec![tracestate.to_string()]),
            Some(want) => assert_eq!(out["tracestate"], vec![want.to_string()], "{tracestate}"),
        }
        assert_eq!(report.threshold_erased, erased, "{tracestate}");
        assert_eq!(report.reason, Reason::Parent);
        // The flag is authoritative: the decision never changes.
        assert_eq!(out["traceparent"], vec![traceparent.to_string()]);
    }
}

#[test]
fn threshold_reproduces_a_lost_flag() {
    let config = r#"{"extract": ["b3multi", "tracecontext"], "sampling": {"probability": 0}}"#;
    let request = |tracestate: &'static str| {
        text(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("traceparent", TRACEPARENT),
            ("tracestate", tracestate),
        ])
    };
    // R = 0xce929d0e0e4736 >= th(c): sampled although p = 0.
    let (out, report) = run(config, &request("ot=th:c"));
    expect(&out, &[("x-b3-sampled", "1"), ("tracestate", "ot=th:c")]);
    assert_eq!((report.reason, report.decided), (Reason::Parent, None));
    // R < th(d): not sampled, threshold removed.
    let (out, _) = run(config, &request("ot=th:d,a=1"));
    expect(&out, &[("x-b3-sampled", "0"), ("tracestate", "a=1")]);
}

const FORCE_CONFIG: &str = r#"{"sampling": {"probability": 0, "trust_incoming": false,
    "force": {"header": "x-tracebridge-force", "keys": {"ops": "0123456789abcdef-secret"}, "max_per_second": 1}}}"#;

fn force_budget() -> LocalBudget {
    LocalBudget {
        state: BudgetState::default(),
        limits: Limits {
            max_sampled_per_second: None,
            max_forced_per_second: 1,
            precision: 4,
        },
    }
}

#[test]
fn a_valid_token_forces_sampling_once_per_second() {
    let token = force::sign("ops", b"0123456789abcdef-secret", NOW + 300);
    let request: Vec<(&str, &[u8])> = vec![("x-tracebridge-force", token.as_bytes()), ("b3", b"0")];
    let mut budget = force_budget();
    let (out, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut budget, NOW);
    expect(&out, &[("x-b3-sampled", "1"), ("tracestate", "ot=th:0")]);
    assert!(!out.contains_key("x-tracebridge-force"));
    assert_eq!(
        (report.reason, report.force),
        (Reason::Forced, Some(ForceOutcome::Accepted))
    );
    // The second forced request in the same second is over the limit.
    let (out, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut budget, NOW);
    expect(&out, &[("x-b3-sampled", "0")]);
    assert!(!out.contains_key("x-tracebridge-force"));
    assert_eq!(report.force, Some(ForceOutcome::OverLimit));
    // A new second, a new allowance.
    let (_, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut budget, NOW + 1);
    assert_eq!(report.force, Some(ForceOutcome::Accepted));
}

#[test]
fn bad_tokens_are_stripped_and_ignored() {
    let tokens = [
        force::sign("ops", b"0123456789abcdef-secret", NOW),
        force::sign("ops", b"another-secret-of-16-bytes", NOW + 300),
        force::sign("dev", b"0123456789abcdef-secret", NOW + 300),
        "ops.99999999999.not-a-mac".to_string(),
    ];
    for token in &tokens {
        let request: Vec<(&str, &[u8])> = vec![("x-tracebridge-force", token.as_bytes())];
        let (out, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut force_budget(), NOW);
        expect(&out, &[("x-b3-sampled", "0")]);
        assert!(!out.contains_key("x-tracebridge-force"), "{token}");
        assert_eq!(report.force, Some(ForceOutcome::Rejected), "{token}");
    }
}

#[test]
fn the_hard_limit_caps_sampled_roots_but_not_parents() {
    let config = r#"{"sampling": {"probability": 1, "max_sampled_per_second": 10}}"#;
    let mut budget = LocalBudget {
        state: BudgetState::default(),
        limits: Limits {
            max_sampled_per_second: Some(10),
            max_forced_per_second: 0,
            precision: 4,
        },
    };
    let mut reasons = Vec::new();
    for _ in 0..25 {
        let (_, report) = run_as(config, &[], LOOPBACK, &mut budget, NOW);
        reasons.push(report.reason);
    }
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == Reason::Probability)
            .count(),
        20
    );
    assert_eq!(reasons.iter().filter(|r| **r == Reason::Capped).count(), 5);
    // A trusted sampled parent is continued however busy the second is.
    let (out, report) = run_as(
        config,
        &text(&[("traceparent", TRACEPARENT)]),
        LOOPBACK,
        &mut budget,
        NOW,
    );
    assert_eq!(report.reason, Reason::Parent);
    assert_eq!(out["traceparent"], vec![TRACEPARENT.to_string()]);
}

// ---- An untrusted caller's trace id, kept (sampling.keep_trace_id_from) ----

/// An untrusted edge that keeps a load balancer's trace id; p = 0.25 is `th:c` (OpenTelemetry
/// specification, the 1-in-4 row of the threshold table), so R >= 0xc0000000000000 samples.
const KEEP_ID: &str = r#"{"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"],
    "sampling": {"trust_incoming": false, "probability": 0.25,
        "keep_trace_id_from": ["xray", "cloudtrace"]}}"#;

/// An ALB's Root without Parent, with a chosen id (low 56 bits all ones: sampled at every
/// probability if the id were the randomness) and a forged `Sampled=1`.
const ALB_FORGED: &str =
    "Root=1-5759e988-bd862e3fffffffffffffffff;Sampled=1;Self=1-5759e988-1234;Lineage=a:1";
const ALB_TRACE: &str = "5759e988bd862e3fffffffffffffffff";

/// The Stream's first 15 bytes are one draw: span id 0xabababababababab, then
/// rv = 0xababababcdcdcd (below th:c, above th:8).
const ADOPTED_SPAN: &str = "abababababababab";
const ADOPTED_RV: &str = "ababababcdcdcd";

#[test]
fn an_untrusted_albs_trace_id_is_kept_with_fresh_randomness() {
    let request = text(&[
        ("x-amzn-trace-id", ALB_FORGED),
        // a forged W3C context of another trace, with forged explicit randomness
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-03",
        ),
        ("tracestate", "ot=th:0;rv:ffffffffffffff,evil=1"),
        ("x-b3-flags", "1"),
    ]);
    // R = rv = 0xababababcdcdcd < T = 0xc0000000000000: not sampled, whatever the id says.
    let (out, report) = run(KEEP_ID, &request);
    // The spans id in Cloud Trace is unsigned decimal: 0xabababababababab.
    let want = [
        ("traceparent", format!("00-{ALB_TRACE}-{ADOPTED_SPAN}-00")),
        ("tracestate", format!("ot=rv:{ADOPTED_RV}")),
        ("b3", format!("{ALB_TRACE}-{ADOPTED_SPAN}-0")),
        ("x-b3-traceid", ALB_TRACE.to_string()),
        ("x-b3-spanid", ADOPTED_SPAN.to_string()),
        ("x-b3-sampled", "0".to_string()),
        (
            "x-amzn-trace-id",
            format!("Root=1-5759e988-bd862e3fffffffffffffffff;Parent={ADOPTED_SPAN};Sampled=0"),
        ),
        (
            "x-cloud-trace-context",
            format!("{ALB_TRACE}/12370169555311111083;o=0"),
        ),
    ];
    let want: Vec<(&str, &str)> = want.iter().map(|(n, v)| (*n, v.as_str())).collect();
    expect(&out, &want);
    assert!(!out.contains_key("x-b3-flags"), "{out:#?}");
    assert_eq!(report.reason, Reason::AdoptedTraceId);
    assert_eq!(report.source, Some(Format::XRay));
    assert!(report.untrusted && !report.trace_started);
    assert_eq!(report.decided, Some(false));

    // At p = 0.5 (th:8) the same randomness samples, and th travels beside rv.
    let half = KEEP_ID.replace("0.25", "0.5");
    let (out, report) = run(&half, &request);
    expect(
        &out,
        &[
            ("traceparent", &format!("00-{ALB_TRACE}-{ADOPTED_SPAN}-01")),
            ("tracestate", &format!("ot=th:8;rv:{ADOPTED_RV}")),
            (
                "x-amzn-trace-id",
                &format!(
                    "Root=1-5759e988-bd862e3fffffffffffffffff;Parent={ADOPTED_SPAN};Sampled=1"
                ),
            ),
        ],
    );
    assert_eq!(report.decided, Some(true));
}

#[test]
fn an_untrusted_google_load_balancers_trace_id_is_kept() {
    // GCLB's form: TRACE_ID/SPAN_ID;o=OPTIONS (Google Cloud, "Trace context"); the caller's span
    // and its forced o=1 are dropped.
    let request = text(&[(
        "x-cloud-trace-context",
        "105445aa7843bc8bf206b12000100000/1;o=1",
    )]);
    let (out, report) = run(KEEP_ID, &request);
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-105445aa7843bc8bf206b12000100000-abababababababab-00",
            ),
            ("tracestate", "ot=rv:ababababcdcdcd"),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/12370169555311111083;o=0",
            ),
        ],
    );
    assert_eq!(
        (report.reason, report.source),
        (Reason::AdoptedTraceId, Some(Format::CloudTrace))
    );
    // traceparent is not listed: alone, it still restarts the trace.
    let (out, report) = run(KEEP_ID, &text(&[("traceparent", TRACEPARENT)]));
    expect(
        &out,
        &[(
            "traceparent",
            "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-02",
        )],
    );
    assert_eq!(report.reason, Reason::UntrustedRestart);
}

/// OpenTelemetry "TraceState: Probability Sampling": R is `rv` when present, so a later hop that
/// decides a context without a decision uses the edge's randomness, not the id's bits; a higher
/// probability samples a superset. A hop that reads only a format without `tracestate` (here
/// X-Ray) has no `rv` and falls back to the id's low 56 bits (README, "Sampling at the edge").
#[test]
fn a_deferred_decision_downstream_is_made_with_the_edges_rv() {
    let (edge_out, _) = run(KEEP_ID, &text(&[("x-amzn-trace-id", ALB_FORGED)]));
    // Something between the hops dropped X-Ray's Sampled: the decision is deferred.
    let deferred = format!("Root=1-5759e988-bd862e3fffffffffffffffff;Parent={ADOPTED_SPAN}");
    let traceparent = edge_out["traceparent"][0].clone();
    let tracestate = edge_out["tracestate"][0].clone();
    let request: Vec<(&str, &[u8])> = vec![
        ("x-amzn-trace-id", deferred.as_bytes()),
        ("traceparent", traceparent.as_bytes()),
        ("tracestate", tracestate.as_bytes()),
    ];
    // rv = 0xababababcdcdcd: T(0.25) = c0.. rejects it, T(0.5) = 80.. and T(0.75) = 40.. keep it.
    let mut sampled_at = Vec::new();
    for p in ["0.25", "0.5", "0.75"] {
        let config = format!(
            r#"{{"extract": ["xray", "tracecontext"], "sampling": {{"probability": {p}}}}}"#
        );
        let (out, report) = run(&config, &request);
        assert_eq!(report.reason, Reason::Probability, "p {p}");
        let sampled = out["x-amzn-trace-id"][0].ends_with("Sampled=1");
        sampled_at.push(sampled);
        // rv travels on unchanged (specification: "the identical rv value must be set").
        assert!(
            out["tracestate"][0].contains(&format!("rv:{ADOPTED_RV}")),
            "{out:#?}"
        );
    }
    assert_eq!(sampled_at, [false, true, true]);
    // Reading X-Ray only, the same deferred context is decided by the id: ff.. samples at 0.25.
    let config = r#"{"extract": ["xray"], "sampling": {"probability": 0.25}}"#;
    let (out, _) = run(config, &[("x-amzn-trace-id", deferred.as_bytes())]);
    assert!(out["x-amzn-trace-id"][0].ends_with("Sampled=1"), "{out:#?}");
}

#[test]
fn a_valid_token_makes_an_untrusted_caller_trusted() {
    // FORCE_CONFIG: an untrusted edge at p = 0, one forced trace per second; trust_context is
    // left at its default (true).
    let token = force::sign("ops", b"0123456789abcdef-secret", NOW + 300);
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let request: Vec<(&str, &[u8])> = vec![
        ("traceparent", unsampled.as_bytes()),
        ("x-tracebridge-force", token.as_bytes()),
        (
            "uber-trace-id",
            b"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
        ),
    ];
    let mut budget = force_budget();
    let (out, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut budget, NOW);
    // The caller's trace id and span id, sampled with th:0 (README, "Forcing a trace").
    expect(
        &out,
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "ot=th:0"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ],
    );
    // A trusted caller's other formats pass on as they came.
    expect(
        &out,
        &[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
        )],
    );
    assert!(!out.contains_key("x-tracebridge-force"));
    assert_eq!(
        (report.reason, report.force, report.untrusted),
        (Reason::Forced, Some(ForceOutcome::Accepted), false)
    );
    // Over the limit in the same second: untrusted as without a token, so restarted.
    let (out, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut budget, NOW);
    expect(
        &out,
        &[(
            "traceparent",
            "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-02",
        )],
    );
    assert!(!out.contains_key("uber-trace-id"));
    assert_eq!(
        (report.reason, report.force, report.untrusted),
        (
            Reason::UntrustedRestart,
            Some(ForceOutcome::OverLimit),
            true
        )
    );
    // An expired token: the same, counted as rejected.
    let expired = force::sign("ops", b"0123456789abcdef-secret", NOW);
    let request: Vec<(&str, &[u8])> = vec![
        ("traceparent", unsampled.as_bytes()),
        ("x-tracebridge-force", expired.as_bytes()),
    ];
    let (_, report) = run_as(FORCE_CONFIG, &request, LOOPBACK, &mut force_budget(), NOW);
    assert_eq!(
        (report.reason, report.force, report.untrusted),
        (Reason::UntrustedRestart, Some(ForceOutcome::Rejected), true)
    );
}

#[test]
fn with_trust_context_false_a_valid_token_forces_a_restarted_trace() {
    let config = FORCE_CONFIG.replace(
        r#""max_per_second": 1"#,
        r#""max_per_second": 1, "trust_context": false"#,
    );
    assert_ne!(config, FORCE_CONFIG);
    let token = force::sign("ops", b"0123456789abcdef-secret", NOW + 300);
    let request: Vec<(&str, &[u8])> = vec![
        ("traceparent", TRACEPARENT.as_bytes()),
        ("x-tracebridge-force", token.as_bytes()),
    ];
    let (out, report) = run_as(&config, &request, LOOPBACK, &mut force_budget(), NOW);
    expect(
        &out,
        &[
            (
                "traceparent",
                "00-6b063027abababababababababababab-cdcdcdcdcdcdcdcd-03",
            ),
            ("tracestate", "ot=th:0"),
        ],
    );
    assert_eq!(
        (report.reason, report.force, report.untrusted),
        (Reason::Forced, Some(ForceOutcome::Accepted), true)
    );
}

// ---- Baggage ----

const BAGGAGE_ALL: &str =
    r#"{"extract": ["tracecontext", "baggage"], "inject": ["tracecontext", "baggage"]}"#;

#[test]
fn baggage_spellings_merge_and_are_written_in_each() {
    let request = text(&[
        ("traceparent", TRACEPARENT),
        ("baggage", "tenant=acme,note=a%20b"),
        ("uberctx-plan", "gold"),
        ("ot-baggage-tenant", "ignored-w3c-wins"),
    ]);
    let (out, report) = run(BAGGAGE_ALL, &request);
    expect(
        &out,
        &[
            ("baggage", "tenant=acme,note=a%20b,plan=gold"),
            ("uberctx-tenant", "acme"),
            ("uberctx-note", "a%20b"),
            ("uberctx-plan", "gold"),
            ("ot-baggage-tenant", "acme"),
            ("ot-baggage-note", "a%20b"),
            ("ot-baggage-plan", "gold"),
        ],
    );
    assert_eq!(report.baggage.entries, 3);
}

#[test]
fn baggage_spellings_are_configurable() {
    let config =
        r#"{"extract": ["baggage"], "inject": ["baggage"], "baggage": {"spellings": ["jaeger"]}}"#;
    let (out, _) = run(config, &text(&[("baggage", "k=v"), ("ot-baggage-x", "y")]));
    expect(
        &out,
        &[
            ("uberctx-k", "v"),
            ("uberctx-x", "y"),
            ("baggage", "k=v"),
            ("ot-baggage-x", "y"),
        ],
    );
}

#[test]
fn untrusted_baggage_never_travels() {
    let config =
        r#"{"extract": ["baggage"], "inject": ["baggage"], "sampling": {"trust_incoming": false}}"#;
    let (out, _) = run(
        config,
        &text(&[
            ("baggage", "k=v"),
            ("uberctx-a", "1"),
            ("ot-baggage-b", "2"),
        ]),
    );
    for gone in ["baggage", "uberctx-a", "ot-baggage-b"] {
        assert!(!out.contains_key(gone), "{gone}");
    }
}

#[test]
fn baggage_is_left_alone_unless_configured() {
    let (out, report) = run(
        "{}",
        &text(&[("baggage", "not a list"), ("uberctx-a", "1")]),
    );
    expect(&out, &[("baggage", "not a list"), ("uberctx-a", "1")]);
    assert!(!report.baggage.invalid);
}
