"""B3 in: the single `b3` header and the X-B3-* multi headers (default config, p = 0.01).

b3 single is not in the default inject list, so an incoming `b3` header always
stays as it came; the b3multi headers are written.
"""

import pytest

import expect

TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"  # == 16453819474850114513
PARENT = "05e3ac9a4f6e3b90"


def translated(sampled: str, *, b3multi=None, **extra):
    """Expected headers for context (TRACE, SPAN) with decision `sampled`."""
    out = {
        "traceparent": [f"00-{TRACE}-{SPAN}-0{sampled}"],
        "x-b3-traceid": [TRACE],
        "x-b3-spanid": [SPAN],
        "x-b3-sampled": [sampled],
        "x-amzn-trace-id": [
            f"Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent={SPAN};Sampled={sampled}"
        ],
        "x-cloud-trace-context": [f"{TRACE}/16453819474850114513;o={sampled}"],
    }
    if b3multi is not None:
        for k in list(out):
            if k.startswith("x-b3-"):
                del out[k]
        out.update(b3multi)
    out.update(extra)
    return out


# ---------------------------------------------------------------------------
# b3 single
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, sampled",
    [
        (f"{TRACE}-{SPAN}-1-{PARENT}", "1"),
        (f"{TRACE}-{SPAN}-1", "1"),
        (f"{TRACE}-{SPAN}-0", "0"),
        (f"{TRACE}-{SPAN}-0-{PARENT}", "0"),
    ],
    ids=["sampled-with-parent", "sampled", "not-sampled", "not-sampled-with-parent"],
)
def test_b3_single_translated(proxy, value, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("b3", value)])
    assert got.trace() == translated(sampled, b3=[value])
    assert delta == {"tracebridge.extracted.b3": 1}


def test_b3_single_debug(proxy):
    value = f"{TRACE}-{SPAN}-d"
    got = proxy.send([("b3", value)])
    assert got.trace() == {
        "b3": [value],
        "traceparent": [f"00-{TRACE}-{SPAN}-01"],
        "x-b3-traceid": [TRACE],
        "x-b3-spanid": [SPAN],
        "x-b3-flags": ["1"],
        "x-amzn-trace-id": [f"Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent={SPAN};Sampled=1"],
        "x-cloud-trace-context": [f"{TRACE}/16453819474850114513;o=1"],
    }


def test_b3_single_without_decision_sampled_by_formula(proxy):
    # low 56 bits 0xfe8b2a57d3eff7 >= T(0.01) = 0xfd70a3d70a3d71: sampled
    assert expect.decide(TRACE, 0.01)
    value = f"{TRACE}-{SPAN}"
    with proxy.counting() as delta:
        got = proxy.send([("b3", value)])
    # a sampled root decision also records its threshold: ot=th in tracestate
    assert got.trace() == translated("1", b3=[value], tracestate=["ot=th:fd70a"])
    assert delta == {"tracebridge.extracted.b3": 1, "tracebridge.decision.sampled": 1}


def test_b3_single_without_decision_not_sampled_by_formula(proxy):
    # low 56 bits 0xce929d0e0e4736 < T(0.01): not sampled
    assert not expect.decide("4bf92f3577b34da6a3ce929d0e0e4736", 0.01)
    value = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
    with proxy.counting() as delta:
        got = proxy.send([("b3", value)])
    assert got.trace() == {
        "b3": [value],
        "traceparent": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"],
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=0"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=0"],
    }
    assert delta == {"tracebridge.extracted.b3": 1, "tracebridge.decision.not_sampled": 1}


def test_b3_single_64bit_trace_id_is_left_padded(proxy):
    value = "463ac35c9f6413ad-a2fb4a1d1a96d312-1"
    got = proxy.send([("b3", value)])
    assert got.trace() == {
        "b3": [value],
        "traceparent": ["00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01"],
        "x-b3-traceid": ["0000000000000000463ac35c9f6413ad"],
        "x-b3-spanid": ["a2fb4a1d1a96d312"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-00000000-00000000463ac35c9f6413ad;Parent=a2fb4a1d1a96d312;Sampled=1"
        ],
        "x-cloud-trace-context": ["0000000000000000463ac35c9f6413ad/11744061942159299346;o=1"],
    }


@pytest.mark.parametrize("value, sampled", [("0", False), ("1", True)], ids=["deny", "accept"])
def test_b3_sampling_only_decides_the_new_trace(proxy, value, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("b3", value)])
    expect.new_trace(got, decision=sampled)
    assert got.all("b3") == [value]  # not injected: as it came
    # The decision came with the request, the filter made none.
    assert expect.without(delta, "tracebridge.span_generated", "tracebridge.extracted.b3") == {
        "tracebridge.trace_started": 1
    }


