"""Jaeger: `uber-trace-id: {trace}:{span}:{parent}:{flags}` and `jaeger-debug-id`.

Expected values from the Jaeger propagation format (hex flags: 1 sampled, 2 debug;
short ids left-padded; the URL-encoded `%3A` form, rewritten with `:`; the deprecated
parent field ignored) and the README's choices (flags a
hex bit field of any length, debug only with sampled, output `{32 hex}:{16 hex}:0:{1|0|3}`,
`jaeger-debug-id` alone starts a debug trace, forcing obeys the trust settings).

Root decisions use probability 0 here, so a sampled result can only come from the
caller's flags (or its debug request).
"""

import pytest

import expect
from formats_h2 import ALL_COUNTERS, DEFAULT_INJECT, default_formats, trace_headers

CONFIG = {"inject": DEFAULT_INJECT + ["jaeger"], "sampling": {"probability": 0}}
UNTRUSTED = {
    "inject": DEFAULT_INJECT + ["jaeger"],
    "sampling": {"probability": 0, "trust_incoming": False},
}

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def proxy(proxies):
    return proxies(CONFIG)


@pytest.fixture(scope="module")
def untrusted(proxies):
    return proxies(UNTRUSTED)


# (uber-trace-id, trace, span, traceparent flags, debug)
MATCHING = {
    "sampled": (f"{T}:{S}:0:1", T, S, "01", False),
    "not-sampled": (f"{T}:{S}:0:0", T, S, "00", False),
    "debug": (f"{T}:{S}:0:3", T, S, "01", True),
    "flags-ff": (f"{T}:{S}:0:ff", T, S, "01", True),  # hex bit field: sampled + debug
    "debug-without-sampled": (f"{T}:{S}:0:2", T, S, "00", False),
    "flags-00001": (f"{T}:{S}:0:00001", T, S, "01", False),  # any length
    "unknown-bit-8-and-sampled": (f"{T}:{S}:0:9", T, S, "01", False),
    "unknown-bit-8-only": (f"{T}:{S}:0:8", T, S, "00", False),
    "parent-ignored": (f"{T}:{S}:53995c3f42cd8ad8:1", T, S, "01", False),
    "short-ids": (
        "a3ce929d0e0e4736:f067aa0ba902b7:0:1",
        "0000000000000000a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "01",
        False,
    ),
    "one-digit-ids": ("1:2:0:1", "0" * 31 + "1", "0" * 15 + "2", "01", False),
}

# Read, but not in a form every reader takes: rewritten even though the context is unchanged
# (issue 13). OpenTelemetry Python's JaegerPropagator splits on ':' only; OpenTelemetry Go,
# Java, Rust and Python skip the deprecated parent field whatever it holds, and the filter
# writes it as 0 (the README's output form).
# (uber-trace-id, trace, span, traceparent flags, debug)
REWRITTEN = {
    "url-encoded": (f"{T}%3A{S}%3A0%3A1", T, S, "01", False),
    "url-encoded-lower": (f"{T}%3a{S}%3a0%3a3", T, S, "01", True),
    "17-hex-parent": (f"{T}:{S}:100f067aa0ba902b7:1", T, S, "01", False),
    "non-hex-parent": (f"{T}:{S}:zz:1", T, S, "01", False),
    "empty-parent": (f"{T}:{S}::1", T, S, "01", False),
    "whatever-parent": (f"{T}:{S}:whatever:0", T, S, "00", False),
}


@pytest.mark.parametrize(
    "value, trace, span, flags, debug", REWRITTEN.values(), ids=REWRITTEN.keys()
)
def test_jaeger_in_rewritten(proxy, value, trace, span, flags, debug):
    with proxy.counting() as delta:
        got = proxy.send([("uber-trace-id", value)])
    state = "3" if debug else "1" if flags == "01" else "0"
    assert trace_headers(got) == {
        **default_formats(trace, span, flags, debug=debug),
        "uber-trace-id": [f"{trace}:{span}:0:{state}"],
    }
    assert delta == {"tracebridge.extracted.jaeger": 1}


@pytest.mark.parametrize("value, trace, span, flags, debug", MATCHING.values(), ids=MATCHING.keys())
def test_jaeger_in(proxy, value, trace, span, flags, debug):
    with proxy.counting() as delta:
        got = proxy.send([("uber-trace-id", value)])
    assert trace_headers(got) == {
        **default_formats(trace, span, flags, debug=debug),
        # one line that already says the chosen context: left byte for byte
        "uber-trace-id": [value],
    }
    assert delta == {"tracebridge.extracted.jaeger": 1}


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([("traceparent", f"00-{T}-{S}-01")], f"{T}:{S}:0:1"),
        ([("traceparent", f"00-{T}-{S}-00")], f"{T}:{S}:0:0"),
        ([("traceparent", f"00-{T}-{S}-03")], f"{T}:{S}:0:1"),  # the random flag is not debug
        (
            [("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-flags", "1")],
            f"{T}:{S}:0:3",
        ),
        (
            [("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1")],
            "0000000000000000463ac35c9f6413ad:a2fb4a1d1a96d312:0:1",
        ),
        (
            [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
            "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:3",
        ),
        # Cloud Trace's decimal span id 1 is 0000000000000001.
        (
            [("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1")],
            "105445aa7843bc8bf206b12000100000:0000000000000001:0:1",
        ),
    ],
    ids=[
        "sampled",
        "not-sampled",
        "random-flag",
        "b3multi-debug",
        "b3-64-bit",
        "b3-debug",
        "cloudtrace",
    ],
)
def test_jaeger_out(proxy, headers, expected):
    got = proxy.send(headers)
    assert got.all("uber-trace-id") == [expected]


