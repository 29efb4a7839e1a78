"""The filter's own sampling decision: sampled iff (trace id & (2^56-1)) >= T,
T = 2^56 - round(p * 2^56)."""

import math
import os
import random

import pytest

import expect

SPAN = "e457b5a2e4d86bd1"


def decision_of(got) -> str:
    return got.get("x-b3-sampled")


# th written into tracestate by a sampled root decision (see expect.TH)
TH = {0.5: "8", 0.25: "c", 1: "0"}


@pytest.mark.parametrize(
    "p, trace, sampled",
    [
        # p = 0.5: T = 0x80000000000000
        (0.5, "a1b2c3d4e5f607182980000000000000", "1"),
        (0.5, "a1b2c3d4e5f60718297fffffffffffff", "0"),
        (0.5, "a1b2c3d4e5f6071829ffffffffffffff", "1"),
        (0.5, "ffffffffffffffffff00000000000001", "0"),
        # p = 0.25: T = 0xc0000000000000
        (0.25, "a1b2c3d4e5f6071829c0000000000000", "1"),
        (0.25, "a1b2c3d4e5f6071829bfffffffffffff", "0"),
        (0.25, "000000000000000000ffffffffffffff", "1"),
        (0.25, "ffffffffffffffffff80000000000000", "0"),  # bits above 56 do not count
        (0.25, "0123456789abcdef01d2c3b4a5968778", "1"),
        (0.25, "0123456789abcdef0134c3b4a5968778", "0"),
        # p = 1 and p = 0
        (1, "a1b2c3d4e5f60718290000000000000f", "1"),
        (1, "00000000000000010000000000000000", "1"),
        (0, "ffffffffffffffffffffffffffffffff", "0"),
        (0, "a1b2c3d4e5f6071829fffffffffffff0", "0"),
    ],
)
def test_decision_follows_the_formula(proxies, p, trace, sampled):
    assert expect.decide(trace, p) == (sampled == "1")  # the table agrees with the formula
    proxy = proxies({"sampling": {"probability": p}})
    with proxy.counting() as delta:
        got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN)])
    expected = {
        "traceparent": [f"00-{trace}-{SPAN}-0{sampled}"],
        "x-b3-traceid": [trace],
        "x-b3-spanid": [SPAN],
        "x-b3-sampled": [sampled],
        "x-amzn-trace-id": [f"Root=1-{trace[:8]}-{trace[8:]};Parent={SPAN};Sampled={sampled}"],
        "x-cloud-trace-context": [f"{trace}/16453819474850114513;o={sampled}"],
    }
    if sampled == "1":
        expected["tracestate"] = [f"ot=th:{TH[p]}"]
    assert got.trace() == expected
    decision = "sampled" if sampled == "1" else "not_sampled"
    assert delta == {"tracebridge.extracted.b3multi": 1, f"tracebridge.decision.{decision}": 1}


@pytest.mark.parametrize(
    "trace, sampled",
    [("463ac35c9f6413ad", "0"), ("4680000000000000", "1")],
)
def test_decision_on_64bit_trace_ids(proxies, trace, sampled):
    proxy = proxies({"sampling": {"probability": 0.5}})
    got = proxy.send([("b3", f"{trace}-{SPAN}")])
    assert got.all("traceparent") == [f"00-0000000000000000{trace}-{SPAN}-0{sampled}"]
    assert decision_of(got) == sampled


def test_carried_decisions_are_not_overridden(proxies):
    always = proxies({"sampling": {"probability": 1}})
    never = proxies({"sampling": {"probability": 0}})
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    with always.counting() as delta_always:
        got = always.send(
            [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]
        )
    assert decision_of(got) == "0"
    with never.counting() as delta_never:
        got = never.send([("X-Amzn-Trace-Id", xray)])
    assert decision_of(got) == "1"
    for delta in (delta_always, delta_never):
        assert not [k for k in delta if k.startswith("tracebridge.decision.")], delta