def test_b3_sampling_only_debug(proxy):
    got = proxy.send([("b3", "d")])
    # Debug implies sampled; whether the new trace also carries the debug flag
    # (x-b3-flags: 1 instead of x-b3-sampled: 1) is accepted either way.
    expect.new_trace(got, decision=True, debug_ok=True)
    assert got.all("b3") == ["d"]


B3_INVALID = {
    "upper-case": "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1",
    "31-hex-trace": "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",
    "20-hex-trace": "80f198ee56343ba864fe-e457b5a2e4d86bd1-1",
    "15-hex-span": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd-1",
    "sampling-2": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
    "sampling-true": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-true",
    "short-parent": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
    "extra-field": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
    "trailing-dash": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
    "trace-only": "80f198ee56343ba864fe8b2a57d3eff7",
    "sampling-only-true": "true",
    "sampling-only-2": "2",
    "oversized": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-" + "0" * 20000,
    "non-utf8": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-\xff",
}


@pytest.mark.parametrize("value", B3_INVALID.values(), ids=B3_INVALID.keys())
def test_invalid_b3_single_starts_new_trace(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("b3", value), ("x-keep", "yes")])
    _, _, sampled = expect.new_trace(got, not_trace=TRACE)
    raw = value if isinstance(value, bytes) else value.encode()
    assert got.raw("b3") == [raw]  # b3 is not injected: left as it came
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.invalid.b3": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }


# ---------------------------------------------------------------------------
# b3multi
# ---------------------------------------------------------------------------


def b3multi(trace=TRACE, span=SPAN, **more):
    headers = [("X-B3-TraceId", trace), ("X-B3-SpanId", span)]
    names = {"parent": "X-B3-ParentSpanId", "sampled": "X-B3-Sampled", "flags": "X-B3-Flags"}
    headers += [(names[k], v) for k, v in more.items()]
    return headers


def test_b3multi_matching_context_left_untouched(proxy):
    with proxy.counting() as delta:
        got = proxy.send(b3multi(parent=PARENT, sampled="1"))
    assert got.trace() == translated(
        "1",
        b3multi={
            "x-b3-traceid": [TRACE],
            "x-b3-spanid": [SPAN],
            "x-b3-parentspanid": [PARENT],
            "x-b3-sampled": ["1"],
        },
    )
    assert delta == {"tracebridge.extracted.b3multi": 1}


@pytest.mark.parametrize(
    "value, sampled",
    [("1", "1"), ("true", "1"), ("0", "0"), ("false", "0")],
)
def test_b3multi_sampled_values(proxy, value, sampled):
    got = proxy.send(b3multi(sampled=value))
    # The incoming b3multi headers already encode the chosen context
    # (same ids, same decision): left byte for byte.
    assert got.trace() == translated(
        sampled,
        b3multi={"x-b3-traceid": [TRACE], "x-b3-spanid": [SPAN], "x-b3-sampled": [value]},
    )


