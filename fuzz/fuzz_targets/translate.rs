//! The whole translation on arbitrary header sets. The input's first line chooses the
//! configuration (its bytes' bits: which formats are injected, the extraction order, trust,
//! probability, kept trace ids, force tokens, rules, baggage spellings); the other lines are the
//! request's `name: value` headers. Invariant: every injected format reads back (through our own
//! extract of that format) as the chosen context: trace id, span id, sampled; a written
//! `tracestate` is a list W3C allows; and the request costs work linear in its size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::config::Config;
use tracebridge::formats::Format;
use tracebridge_fuzz::{cost_guard, header_lines, translate_and_check, CostBound};

/// The configuration the selector's bytes describe (missing bytes count as zero).
fn config_json(selector: &[u8]) -> String {
    let byte = |i: usize| selector.get(i).copied().unwrap_or(0);
    let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut inject: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| byte(0) >> i & 1 == 1)
        .map(|(_, n)| *n)
        .collect();
    if inject.is_empty() {
        inject = names.clone();
    }
    let mut extract = names.clone();
    extract.rotate_left(usize::from(byte(1) & 7));
    if byte(1) & 8 != 0 {
        extract.reverse();
    }
    let baggage = byte(1) & 16 != 0;
    if baggage {
        extract.push("baggage");
        inject.push("baggage");
    }
    let flags = byte(2);
    let probability = ["1", "0.5", "0.01", "0"][usize::from(flags & 3)];
    let mut sampling = format!(
        r#""probability": {probability}, "trust_incoming": {}"#,
        flags & 4 == 0
    );
    if flags & 8 != 0 {
        sampling.push_str(r#", "keep_trace_id_from": ["xray", "cloudtrace", "datadog"]"#);
    }
    if flags & 16 != 0 {
        sampling.push_str(
            r#", "force": {"header": "x-force-trace", "keys": {"bench": "0123456789abcdef0123"}}"#,
        );
    }
    if flags & 32 != 0 {
        sampling.push_str(
            r#", "rules": [{"match": {"path_prefix": "/checkout", "method": "POST"}, "probability": 1}, {"match": {"authority": "*.example.com", "header": {"name": "x-env", "value": "load"}}, "probability": 0.5}]"#,
        );
    }
    if flags & 64 != 0 {
        sampling.push_str(
            r#", "trusted_sources": {"cidrs": ["10.0.0.0/8"], "principals": ["spiffe://cluster.local/ns/prod/*"]}"#,
        );
    }
    let spellings: Vec<&str> = ["w3c", "jaeger", "opentracing"]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| byte(3) >> i & 1 == 1)
        .map(|(_, n)| n)
        .collect();
    let baggage_section = if baggage && !spellings.is_empty() {
        format!(r#", "baggage": {{"spellings": [{}]}}"#, list(&spellings))
    } else {
        String::new()
    };
    format!(
        r#"{{"extract": [{}], "inject": [{}], "sampling": {{{sampling}}}{baggage_section}}}"#,
        list(&extract),
        list(&inject)
    )
}

fuzz_target!(|data: &[u8]| {
    let (selector, request) = match data.iter().position(|&b| b == b'\n') {
        Some(newline) => data.split_at(newline),
        None => (data, &b""[..]),
    };
    let json = config_json(selector);
    let config = match Config::from_json(json.as_bytes()) {
        Ok(config) => config,
        Err(error) => panic!("the harness made an invalid configuration {json}: {error:?}"),
    };
    let pairs = header_lines(request);
    let principal = (selector.get(3).copied().unwrap_or(0) & 8 != 0)
        .then_some("spiffe://cluster.local/ns/prod/sa/checkout");
    let seed = selector.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
        h.rotate_left(5) ^ u64::from(b)
    });
    cost_guard(request.len(), CostBound::DEFAULT, || {
        translate_and_check(&config, &pairs, seed, principal)
    });
});
