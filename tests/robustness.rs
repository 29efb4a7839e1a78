//! Issue 10's defects, reproduced with the inputs that found them and run through the whole
//! translation: whatever is written must be read back by the filter's own strict parsers (the
//! next tracebridge hop) as the chosen context, and stay within the limits the specifications
//! set.

// Test code, where a failed expectation is a failed test: the lints that keep the filter from
// panicking (Cargo.toml, [lints]) are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use tracebridge::budget::Unlimited;
use tracebridge::config::Config;
use tracebridge::context::Extraction;
use tracebridge::formats::{tracecontext, Format};
use tracebridge::headers::{HeaderEdit, RequestHeaders};
use tracebridge::translate::{translate, FixedClock, Host, RandomSource, Translation};
use tracebridge::trust::Peer;

struct Counter(u8);

impl RandomSource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for byte in buf {
            self.0 = self.0.wrapping_add(37);
            *byte = self.0;
        }
        true
    }
}

struct Anyone;

impl Peer for Anyone {
    fn address(&mut self) -> Option<std::net::IpAddr> {
        None
    }
    fn principal(&mut self) -> Option<String> {
        None
    }
}

/// Translates `pairs` and returns the translation with the request as it leaves.
fn run(config: &str, pairs: &[(&str, String)]) -> (Translation, Vec<(String, String)>) {
    let config = Config::from_json(config.as_bytes()).unwrap();
    let headers =
        RequestHeaders::scan(pairs.iter().map(|(n, v)| (*n, v.as_bytes())), config.scan());
    let mut host = Host {
        random: &mut Counter(1),
        peer: &mut Anyone,
        budget: &mut Unlimited,
        clock: &mut FixedClock(1_800_000_000),
    };
    let translation = translate(&config, &headers, &mut host).unwrap();
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    for edit in &translation.edits {
        let name = match edit {
            HeaderEdit::Set(name, _) | HeaderEdit::Remove(name) => name.as_str().to_string(),
            HeaderEdit::RemoveCustom(name) | HeaderEdit::SetCustom(name, _) => name.clone(),
        };
        out.retain(|(n, _)| *n != name);
        if let HeaderEdit::Set(_, value) | HeaderEdit::SetCustom(_, value) = edit {
            out.push((name, value.clone()));
        }
    }
    (translation, out)
}

fn reread(out: &[(String, String)]) -> RequestHeaders<'_> {
    RequestHeaders::from_pairs(out.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

fn get<'o>(out: &'o [(String, String)], name: &str) -> Option<&'o str> {
    out.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Defect 1: a 1,024-byte `X-Amzn-Trace-Id` (the most the reader accepts) with a 975-byte
/// `Lineage`, translated with `inject: [tracecontext, xray]`, left as a 1,058-byte header the
/// reader rejects. It must leave readable, carrying the same trace.
#[test]
fn a_full_size_xray_header_leaves_readable() {
    let incoming = format!(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage={}",
        "a".repeat(975)
    );
    assert_eq!(incoming.len(), 1024);
    let config = r#"{"inject": ["tracecontext", "xray"]}"#;
    let (translation, out) = run(config, &[("x-amzn-trace-id", incoming)]);
    let written = get(&out, "x-amzn-trace-id").unwrap();
    assert!(written.len() <= 1024, "{} bytes", written.len());
    let headers = reread(&out);
    for format in [Format::XRay, Format::TraceContext] {
        let Extraction::Context(got) = format.extract(&headers) else {
            panic!("{format:?} unreadable: {out:?}");
        };
        assert_eq!(got.trace_id, translation.context.trace_id);
        assert_eq!(got.trace_id.value(), 0x5759e988bd862e3fe1be46a994272793);
    }
}

/// A parent that leaves the decision to this hop (X-Ray `Sampled=?`), with the same ids in
/// `traceparent` so that `tracestate` belongs to it: the filter decides (at probability 1)
/// and writes the threshold, `th:0`, into the caller's `tracestate`.
fn undecided_parent_with(tracestate: String) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-amzn-trace-id",
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=?"
                .to_string(),
        ),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        ("tracestate", tracestate),
    ]
}

const DECIDING: &str = r#"{"extract": ["xray", "tracecontext"], "inject": ["tracecontext"],
    "sampling": {"probability": 1}}"#;

/// Defect 2: a valid 255-byte `tracestate` line `ot=a:bbbb...` got `th:0` added, an `ot`
/// value of 257 characters (W3C allows 256, the OpenTelemetry `ot` value too). What leaves
/// must be a valid list carrying the threshold sampled with (`th:0`: probability 1).
#[test]
fn a_full_size_ot_entry_stays_valid_when_th_is_added() {
    let tracestate = format!("ot=a:{}", "b".repeat(250));
    assert_eq!(tracestate.len(), 255);
    let pairs = undecided_parent_with(tracestate);
    let (_, out) = run(DECIDING, &pairs);
    let written = get(&out, "tracestate").unwrap();
    assert!(
        tracecontext::tracestate_is_valid(&[written.as_bytes()]),
        "{written}"
    );
    let ot = tracebridge::otel_tracestate::read(&[written.as_bytes()]);
    assert_eq!(ot.th.and_then(|th| th.encode_th()).as_deref(), Some("0"));
}

/// Also defect 2: a rewritten list stays within W3C's 32 members and 512 bytes.
#[test]
fn a_rewritten_tracestate_stays_within_512_bytes_and_32_members() {
    let members: Vec<String> = (0..32)
        .map(|i| format!("vendor{i:02}={}", "x".repeat(40)))
        .collect();
    let pairs = undecided_parent_with(members.join(","));
    let (_, out) = run(DECIDING, &pairs);
    let written = get(&out, "tracestate").unwrap();
    assert!(written.len() <= 512, "{} bytes", written.len());
    assert!(written.split(',').count() <= 32);
    assert!(written.starts_with("ot=th:0,vendor00="));
    assert!(tracecontext::tracestate_is_valid(&[written.as_bytes()]));
}

/// Defect 7: one W3C header of 180 entries, written in all three spellings with the default
/// bounds (README: 64 `uberctx-`/`ot-baggage-` lines, 4096 bytes), leaves with at most those,
/// and the next hop reads back the same 180 entries (`baggage` carries them all).
#[test]
fn a_full_baggage_header_adds_a_bounded_number_of_headers_and_reads_back() {
    let sent: Vec<String> = (0..180).map(|i| format!("key{i:03}=value{i}")).collect();
    let config =
        r#"{"extract": ["tracecontext", "baggage"], "inject": ["tracecontext", "baggage"]}"#;
    let (translation, out) = run(config, &[("baggage", sent.join(","))]);
    let prefixed: Vec<&(String, String)> = out
        .iter()
        .filter(|(n, _)| n.starts_with("uberctx-") || n.starts_with("ot-baggage-"))
        .collect();
    assert_eq!(prefixed.len(), 64);
    assert!(
        prefixed
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
            <= 4096
    );
    assert!(translation.report.baggage.headers_limited);
    let mut report = tracebridge::baggage::BaggageReport::default();
    let reread = tracebridge::baggage::extract(&reread(&out), &mut report);
    let keys: Vec<String> = reread
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect();
    assert_eq!(keys, sent);
}
