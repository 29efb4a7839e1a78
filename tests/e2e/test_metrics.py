"""The filter's counters, as Envoy's admin interface shows them."""

import json
import time

import pytest
from harness import METRIC_PREFIX, Proxy

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def prom_value(samples: dict, name: str) -> float:
    for key in (name, name + "{}"):
        if key in samples:
            return samples[key]
    return 0.0


# One request each, and exactly what it must count (default configuration).
CASES = {
    "extracted-tracecontext": ([("traceparent", TP)], {"extracted.tracecontext": 1}),
    "extracted-b3": (
        [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        {"extracted.b3": 1},
    ),
    "extracted-b3multi": (
        [
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ],
        {"extracted.b3multi": 1},
    ),
    "extracted-xray": (
        [
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )
        ],
        {"extracted.xray": 1},
    ),
    "extracted-cloudtrace": (
        [("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1")],
        {"extracted.cloudtrace": 1},
    ),
    "span-generated": (
        [("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000;o=1")],
        {"extracted.cloudtrace": 1, "span_generated": 1},
    ),
    "decision-sampled": (
        # low 56 bits 0xfe8b2a57d3eff7 >= T(0.01)
        [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
        {"extracted.b3": 1, "decision.sampled": 1},
    ),
    "decision-not-sampled": (
        [("b3", "80f198ee56343ba864fd000000000000-e457b5a2e4d86bd1")],
        {"extracted.b3": 1, "decision.not_sampled": 1},
    ),
    "invalid-tracestate": (
        [("traceparent", TP), ("tracestate", "a=1,A=2")],
        {"extracted.tracecontext": 1, "invalid.tracestate": 1},
    ),
    "invalid-tracecontext-then-b3": (
        [
            ("traceparent", TP.upper()),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ],
        {"invalid.tracecontext": 1, "extracted.b3": 1},
    ),
    "invalid-b3-then-b3multi": (
        [
            ("b3", "nope"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
        {"invalid.b3": 1, "extracted.b3multi": 1},
    ),
    "invalid-b3multi-then-xray": (
        [
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "maybe"),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            ),
        ],
        {"invalid.b3multi": 1, "extracted.xray": 1},
    ),
    "invalid-xray-then-cloudtrace": (
        [
            ("x-amzn-trace-id", "Root=1-5759e988"),
            ("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1"),
        ],
        {"invalid.xray": 1, "extracted.cloudtrace": 1},
    ),
    "every-format-invalid": (
        [
            ("traceparent", "00-xyz"),
            ("b3", "xyz"),
            ("x-b3-traceid", "xyz"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-amzn-trace-id", "Root=xyz"),
            ("x-cloud-trace-context", "xyz"),
        ],
        {
            "invalid.tracecontext": 1,
            "invalid.b3": 1,
            "invalid.b3multi": 1,
            "invalid.xray": 1,
            "invalid.cloudtrace": 1,
            "trace_started": 1,
        },
    ),
}


@pytest.mark.parametrize("headers, expected", CASES.values(), ids=CASES.keys())
def test_counters(proxy, headers, expected):
    with proxy.counting() as delta:
        got = proxy.send(headers)
    delta = {k.removeprefix("tracebridge."): v for k, v in delta.items()}
    if "trace_started" in expected:
        # a new trace: one decision of the filter, sampled or not
        decisions = {k: delta.pop(k) for k in list(delta) if k.startswith("decision.")}
        sampled = got.get("traceparent").endswith("-03")
        assert decisions == {("decision.sampled" if sampled else "decision.not_sampled"): 1}
        delta.pop("span_generated", None)
    assert delta == expected


def test_stats_and_prometheus_names(proxy):
    headers = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]
    before = proxy.envoy.wait_metrics_flush()
    before_prom = proxy.envoy.prometheus()
    for _ in range(3):
        proxy.send(headers)
    after = proxy.envoy.wait_metrics_flush()
    after_prom = proxy.envoy.prometheus()
    name = "wasmcustom.tracebridge.extracted.b3multi"
    assert name in after, sorted(after)
    assert after[name] - before.get(name, 0) == 3
    prom = "tracebridge_extracted_b3multi"
    assert prom_value(after_prom, prom) - prom_value(before_prom, prom) == 3, sorted(
        k for k in after_prom if "tracebridge" in k
    )
    assert prom_value(after_prom, prom) == after[name]


def test_every_counter_is_exported(proxy):
    # Send one request of each kind, then every counter name must exist.
    for headers, _ in CASES.values():
        proxy.send(headers)
    names = set(proxy.counters())
    formats = ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"]
    expected = (
        {f"tracebridge.extracted.{f}" for f in formats}
        | {f"tracebridge.invalid.{f}" for f in formats + ["tracestate"]}
        | {
            "tracebridge.trace_started",
            "tracebridge.span_generated",
            "tracebridge.decision.sampled",
            "tracebridge.decision.not_sampled",
        }
    )
    assert expected <= names, sorted(expected - names)


def test_counts_reach_envoy_on_the_default_flush_interval(start_envoy):
    """Without `metrics`, a request's counts reach Envoy on the filter's tick (1 s, README
    "Metrics"): not at once, but within a few seconds."""
    envoy = start_envoy(None, metrics_flush_ms=None, concurrency=1)
    envoy.start()
    name = METRIC_PREFIX + "tracebridge.extracted.tracecontext"
    proxy = Proxy(envoy)
    try:
        proxy.send([("traceparent", TP)])
        proxy.send([("traceparent", TP)])
        deadline = time.monotonic() + 10
        seen = envoy.stats().get(name, 0)
        while seen < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = envoy.stats().get(name, 0)
        assert seen == 2, envoy.stats()
    finally:
        proxy.close()


REASON_LOG = "%REQ(:PATH)% %FILTER_STATE(wasm.tracebridge.sampling_reason:PLAIN)%\n"


@pytest.mark.parametrize(
    "config, logged",
    [
        # Not configured: no set_property, so the access log has nothing to show.
        (None, "-"),
        ({"filter_state": {"sampling_reason": True}}, "parent"),
    ],
    ids=["default-off", "configured"],
)
def test_sampling_reason_in_filter_state_only_when_configured(start_envoy, config, logged):
    envoy = start_envoy(config, access_log_format=REASON_LOG)
    envoy.start()
    proxy = Proxy(envoy)
    path = f"/reason/{time.time_ns()}"
    try:
        proxy.send([("traceparent", TP)], path=path)
    finally:
        proxy.close()
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in envoy.access_log_lines() if line.startswith(path + " ")]
        if lines:
            break
        time.sleep(0.05)
    assert [line.split(" ", 1)[1] for line in lines] == [logged], (json.dumps(config), lines)