def test_random_trace_ids_statistics_and_every_decision(proxies):
    """2000 random B3 trace ids without decision at p = 0.25."""
    p, n = 0.25, 2000
    seed = int(os.environ.get("TRACEBRIDGE_TEST_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    proxy = proxies({"sampling": {"probability": p}})
    wrong = []
    sampled = 0
    with proxy.counting() as delta:
        for _ in range(n):
            trace = f"{rng.getrandbits(128):032x}"
            span = f"{rng.getrandbits(64) | 1:016x}"
            got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", span)])
            want = expect.decide(trace, p)
            d = decision_of(got)
            if d != ("1" if want else "0") or got.get("x-b3-traceid") != trace:
                wrong.append((trace, d, want))
            sampled += d == "1"
    assert not wrong, (
        f"seed {seed}: {len(wrong)} decisions differ from the formula, e.g. {wrong[:5]}"
    )
    sigma = math.sqrt(p * (1 - p) / n)
    fraction = sampled / n
    assert abs(fraction - p) <= 5 * sigma, f"seed {seed}: sampled fraction {fraction:.4f}, p={p}"
    assert delta == {
        "tracebridge.extracted.b3multi": n,
        "tracebridge.decision.sampled": sampled,
        "tracebridge.decision.not_sampled": n - sampled,
    }


def test_new_traces_follow_the_formula(proxies):
    """200 requests without any context at p = 0.5: every new trace id decides by itself."""
    p, n = 0.5, 200
    proxy = proxies({"sampling": {"probability": p}})
    traces, sampled = set(), 0
    with proxy.counting() as delta:
        for _ in range(n):
            trace, span, s = expect.new_trace(proxy.send([]), p)
            traces.add(trace)
            sampled += s
    assert len(traces) == n
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(sampled / n - p) <= 5 * sigma, f"{sampled} of {n} sampled at p={p}"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.trace_started": n,
        "tracebridge.decision.sampled": sampled,
        "tracebridge.decision.not_sampled": n - sampled,
    }


@pytest.mark.parametrize("config", ["", "{}"], ids=["empty-string", "empty-object"])
def test_empty_configuration_means_defaults(proxies, config):
    proxy = proxies(config)
    # p = 0.01: T = 0xfd70a3d70a3d71 (0xfd70a000000000 at the default precision)
    # low 56 bits: 0xfe8b2a57d3eff7 (above), 0xfd000000000000 (below)
    hi = proxy.send([("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")])
    lo = proxy.send([("b3", "80f198ee56343ba864fd000000000000-e457b5a2e4d86bd1")])
    assert (decision_of(hi), decision_of(lo)) == ("1", "0")
    # default inject: tracecontext, b3multi, xray, cloudtrace (b3 single not written)
    assert hi.trace() == {
        "b3": ["80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"],
        "traceparent": ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"],
        "tracestate": ["ot=th:fd70a"],
        "x-b3-traceid": ["80f198ee56343ba864fe8b2a57d3eff7"],
        "x-b3-spanid": ["e457b5a2e4d86bd1"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent=e457b5a2e4d86bd1;Sampled=1"
        ],
        "x-cloud-trace-context": ["80f198ee56343ba864fe8b2a57d3eff7/16453819474850114513;o=1"],
    }
    # default extract order: tracecontext before b3
    both = proxy.send(
        [
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        ]
    )
    assert both.get("x-b3-traceid") == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "low56, sampled",
    [("fd70a3d70a3d71", "1"), ("fd70a3d70a3d70", "0"), ("fd70a000000000", "0")],
    ids=["T", "T-1", "T-rounded-to-4-digits"],
)
def test_exact_threshold_at_full_precision(proxies, low56, sampled):
    """p = 0.01, T = 2^56 - round(0.01 * 2^56) = 0xfd70a3d70a3d71 exactly.

    The default `sampling.precision` (4 hex digits) rounds T to 0xfd70a000000000;
    with 14 digits the threshold is the exact one.
    """
    proxy = proxies({"sampling": {"probability": 0.01, "precision": 14}})
    trace = "80f198ee56343ba864" + low56
    assert expect.decide(trace, 0.01) == (sampled == "1")
    got = proxy.send([("b3", f"{trace}-e457b5a2e4d86bd1")])
    assert decision_of(got) == sampled