def test_b3multi_64bit_trace_id_left_untouched(proxy):
    got = proxy.send(
        [
            ("X-B3-TraceId", "463ac35c9f6413ad"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
            ("X-B3-ParentSpanId", "0020000000000001"),
            ("X-B3-Sampled", "1"),
        ]
    )
    assert got.trace() == {
        "traceparent": ["00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01"],
        "x-b3-traceid": ["463ac35c9f6413ad"],
        "x-b3-spanid": ["a2fb4a1d1a96d312"],
        "x-b3-parentspanid": ["0020000000000001"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-00000000-00000000463ac35c9f6413ad;Parent=a2fb4a1d1a96d312;Sampled=1"
        ],
        "x-cloud-trace-context": ["0000000000000000463ac35c9f6413ad/11744061942159299346;o=1"],
    }


def test_b3multi_debug_flag(proxy):
    got = proxy.send(b3multi(flags="1"))
    assert got.trace() == translated(
        "1", b3multi={"x-b3-traceid": [TRACE], "x-b3-spanid": [SPAN], "x-b3-flags": ["1"]}
    )


def test_b3multi_without_decision_is_rewritten_with_the_filters_decision(proxy):
    # No X-B3-Sampled: the filter decides (0xfe8b2a57d3eff7 >= T(0.01): sampled),
    # so the b3multi headers no longer match and are written anew, without parent.
    with proxy.counting() as delta:
        got = proxy.send(b3multi(parent=PARENT))
    assert got.trace() == translated("1", tracestate=["ot=th:fd70a"])
    assert delta == {"tracebridge.extracted.b3multi": 1, "tracebridge.decision.sampled": 1}


def test_b3multi_64bit_without_decision_is_rewritten_as_128bit(proxy):
    # low 56 bits 0x3ac35c9f6413ad < T(0.01): not sampled
    got = proxy.send([("X-B3-TraceId", "463ac35c9f6413ad"), ("X-B3-SpanId", "a2fb4a1d1a96d312")])
    assert got.trace() == {
        "traceparent": ["00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-00"],
        "x-b3-traceid": ["0000000000000000463ac35c9f6413ad"],
        "x-b3-spanid": ["a2fb4a1d1a96d312"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-00000000-00000000463ac35c9f6413ad;Parent=a2fb4a1d1a96d312;Sampled=0"
        ],
        "x-cloud-trace-context": ["0000000000000000463ac35c9f6413ad/11744061942159299346;o=0"],
    }


@pytest.mark.parametrize(
    "headers, sampled",
    [
        ([("X-B3-Sampled", "1")], True),
        ([("X-B3-Sampled", "true")], True),
        ([("X-B3-Sampled", "0")], False),
    ],
    ids=["sampled-1", "sampled-true", "sampled-0"],
)
def test_b3multi_sampling_only_decides_the_new_trace(proxy, headers, sampled):
    with proxy.counting() as delta:
        got = proxy.send(headers)
    expect.new_trace(got, decision=sampled)
    assert expect.without(delta, "tracebridge.span_generated", "tracebridge.extracted.b3multi") == {
        "tracebridge.trace_started": 1
    }


def test_b3multi_flags_only_decides_the_new_trace(proxy):
    got = proxy.send([("X-B3-Flags", "1")])
    expect.new_trace(got, decision=True, debug_ok=True)


B3MULTI_INVALID = {
    "sampled-yes": b3multi(sampled="yes"),
    "sampled-2": b3multi(sampled="2"),
    "upper-case-trace": b3multi(trace=TRACE.upper(), sampled="1"),
    "upper-case-span": b3multi(span=SPAN.upper(), sampled="1"),
    "zero-trace": b3multi(trace="0" * 32, sampled="1"),
    "zero-span": b3multi(span="0" * 16, sampled="1"),
    "20-hex-trace": b3multi(trace=TRACE[:20], sampled="1"),
    "15-hex-span": b3multi(span=SPAN[:15], sampled="1"),
    "oversized-trace": b3multi(trace=TRACE + "0" * 20000, sampled="1"),
    "non-utf8-span": b3multi(span=b"e457b5a2e4d86b\xc3\x28", sampled="1"),
}


@pytest.mark.parametrize("headers", B3MULTI_INVALID.values(), ids=B3MULTI_INVALID.keys())
def test_invalid_b3multi_starts_new_trace(proxy, headers):
    with proxy.counting() as delta:
        got = proxy.send(headers + [("x-keep", "yes")])
    _, _, sampled = expect.new_trace(got, not_trace=TRACE)
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.invalid.b3multi": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }


@pytest.mark.parametrize(
    "headers",
    [[("X-B3-TraceId", TRACE)], [("X-B3-SpanId", SPAN)]],
    ids=["trace-id-only", "span-id-only"],
)
def test_b3multi_without_both_ids_is_no_context(proxy, headers):
    with proxy.counting() as delta:
        got = proxy.send(headers)
    expect.new_trace(got, not_trace=TRACE)
    assert delta["tracebridge.trace_started"] == 1


def test_b3multi_parent_span_id_is_not_validated(proxy):
    # X-B3-ParentSpanId is ignored on input: a malformed one does not make the
    # context invalid, and never reaches another format.
    with proxy.counting() as delta:
        got = proxy.send(b3multi(parent="not-a-span-id", sampled="0"))
    expected = translated("0")
    del expected["x-b3-sampled"], expected["x-b3-traceid"], expected["x-b3-spanid"]
    assert {k: v for k, v in got.trace().items() if not k.startswith("x-b3-")} == expected
    assert got.all("x-b3-traceid") == [TRACE] and got.all("x-b3-spanid") == [SPAN]
    assert got.all("x-b3-sampled") == ["0"]
    assert delta == {"tracebridge.extracted.b3multi": 1}
