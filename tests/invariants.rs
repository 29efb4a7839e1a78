//! Properties that must hold for any request, checked over many generated ones: the translator
//! never panics, and whatever arrives, every injected format leaves carrying the same trace id,
//! span id and decision (re-read with the filter's own strict parsers).

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
use tracebridge::context::{Decision, Extraction};
use tracebridge::headers::{HeaderEdit, RequestHeaders};
use tracebridge::translate::{translate, FixedClock, Host, RandomSource};
use tracebridge::trust::Peer;

/// xorshift64*: deterministic, so a failure names its seed and case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl RandomSource for Rng {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for byte in buf {
            *byte = self.next() as u8;
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

const NAMES: &[&str] = &[
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
    "uber-trace-id",
    "jaeger-debug-id",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "grpc-trace-bin",
];

/// Valid values of each format, which the generator then mutates.
const SEEDS: &[&str] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "rojo=00f067aa0ba902b7,ot=th:8;rv:ce929d0e0e4736",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "463ac35c9f6413ad48485a3953bb6124",
    "a2fb4a1d1a96d312",
    "0020000000000001",
    "1",
    "1",
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?;Lineage=a:1",
    "105445aa7843bc8bf206b12000100000/1;o=1",
    "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:3",
    "debug-me",
    "3689348814741910323",
    "67667974448284343",
    "2",
    "_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6",
    "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE=",
];

fn mutate(rng: &mut Rng, value: &str) -> Vec<u8> {
    let mut bytes = value.as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes.remove(i);
            }
            2 => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, b"-;=/,:0fF \xff"[rng.below(11)]);
            }
            3 if !bytes.is_empty() => bytes.truncate(rng.below(bytes.len())),
            4 => bytes.extend_from_slice(&bytes.clone()),
            _ => {}
        }
    }
    bytes
}

const CONFIGS: &[&str] = &[
    r#"{"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"]}"#,
    r#"{"extract": ["grpctracebin", "datadog", "jaeger", "cloudtrace", "xray", "b3multi", "b3", "tracecontext"], "inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"], "sampling": {"probability": 0.5}}"#,
    r#"{"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"], "sampling": {"trust_incoming": false, "probability": 0.25}}"#,
    r#"{"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"], "sampling": {"trust_incoming": false, "probability": 0.25, "keep_trace_id_from": ["xray", "cloudtrace", "datadog"]}}"#,
];

#[test]
fn every_injected_format_carries_the_same_context() {
    let configs: Vec<Config> = CONFIGS
        .iter()
        .map(|c| Config::from_json(c.as_bytes()).unwrap())
        .collect();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut adopted = 0;
    for case in 0..20_000 {
        let mut pairs: Vec<(&str, Vec<u8>)> = Vec::new();
        for _ in 0..rng.below(8) {
            let i = rng.below(NAMES.len());
            let value = if rng.below(3) == 0 {
                SEEDS[i].as_bytes().to_vec()
            } else {
                mutate(&mut rng, SEEDS[i])
            };
            pairs.push((NAMES[i], value));
        }
        let config = &configs[case % configs.len()];
        let headers = RequestHeaders::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_slice())));
        let mut random = Rng(rng.next() | 1);
        let mut host = Host {
            random: &mut random,
            peer: &mut Anyone,
            budget: &mut Unlimited,
            clock: &mut FixedClock(1_800_000_000),
        };
        let translation = translate(config, &headers, &mut host).expect("randomness is available");

        // Apply the edits, then read every injected format back.
        let mut out: Vec<(String, Vec<u8>)> = pairs
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
                out.push((name, value.clone().into_bytes()));
            }
        }
        let reread =
            RequestHeaders::from_pairs(out.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        let want = translation.context;
        for &format in &config.inject {
            let Extraction::Context(got) = format.extract(&reread) else {
                panic!("case {case}: {format:?} unreadable after translation; in {pairs:?}, out {out:?}");
            };
            assert_eq!(got.trace_id, want.trace_id, "case {case} {format:?}");
            assert_eq!(got.span_id, Some(want.span_id), "case {case} {format:?}");
            let sampled = got.decision.map(Decision::is_sampled);
            assert_eq!(
                sampled,
                Some(want.decision.is_sampled()),
                "case {case} {format:?}"
            );
        }
        if config.sampling.trust.trust_incoming {
            continue;
        }
        // Untrusted: the caller's context is never continued, and its debug flag never survives.
        // At most its trace id is kept, from a listed format, without the random flag and with
        // fresh randomness (`rv`) in tracestate (issue 15).
        assert_ne!(want.decision, Decision::Debug, "case {case}");
        let Some(format) = translation.report.source else {
            continue;
        };
        assert!(
            config.sampling.keep_trace_id_from.contains(&format),
            "case {case}: {format:?}"
        );
        let Extraction::Context(kept) = format.extract(&headers) else {
            panic!("case {case}: the kept id's {format:?} header is not valid");
        };
        assert_eq!(kept.trace_id, want.trace_id, "case {case}");
        assert!(!want.random_trace_id, "case {case}");
        let tracestate = reread.tracestate_lines().unwrap_or_default();
        let rv = tracebridge::otel_tracestate::read(tracestate).rv;
        assert!(rv.is_some(), "case {case}: no rv in {tracestate:?}");
        adopted += 1;
    }
    // The adopting configuration met enough load balancer headers to mean something.
    assert!(adopted > 100, "only {adopted} adopted trace ids");
}
