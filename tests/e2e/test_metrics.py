"""The filter's counters, as Envoy's admin interface shows them."""

import pytest

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
    before = proxy.envoy.stats()
    before_prom = proxy.envoy.prometheus()
    for _ in range(3):
        proxy.send(headers)
    after = proxy.envoy.stats()
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
