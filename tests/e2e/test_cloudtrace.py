"""Google Cloud Trace in: X-Cloud-Trace-Context (default config, p = 0.01)."""

import pytest

import expect

TRACE = "105445aa7843bc8bf206b12000100000"


def test_example_from_the_specification(proxy):
    value = "105445aa7843bc8bf206b12000100000/1;o=1"
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", value)])
    assert got.trace() == {
        "traceparent": ["00-105445aa7843bc8bf206b12000100000-0000000000000001-01"],
        "x-b3-traceid": ["105445aa7843bc8bf206b12000100000"],
        "x-b3-spanid": ["0000000000000001"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-105445aa-7843bc8bf206b12000100000;Parent=0000000000000001;Sampled=1"
        ],
        "x-cloud-trace-context": [value],
    }
    assert delta == {"tracebridge.extracted.cloudtrace": 1}


@pytest.mark.parametrize(
    "span_dec, span_hex",
    [
        ("18446744073709551615", "ffffffffffffffff"),  # 2^64 - 1
        ("12345678901234567890", "ab54a98ceb1f0ad2"),
        ("6023947403358210776", "53995c3f42cd8ad8"),
    ],
)
def test_decimal_span_ids(proxy, span_dec, span_hex):
    value = f"{TRACE}/{span_dec};o=0"
    got = proxy.send([("X-Cloud-Trace-Context", value)])
    assert got.trace() == {
        "traceparent": [f"00-{TRACE}-{span_hex}-00"],
        "x-b3-traceid": [TRACE],
        "x-b3-spanid": [span_hex],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            f"Root=1-105445aa-7843bc8bf206b12000100000;Parent={span_hex};Sampled=0"
        ],
        "x-cloud-trace-context": [value],
    }


@pytest.mark.parametrize(
    "options, sampled",
    [(";o=1", True), (";o=0", False), (";o=3", True), (";o=2", False)],
    ids=["o=1", "o=0", "o=3", "o=2"],
)
def test_options_bit_0_is_the_decision(proxy, options, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", f"{TRACE}/1{options}")])
    flag = "01" if sampled else "00"
    assert got.all("traceparent") == [f"00-{TRACE}-0000000000000001-{flag}"]
    assert got.all("x-b3-sampled") == ["1" if sampled else "0"]
    assert delta == {"tracebridge.extracted.cloudtrace": 1}


def test_without_options_the_filter_decides(proxy):
    # low 56 bits 0x06b12000100000 < T(0.01): not sampled
    assert not expect.decide(TRACE, 0.01)
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", f"{TRACE}/1")])
    assert got.trace() == {
        "traceparent": ["00-105445aa7843bc8bf206b12000100000-0000000000000001-00"],
        "x-b3-traceid": ["105445aa7843bc8bf206b12000100000"],
        "x-b3-spanid": ["0000000000000001"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-105445aa-7843bc8bf206b12000100000;Parent=0000000000000001;Sampled=0"
        ],
        "x-cloud-trace-context": ["105445aa7843bc8bf206b12000100000/1;o=0"],
    }
    assert delta == {
        "tracebridge.extracted.cloudtrace": 1,
        "tracebridge.decision.not_sampled": 1,
    }


@pytest.mark.parametrize(
    "value, sampled",
    [(f"{TRACE}/0;o=1", True), (f"{TRACE};o=1", True), (f"{TRACE};o=0", False)],
    ids=["span-0", "no-span", "no-span-not-sampled"],
)
def test_context_without_span_gets_a_generated_one(proxy, value, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", value)])
    expect.generated_span(got, TRACE, sampled=sampled)
    assert delta == {"tracebridge.extracted.cloudtrace": 1, "tracebridge.span_generated": 1}


def test_trace_id_only_gets_span_and_decision(proxy):
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", TRACE)])
    expect.generated_span(got, TRACE, sampled=False)
    assert delta == {
        "tracebridge.extracted.cloudtrace": 1,
        "tracebridge.span_generated": 1,
        "tracebridge.decision.not_sampled": 1,
    }


CLOUD_INVALID = {
    "upper-case": "105445AA7843BC8BF206B12000100000/1;o=1",
    "31-hex-trace": "105445aa7843bc8bf206b1200010000/1;o=1",
    "span-2^64": f"{TRACE}/18446744073709551616;o=1",
    "span-21-digits": f"{TRACE}/000000000000000000001;o=1",
    "hex-span": f"{TRACE}/abc;o=1",
    "negative-span": f"{TRACE}/-1;o=1",
    "options-not-decimal": f"{TRACE}/1;o=true",
    "oversized": f"{TRACE}/1;o=1" + ";" + "x" * 20000,
    "non-utf8": f"{TRACE}/1;o=".encode() + b"\xff",
    "garbage": "hello",
}


@pytest.mark.parametrize("value", CLOUD_INVALID.values(), ids=CLOUD_INVALID.keys())
def test_invalid_cloudtrace_starts_new_trace(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("X-Cloud-Trace-Context", value), ("x-keep", "yes")])
    _, _, sampled = expect.new_trace(got, not_trace=TRACE)
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.invalid.cloudtrace": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }
