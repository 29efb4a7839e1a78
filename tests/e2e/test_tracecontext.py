"""W3C trace context in: traceparent + tracestate (default configuration, p = 0.01)."""

import pytest

import expect

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# 0x00f067aa0ba902b7 == 67667974448284343


def test_sampled_traceparent_is_translated_to_every_format(proxy):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", TP)])
    assert got.trace() == {
        "traceparent": [TP],
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"],
    }
    assert delta == {"tracebridge.extracted.tracecontext": 1}


def test_not_sampled_flag_is_carried(proxy):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", tp)])
    assert got.trace() == {
        "traceparent": [tp],
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=0"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=0"],
    }
    # The decision came with the context: the filter made none.
    assert delta == {"tracebridge.extracted.tracecontext": 1}


@pytest.mark.parametrize(
    "flags, sampled",
    [("02", "0"), ("03", "1")],
    ids=["random-not-sampled", "random-sampled"],
)
def test_random_flag_traceparent_left_untouched(proxy, flags, sampled):
    tp = f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"
    got = proxy.send([("traceparent", tp)])
    assert got.trace() == {
        "traceparent": [tp],
        "x-b3-traceid": ["0af7651916cd43dd8448eb211c80319c"],
        "x-b3-spanid": ["b7ad6b7169203331"],
        "x-b3-sampled": [sampled],
        "x-amzn-trace-id": [
            f"Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled={sampled}"
        ],
        "x-cloud-trace-context": [
            f"0af7651916cd43dd8448eb211c80319c/13235353014750950193;o={sampled}"
        ],
    }


@pytest.mark.parametrize(
    "lines",
    [
        ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"],
        ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"],  # two lines, kept as two lines
        ["rojo=00f067aa0ba902b7 ,, congo=t61rcWkgMzE,\t,x=1"],  # OWS and empty members
        [",".join(f"k{i}=v{i}" for i in range(32))],  # 32 members: the maximum
        [",".join(f"k{i}=v{i}" for i in range(16)), ",".join(f"k{i}=v{i}" for i in range(16, 32))],
    ],
    ids=["one-line", "two-lines", "ows-empty-members", "32-members", "32-members-two-lines"],
)
def test_valid_tracestate_kept_byte_for_byte(proxy, lines):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", TP)] + [("tracestate", v) for v in lines])
    assert got.all("tracestate") == lines
    assert got.all("traceparent") == [TP]
    assert got.get("x-b3-traceid") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert delta == {"tracebridge.extracted.tracecontext": 1}


@pytest.mark.parametrize(
    "lines",
    [
        [",".join(f"k{i}=v{i}" for i in range(33))],  # 33 members
        [",".join(f"k{i}=v{i}" for i in range(17)), ",".join(f"k{i}=v{i}" for i in range(17, 33))],
        # A repeated key is not invalid: its first entry is kept (test_conformance.py).
        ["rojo=1,Congo=2"],  # upper-case key
        ["rojo=1", "con go=2"],  # a space inside a key, on the second line
        ["rojo"],  # not key=value
        [b"rojo=00f067aa0ba902b7,congo=\xc3\x28"],  # not UTF-8
        ["rojo=" + "a" * 20000],  # oversized (20 KB)
    ],
    ids=[
        "33-members",
        "33-members-two-lines",
        "upper-case-key",
        "bad-key-second-line",
        "no-equals",
        "non-utf8",
        "oversized",
    ],
)
def test_invalid_tracestate_removed_but_traceparent_used(proxy, lines):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", TP)] + [("tracestate", v) for v in lines])
    assert got.all("tracestate") == []
    assert got.trace() == {
        "traceparent": [TP],
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"],
    }
    assert delta == {
        "tracebridge.extracted.tracecontext": 1,
        "tracebridge.invalid.tracestate": 1,
    }


@pytest.mark.parametrize(
    "traceparent",
    [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
    ],
    ids=["version-01", "version-cc-with-more-fields"],
)
def test_higher_version_traceparent_accepted(proxy, traceparent):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", traceparent)])
    # Whether the filter rewrites a higher-version traceparent that carries the
    # chosen context as version 00 or leaves it is not pinned by the spec.
    assert got.all("traceparent") in ([traceparent], [TP])
    assert {k: v for k, v in got.trace().items() if k != "traceparent"} == {
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"],
    }
    assert delta == {"tracebridge.extracted.tracecontext": 1}


MALFORMED = {
    "upper-case-hex": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    "zero-trace-id": "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "zero-span-id": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "version-ff": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "v00-trailing-dash": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
    "v00-extra-field": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "short-trace-id": "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    "short-span-id": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
    "one-digit-flags": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "non-hex-flags": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "non-hex-trace-id": "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "underscores": "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "higher-version-bad-tail": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    "oversized": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "a" * 20000,
    "non-utf8": b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\xc3\x28",
    "garbage": "hello",
}


@pytest.mark.parametrize("traceparent", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_traceparent_starts_new_trace(proxy, traceparent):
    with proxy.counting() as delta:
        got = proxy.send(
            [("traceparent", traceparent), ("tracestate", "rojo=00f067aa0ba902b7"), ("x-keep", "1")]
        )
    _, _, sampled = expect.new_trace(got, not_trace="4bf92f3577b34da6a3ce929d0e0e4736")
    assert got.all("x-keep") == ["1"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.invalid.tracecontext": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }


@pytest.mark.parametrize(
    "lines",
    [[TP, TP], [TP, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]],
    ids=["identical", "different"],
)
def test_two_traceparent_lines_are_invalid(proxy, lines):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", v) for v in lines] + [("tracestate", "rojo=1")])
    expect.new_trace(
        got, not_trace=("4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c")
    )
    assert delta["tracebridge.invalid.tracecontext"] == 1
    assert delta["tracebridge.trace_started"] == 1


def test_two_traceparent_lines_fall_through_to_b3multi(proxy):
    with proxy.counting() as delta:
        got = proxy.send(
            [
                ("traceparent", TP),
                ("traceparent", TP),
                ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("X-B3-SpanId", "e457b5a2e4d86bd1"),
                ("X-B3-Sampled", "0"),
            ]
        )
    assert got.trace() == {
        "traceparent": ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00"],
        "x-b3-traceid": ["80f198ee56343ba864fe8b2a57d3eff7"],
        "x-b3-spanid": ["e457b5a2e4d86bd1"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent=e457b5a2e4d86bd1;Sampled=0"
        ],
        "x-cloud-trace-context": ["80f198ee56343ba864fe8b2a57d3eff7/16453819474850114513;o=0"],
    }
    assert delta == {
        "tracebridge.invalid.tracecontext": 1,
        "tracebridge.extracted.b3multi": 1,
    }


def test_tracestate_without_traceparent_removed(proxy):
    got = proxy.send(
        [
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "1"),
        ]
    )
    assert got.all("tracestate") == []
    assert got.all("traceparent") == ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"]