def test_stale_uber_trace_id_of_another_trace_is_replaced(proxy):
    with proxy.counting() as delta:
        got = proxy.send(
            [
                ("uber-trace-id", f"{T}:{S}:0:1"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            ]
        )
    assert got.all("uber-trace-id") == [
        "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:0"
    ]
    assert delta == {"tracebridge.extracted.tracecontext": 1}


def test_short_form_is_rewritten_full_width_when_the_decision_changes(proxy):
    # traceparent (first in the default order) says not sampled for the same ids.
    got = proxy.send(
        [
            ("traceparent", "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            ("uber-trace-id", "a3ce929d0e0e4736:f067aa0ba902b7:0:1"),
        ]
    )
    assert got.all("uber-trace-id") == ["0000000000000000a3ce929d0e0e4736:00f067aa0ba902b7:0:0"]


def test_two_lines_become_one(proxy):
    got = proxy.send([("uber-trace-id", f"{T}:{S}:0:1"), ("uber-trace-id", f"{T}:{S}:0:1")])
    assert got.all("uber-trace-id") == [f"{T}:{S}:0:1"]


INVALID = {
    "three-parts": f"{T}:{S}:0",
    "five-parts": f"{T}:{S}:0:1:9",
    "zero-trace-id": f"0:{S}:0:1",
    "zero-span-id": f"{T}:0:0:1",
    "33-hex-trace": f"{T}1:{S}:0:1",
    "17-hex-span": f"{T}:1{S}:0:1",
    "upper-case": f"{T.upper()}:{S}:0:1",
    "non-hex-trace": f"{T[:-1]}g:{S}:0:1",
    "non-hex-flags": f"{T}:{S}:0:x",
    "negative-flags": f"{T}:{S}:0:-1",
    "empty-flags": f"{T}:{S}:0:",
    "empty-span": f"{T}::0:1",
    "space-inside": f"{T}: {S}:0:1",
    "mixed-separators": f"{T}%3A{S}:0:1",
    "other-escape": f"{T}%3B{S}%3B0%3B1",
    "oversized": f"{T}:{S}:0:" + "0" * 300 + "1",
    "non-utf8": f"{T}:{S}:0:1".encode() + b"\xc3\x28",
    "garbage": "hello",
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_invalid_uber_trace_id_starts_a_new_trace(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("uber-trace-id", value), ("x-keep", "yes")])
    trace, span, sampled = expect.new_trace(got, p=0, not_trace=T)
    assert not sampled
    assert got.all("uber-trace-id") == [f"{trace}:{span}:0:0"]
    assert got.all("x-keep") == ["yes"]
    assert delta == {
        "tracebridge.invalid.jaeger": 1,
        "tracebridge.trace_started": 1,
        "tracebridge.decision.not_sampled": 1,
    }


def test_trusted_debug_id_alone_starts_a_debug_trace(proxy):
    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send([("jaeger-debug-id", "my-debug-request")])
    # Sampled although the probability is 0: the caller asked for a debug trace.
    trace, span, _ = expect.new_trace(got, decision=True, debug_ok=True)
    assert got.all("x-b3-flags") == ["1"] and got.all("x-b3-sampled") == []
    assert got.all("uber-trace-id") == [f"{trace}:{span}:0:3"]
    # A trusted caller's debug id travels on (for the Jaeger clients behind).
    assert got.all("jaeger-debug-id") == ["my-debug-request"]
    assert delta.get("tracebridge.trace_started") == 1
    assert delta.get("tracebridge.reason.parent") == 1
    assert "tracebridge.decision.sampled" not in delta  # not the filter's own decision


def test_trusted_debug_flag_is_honoured(proxy):
    got = proxy.send([("uber-trace-id", f"{T}:{S}:0:3")])
    assert got.all("x-b3-flags") == ["1"]
    assert got.all("traceparent") == [f"00-{T}-{S}-01"]


# -- untrusted callers cannot force ------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("uber-trace-id", f"{T}:{S}:0:3")],
        [("uber-trace-id", f"{T}:{S}:0:ff")],
        [("jaeger-debug-id", "force-me")],
        [("uber-trace-id", f"{T}:{S}:0:1"), ("jaeger-debug-id", "force-me")],
        [("jaeger-debug-id", "force-me"), ("jaeger-debug-id", "again")],
    ],
    ids=["debug-flag", "flags-ff", "debug-id-alone", "sampled-and-debug-id", "two-debug-ids"],
)
def test_untrusted_caller_cannot_force(untrusted, headers):
    with untrusted.counting(ALL_COUNTERS) as delta:
        got = untrusted.send(headers + [("x-keep", "yes")])
    # A new trace decided at probability 0: not sampled, no debug anywhere.
    trace, span, sampled = expect.new_trace(got, p=0, not_trace=T)
    assert not sampled
    assert got.all("x-b3-flags") == []
    assert got.all("uber-trace-id") == [f"{trace}:{span}:0:0"]
    assert got.all("jaeger-debug-id") == []  # never reaches the upstream
    assert got.all("x-keep") == ["yes"]
    assert delta.get("tracebridge.untrusted") == 1
    assert delta.get("tracebridge.reason.untrusted_restart") == 1
    assert delta.get("tracebridge.decision.not_sampled") == 1
    assert "tracebridge.extracted.jaeger" not in delta
