//! The plugin configuration: any bytes are either a configuration or an error, at a cost linear
//! in their size; a configuration summarises and translates a request without panicking, and
//! every format it injects reads back as the context it chose.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebridge::config::Config;
use tracebridge_fuzz::{cost_guard, translate_and_check, CostBound, Pairs};

fuzz_target!(|data: &[u8]| {
    let parsed = cost_guard(data.len(), CostBound::DEFAULT, || Config::from_json(data));
    let Ok(config) = parsed else { return };
    let _ = config.summary();
    let request: Pairs = [
        (":path", "/checkout/cart"),
        (":method", "POST"),
        (":authority", "shop.example.com"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "tracestate",
            "rojo=00f067aa0ba902b7,ot=th:8;rv:ce929d0e0e4736",
        ),
        ("baggage", "userId=alice,serverNode=DF%2028"),
        ("x-env", "load"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    translate_and_check(
        &config,
        &request,
        7,
        Some("spiffe://cluster.local/ns/prod/sa/a"),
    );
});
