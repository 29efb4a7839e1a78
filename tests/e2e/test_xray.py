"""AWS X-Ray in: X-Amzn-Trace-Id (default config, p = 0.01)."""

import pytest

import expect

ROOT = "Root=1-5759e988-bd862e3fe1be46a994272793"
TRACE = "5759e988bd862e3fe1be46a994272793"
SPAN = "53995c3f42cd8ad8"  # == 6023947403358210776
XRAY = f"{ROOT};Parent={SPAN};Sampled=1"


def translated(sampled: str, xray: str):
    return {
        "traceparent": [f"00-{TRACE}-{SPAN}-0{sampled}"],
        "x-b3-traceid": [TRACE],
        "x-b3-spanid": [SPAN],
        "x-b3-sampled": [sampled],
        "x-amzn-trace-id": [xray],
        "x-cloud-trace-context": [f"{TRACE}/6023947403358210776;o={sampled}"],
    }


@pytest.mark.parametrize(
    "value, sampled",
    [
        (XRAY, "1"),
        (f"{ROOT};Parent={SPAN};Sampled=0", "0"),
        (f"Parent={SPAN};{ROOT};Sampled=1", "1"),  # any field order
        (f"Self=1-67891234-12456789abcdef012345678;{ROOT};Parent={SPAN};Sampled=1", "1"),
        (f"{ROOT};Parent={SPAN};Sampled=1;Lineage=a87bd80c:1|68fd508a:5;Custom=x", "1"),
    ],
    ids=["sampled", "not-sampled", "field-order", "with-self", "with-lineage"],
)
def test_xray_matching_context_left_untouched(proxy, value, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", value)])
    assert got.trace() == translated(sampled, value)
    assert delta == {"tracebridge.extracted.xray": 1}


@pytest.mark.parametrize(
    "value",
    [f"{ROOT}; Parent={SPAN} ;Sampled=1", f"{ROOT};Parent={SPAN};Sampled=1;"],
    ids=["spaces", "trailing-semicolon"],
)
def test_xray_matching_context_in_a_loose_form_is_rewritten(proxy, value):
    # Read as the AWS SDK reads it (it trims), written in the form every reader takes:
    # OpenTelemetry Python's AwsXRayPropagator rejects the empty field of a trailing `;`
    # (issue 13; tests/e2e/test_conformance.py reads it back).
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", value)])
    assert got.trace() == translated("1", XRAY)
    assert delta == {"tracebridge.extracted.xray": 1}


def test_xray_upper_case_hex_accepted_and_normalised(proxy):
    value = "Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Sampled=1"
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", value)])
    assert got.trace() == translated("1", XRAY)
    assert delta == {"tracebridge.extracted.xray": 1}


@pytest.mark.parametrize(
    "sampled_field", [";Sampled=?", "", ";Sampled=2"], ids=["?", "absent", "other"]
)
def test_xray_without_decision_decided_by_formula(proxy, sampled_field):
    # low 56 bits 0xbe46a994272793 < T(0.01) = 0xfd70a3d70a3d71: not sampled
    assert not expect.decide(TRACE, 0.01)
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", f"{ROOT};Parent={SPAN}{sampled_field}")])
    assert got.trace() == translated("0", f"{ROOT};Parent={SPAN};Sampled=0")
    assert delta == {"tracebridge.extracted.xray": 1, "tracebridge.decision.not_sampled": 1}


def test_xray_root_only_gets_a_generated_span(proxy):
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", ROOT)])
    span = expect.generated_span(got, TRACE, sampled=False)
    assert span != SPAN
    assert delta == {
        "tracebridge.extracted.xray": 1,
        "tracebridge.span_generated": 1,
        "tracebridge.decision.not_sampled": 1,
    }


def test_xray_root_and_decision_without_parent(proxy):
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", f"{ROOT};Sampled=1")])
    expect.generated_span(got, TRACE, sampled=True)
    assert delta == {"tracebridge.extracted.xray": 1, "tracebridge.span_generated": 1}


def test_generated_spans_differ_between_requests(proxy):
    spans = {
        expect.generated_span(proxy.send([("X-Amzn-Trace-Id", ROOT)]), TRACE, False)
        for _ in range(20)
    }
    assert len(spans) == 20


def test_xray_other_fields_kept_after_root_parent_sampled(proxy):
    value = (
        f"Self=1-67891234-12456789abcdef012345678;{ROOT};Sampled=?;"
        "Lineage=a87bd80c:1|68fd508a:5; CalledFrom=Foo "
    )
    got = proxy.send([("X-Amzn-Trace-Id", value)])
    expect.generated_span(
        got,
        TRACE,
        sampled=False,
        xray_tail=";Self=1-67891234-12456789abcdef012345678;Lineage=a87bd80c:1|68fd508a:5;CalledFrom=Foo",
    )


def test_xray_other_fields_kept_when_only_the_decision_changes(proxy):
    value = f"{ROOT};Parent={SPAN};Lineage=a87bd80c:1|68fd508a:5;Sampled=?;k=v"
    got = proxy.send([("X-Amzn-Trace-Id", value)])
    assert got.get("x-amzn-trace-id") == (
        f"{ROOT};Parent={SPAN};Sampled=0;Lineage=a87bd80c:1|68fd508a:5;k=v"
    )


def test_xray_other_fields_dropped_when_the_trace_id_changes(proxy):
    got = proxy.send(
        [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("X-Amzn-Trace-Id", f"{ROOT};Parent={SPAN};Sampled=1;Lineage=a87bd80c:1|68fd508a:5"),
        ]
    )
    assert got.get("x-amzn-trace-id") == (
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    )


XRAY_INVALID = {
    "no-root": f"Parent={SPAN};Sampled=1",
    "lower-case-key": f"root=1-5759e988-bd862e3fe1be46a994272793;Parent={SPAN};Sampled=1",
    "version-2": f"Root=2-5759e988-bd862e3fe1be46a994272793;Parent={SPAN};Sampled=1",
    "7-hex-epoch": f"Root=1-5759e98-bd862e3fe1be46a994272793;Parent={SPAN};Sampled=1",
    "23-hex-id": f"Root=1-5759e988-bd862e3fe1be46a99427279;Parent={SPAN};Sampled=1",
    "non-hex-id": f"Root=1-5759e988-bd862e3fe1be46a99427279g;Parent={SPAN};Sampled=1",
    "15-hex-parent": f"{ROOT};Parent=53995c3f42cd8ad;Sampled=1",
    "non-hex-parent": f"{ROOT};Parent=53995c3f42cd8adz;Sampled=1",
    "oversized": f"{ROOT};Parent={SPAN};Sampled=1;Pad=" + "x" * 20000,
    "non-utf8": f"{ROOT};Parent={SPAN};Sampled=1;Foo=".encode() + b"\xc3\x28",
    "non-utf8-undecided": f"{ROOT};Parent={SPAN};Sampled=?;Foo=".encode() + b"\xc3\x28",
    "garbage": "hello",
}


@pytest.mark.parametrize("value", XRAY_INVALID.values(), ids=XRAY_INVALID.keys())
def test_invalid_xray_starts_new_trace(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("X-Amzn-Trace-Id", value), ("x-keep", "yes")])
    _, _, sampled = expect.new_trace(got, not_trace=TRACE)
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert expect.without(delta, "tracebridge.span_generated") == {
        "tracebridge.invalid.xray": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }
