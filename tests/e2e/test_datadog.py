"""Datadog: x-datadog-trace-id (decimal, low 64 bits), x-datadog-parent-id (decimal),
x-datadog-sampling-priority, x-datadog-tags (`_dd.p.tid` = upper 64 bits as 16 lower-case
hex digits) and x-datadog-origin.

A Datadog context written as W3C carries dd-trace's member of `tracestate` (issue 13):
`dd=s:<priority>;o:<origin>;p:<parent as 16 hex>;t.<tag>:<value>` for each `_dd.p.<tag>` but
`_dd.p.tid` (dd-trace-go ddtrace/tracer/textmap.go `composeTracestate`; dd-trace-py
ddtrace/internal/utils/http.py `w3c_get_dd_list_member`, `w3c_tracestate_add_p`).

Decimal values below were converted by hand from the hex ids of the other formats:
  0xa3ce929d0e0e4736 = 11803532876627986230   0x00f067aa0ba902b7 = 67667974448284343
  0x463ac35c9f6413ad = 5060571933882717101    0xe457b5a2e4d86bd1 = 16453819474850114513
  0xb7ad6b7169203331 = 13235353014750950193   2^64 - 1 = 18446744073709551615
  0xfffffffffffffff0 = 18446744073709551600   0x7b = 123
"""

import pytest

import expect
from formats_h2 import ALL_COUNTERS, DATADOG_HEADERS, DEFAULT_INJECT, default_formats, trace_headers

CONFIG = {"inject": DEFAULT_INJECT + ["datadog"]}  # probability 0.01
UNTRUSTED = {
    "inject": DEFAULT_INJECT + ["datadog"],
    "sampling": {"probability": 0, "trust_incoming": False},
}

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
T_LOW = "11803532876627986230"  # 0xa3ce929d0e0e4736
T_HIGH = "4bf92f3577b34da6"
S_DEC = "67667974448284343"  # 0x00f067aa0ba902b7


@pytest.fixture(scope="module")
def proxy(proxies):
    return proxies(CONFIG)


@pytest.fixture(scope="module")
def untrusted(proxies):
    return proxies(UNTRUSTED)


def dd(trace=T_LOW, parent=S_DEC, priority=None, tags=None, origin=None):
    headers = [("x-datadog-trace-id", trace)]
    if parent is not None:
        headers.append(("x-datadog-parent-id", parent))
    if priority is not None:
        headers.append(("x-datadog-sampling-priority", priority))
    if tags is not None:
        headers.append(("x-datadog-tags", tags))
    if origin is not None:
        headers.append(("x-datadog-origin", origin))
    return headers


def as_dict(headers):
    return {name: [value] for name, value in headers}


def datadog_of(got):
    return {k: v for k, v in trace_headers(got).items() if k in DATADOG_HEADERS}


# -- in ----------------------------------------------------------------------


def test_128_bit_context_through_dd_p_tid(proxy):
    headers = dd(priority="1", tags=f"_dd.p.dm=-4,_dd.p.tid={T_HIGH}", origin="rum")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    assert trace_headers(got) == {
        **default_formats(T, S, "01"),
        "tracestate": [f"dd=s:1;o:rum;p:{S};t.dm:-4"],
        **as_dict(headers),
    }
    assert delta == {"tracebridge.extracted.datadog": 1}


@pytest.mark.parametrize(
    "priority, flags",
    [("-1", "00"), ("0", "00"), ("1", "01"), ("2", "01"), ("5", "01"), ("-3", "00")],
    ids=[
        "user-reject",
        "auto-reject",
        "auto-keep",
        "user-keep",
        "other-positive",
        "other-negative",
    ],
)
def test_sampling_priority(proxy, priority, flags):
    headers = dd(priority=priority, tags=f"_dd.p.tid={T_HIGH}")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    # The Datadog headers already say the chosen context: as they came; the priority travels
    # in tracestate too.
    assert trace_headers(got) == {
        **default_formats(T, S, flags),
        "tracestate": [f"dd=s:{priority};p:{S}"],
        **as_dict(headers),
    }
    assert delta == {"tracebridge.extracted.datadog": 1}


@pytest.mark.parametrize(
    "trace, parent, trace_hex, span_hex",
    [
        ("5060571933882717101", "16453819474850114513", "463ac35c9f6413ad", "e457b5a2e4d86bd1"),
        ("18446744073709551615", "1", "ffffffffffffffff", "0000000000000001"),
        # Negative ids from older tracers: signed 64-bit reinterpreted as unsigned.
        ("-1", "-2", "ffffffffffffffff", "fffffffffffffffe"),
        ("-9223372036854775808", "-9223372036854775807", "8000000000000000", "8000000000000001"),
    ],
    ids=["64-bit", "max", "negative", "most-negative"],
)
def test_64_bit_ids(proxy, trace, parent, trace_hex, span_hex):
    headers = dd(trace=trace, parent=parent, priority="0")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    assert trace_headers(got) == {
        **default_formats("0" * 16 + trace_hex, span_hex, "00"),
        "tracestate": [f"dd=s:0;p:{span_hex}"],
        **as_dict(headers),
    }
    assert delta == {"tracebridge.extracted.datadog": 1}


@pytest.mark.parametrize(
    "tid",
    ["4BF92F3577B34DA6", "4bf92f3577b34da", "4bf92f3577b34da6a", "4bf92f3577b34dzz", ""],
    ids=["upper-case", "15-digits", "17-digits", "non-hex", "empty"],
)
def test_malformed_dd_p_tid_is_ignored(proxy, tid):
    headers = dd(priority="1", tags=f"_dd.p.tid={tid}")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    assert got.all("traceparent") == [f"00-{'0' * 16}a3ce929d0e0e4736-{S}-01"]
    assert delta == {"tracebridge.extracted.datadog": 1}


@pytest.mark.parametrize(
    "trace, trace_hex, sampled",
    [
        # R = low 56 bits of the trace id; T(0.01) = 0xfd70a3d70a3d71.
        (T_LOW, "0000000000000000a3ce929d0e0e4736", False),  # R = 0xce929d0e0e4736 < T
        ("18446744073709551600", "0000000000000000fffffffffffffff0", True),  # R = 0xfffffffffffff0
    ],
    ids=["not-sampled", "sampled"],
)
def test_without_priority_the_filter_decides(proxy, trace, trace_hex, sampled):
    assert expect.decide(trace_hex, 0.01) == sampled
    headers = dd(trace=trace, tags="_dd.p.dm=-4", origin="rum")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    flags = "01" if sampled else "00"
    assert trace_headers(got) == {
        **default_formats(trace_hex, S, flags),
        # The filter's decision as the priority; the threshold it sampled with after it.
        "tracestate": [
            f"dd=s:1;o:rum;p:{S};t.dm:-4,ot=th:fd70a" if sampled else f"dd=s:0;o:rum;p:{S};t.dm:-4"
        ],
        "x-datadog-trace-id": [trace],
        "x-datadog-parent-id": [S_DEC],
        "x-datadog-sampling-priority": ["1" if sampled else "0"],
        # the same trace: its tags and origin are kept
        "x-datadog-tags": ["_dd.p.dm=-4"],
        "x-datadog-origin": ["rum"],
    }
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert delta == {"tracebridge.extracted.datadog": 1, decision: 1}


# -- out ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        (
            [("traceparent", f"00-{T}-{S}-01")],
            {
                "x-datadog-trace-id": [T_LOW],
                "x-datadog-parent-id": [S_DEC],
                "x-datadog-sampling-priority": ["1"],
                "x-datadog-tags": [f"_dd.p.tid={T_HIGH}"],
            },
        ),
        (
            [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")],
            {
                "x-datadog-trace-id": [str(0x8448EB211C80319C)],
                "x-datadog-parent-id": ["13235353014750950193"],
                "x-datadog-sampling-priority": ["0"],
                "x-datadog-tags": ["_dd.p.tid=0af7651916cd43dd"],
            },
        ),
        (
            # 64-bit trace id: no _dd.p.tid, so no x-datadog-tags; debug is user keep (2).
            [
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-flags", "1"),
            ],
            {
                "x-datadog-trace-id": ["5060571933882717101"],
                "x-datadog-parent-id": ["16453819474850114513"],
                "x-datadog-sampling-priority": ["2"],
            },
        ),
    ],
    ids=["128-bit-sampled", "128-bit-not-sampled", "64-bit-debug"],
)
def test_datadog_out(proxy, headers, expected):
    got = proxy.send(headers)
    assert datadog_of(got) == expected


def test_same_trace_new_span_keeps_tags_and_origin(proxy):
    # traceparent wins (default order) with the same trace id but another span:
    # the Datadog headers are rewritten; the other _dd.p.* tags and the origin stay.
    headers = [("traceparent", f"00-{T}-b7ad6b7169203331-01")] + dd(
        priority="0",
        tags=f"_dd.p.dm=-4,_dd.p.usr.id=baz64,_dd.p.tid={T_HIGH}",
        origin="synthetics-browser",
    )
    got = proxy.send(headers)
    assert datadog_of(got) == {
        "x-datadog-trace-id": [T_LOW],
        "x-datadog-parent-id": ["13235353014750950193"],
        "x-datadog-sampling-priority": ["1"],
        "x-datadog-tags": [f"_dd.p.dm=-4,_dd.p.usr.id=baz64,_dd.p.tid={T_HIGH}"],
        "x-datadog-origin": ["synthetics-browser"],
    }


def test_another_trace_drops_tags_and_origin(proxy):
    headers = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")] + dd(
        priority="1", tags=f"_dd.p.dm=-4,_dd.p.tid={T_HIGH}", origin="rum"
    )
    got = proxy.send(headers)
    assert datadog_of(got) == {
        "x-datadog-trace-id": [str(0x8448EB211C80319C)],
        "x-datadog-parent-id": ["13235353014750950193"],
        "x-datadog-sampling-priority": ["1"],
        "x-datadog-tags": ["_dd.p.tid=0af7651916cd43dd"],  # the new trace's upper half only
    }


def test_another_64_bit_trace_removes_the_tags_header(proxy):
    headers = [
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ] + dd(priority="1", tags=f"_dd.p.dm=-4,_dd.p.tid={T_HIGH}", origin="rum")
    got = proxy.send(headers)
    assert datadog_of(got) == {
        "x-datadog-trace-id": ["5060571933882717101"],
        "x-datadog-parent-id": ["16453819474850114513"],
        "x-datadog-sampling-priority": ["1"],
    }


# -- parent id 0 ---------------------------------------------------------------


@pytest.mark.parametrize("parent", ["0", None], ids=["parent-0", "no-parent"])
def test_synthetics_trace_without_span_gets_a_span_and_never_parent_0(proxy, parent):
    headers = dd(trace="123", parent=parent, origin="synthetics")
    with proxy.counting() as delta:
        got = proxy.send(headers)
    trace = "0" * 30 + "7b"  # 123; R = 0x7b < T(0.01): not sampled
    span = expect.generated_span(got, trace, sampled=False)
    assert datadog_of(got) == {
        "x-datadog-trace-id": ["123"],
        "x-datadog-parent-id": [str(int(span, 16))],
        "x-datadog-sampling-priority": ["0"],
        "x-datadog-origin": ["synthetics"],
    }
    assert got.get("x-datadog-parent-id") != "0"
    assert delta == {
        "tracebridge.extracted.datadog": 1,
        "tracebridge.span_generated": 1,
        "tracebridge.decision.not_sampled": 1,
    }


# -- malformed -----------------------------------------------------------------

INVALID = {
    "hex-trace-id": dd(trace="0x33", priority="1"),
    "alnum-trace-id": dd(trace="12a", priority="1"),
    "fraction-trace-id": dd(trace="1.5", priority="1"),
    "exponent-trace-id": dd(trace="1e3", priority="1"),
    "plus-sign": dd(trace="+123", priority="1"),
    "overflow-2^64": dd(trace="18446744073709551616", priority="1"),
    "overflow-21-digits": dd(trace="100000000000000000000", priority="1"),
    "negative-overflow": dd(trace="-9223372036854775809", priority="1"),
    "trace-id-0": dd(trace="0", priority="1"),
    "non-decimal-parent": dd(parent="00f067aa0ba902b7", priority="1"),
    "overflow-parent": dd(parent="18446744073709551616", priority="1"),
    "parent-0-not-synthetics": dd(parent="0", priority="1"),
    "parent-0-other-origin": dd(parent="0", priority="1", origin="rum"),
    "no-parent": dd(parent=None, priority="1"),
    "no-trace-id": [("x-datadog-parent-id", S_DEC), ("x-datadog-sampling-priority", "1")],
    "priority-word": dd(priority="keep"),
    "priority-fraction": dd(priority="1.0"),
    "non-utf8": [
        ("x-datadog-trace-id", T_LOW.encode() + b"\xc3\x28"),
        ("x-datadog-parent-id", S_DEC),
    ],
}


@pytest.mark.parametrize("headers", INVALID.values(), ids=INVALID.keys())
def test_invalid_datadog_starts_a_new_trace(proxy, headers):
    with proxy.counting() as delta:
        got = proxy.send(headers + [("x-keep", "yes")])
    trace, span, sampled = expect.new_trace(got, not_trace=T)
    # Rewritten to the new trace: decimal low half, _dd.p.tid with the upper half
    # (new ids start with the Unix time, so it is never zero), never parent 0.
    assert datadog_of(got) == {
        "x-datadog-trace-id": [str(int(trace[16:], 16))],
        "x-datadog-parent-id": [str(int(span, 16))],
        "x-datadog-sampling-priority": ["1" if sampled else "0"],
        "x-datadog-tags": [f"_dd.p.tid={trace[:16]}"],
    }
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert delta == {
        "tracebridge.invalid.datadog": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }


# -- untrusted -----------------------------------------------------------------


def test_untrusted_caller_restarts_and_loses_priority_tags_and_origin(untrusted):
    headers = dd(priority="2", tags=f"_dd.p.dm=-4,_dd.p.tid={T_HIGH}", origin="rum")
    with untrusted.counting(ALL_COUNTERS) as delta:
        got = untrusted.send(headers)
    trace, span, sampled = expect.new_trace(got, p=0, not_trace=T)
    assert not sampled  # user keep (2) does not force a trace across the trust boundary
    assert datadog_of(got) == {
        "x-datadog-trace-id": [str(int(trace[16:], 16))],
        "x-datadog-parent-id": [str(int(span, 16))],
        "x-datadog-sampling-priority": ["0"],
        "x-datadog-tags": [f"_dd.p.tid={trace[:16]}"],
    }
    assert delta.get("tracebridge.untrusted") == 1
    assert delta.get("tracebridge.reason.untrusted_restart") == 1
    assert "tracebridge.extracted.datadog" not in delta
