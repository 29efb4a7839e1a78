"""The last conformance gaps (issue 13), through a real Envoy, read back with the reference readers.

What the upstream receives is read with OpenTelemetry's own Python propagators (pinned in
requirements.txt): W3C `TraceContextTextMapPropagator`, `B3MultiFormat`, `B3SingleFormat`,
`JaegerPropagator` and `AwsXRayPropagator`. Every id a test expects is written out from the
specification or the reference implementation named next to it; a reader's verdict on the
*incoming* value is checked too where the gap was that readers could not read what was forwarded.

Datadog has no light reader: its `dd` member of `tracestate` is compared with the format dd-trace
writes (dd-trace-go `ddtrace/tracer/textmap.go` `composeTracestate`; dd-trace-py
`ddtrace/internal/utils/http.py` `w3c_get_dd_list_member` and `w3c_tracestate_add_p`).
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from harness import Received

ALL_OUT = {"inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog"]}

# W3C test suite (w3c/trace-context test/test.py) ids.
SUITE_TRACE = "12345678901234567890123456789012"
SUITE_SPAN = "1234567890123456"


@pytest.fixture(scope="module")
def proxy(proxies):
    return proxies(ALL_OUT)


class _Headers(Getter):
    """Header lines as an HTTP server hands them to a propagator: names without case."""

    def get(self, carrier: list[tuple[str, str]], key: str) -> list[str] | None:
        values = [v for n, v in carrier if n.lower() == key.lower()]
        return values or None

    def keys(self, carrier: list[tuple[str, str]]) -> list[str]:
        return [n for n, _ in carrier]


HEADERS = _Headers()

READERS = {
    "traceparent": TraceContextTextMapPropagator(),
    "b3": B3SingleFormat(),
    "x-b3-traceid": B3MultiFormat(),
    "uber-trace-id": JaegerPropagator(),
    "x-amzn-trace-id": AwsXRayPropagator(),
}


def read(pairs: list[tuple[str, str]], header: str) -> trace.SpanContext:
    """The span context the reference reader of `header`'s format finds in `pairs`."""
    ctx = READERS[header].extract(pairs, getter=HEADERS)
    return trace.get_current_span(ctx).get_span_context()


def assert_every_reader_reads(got: Received, trace_id: int, span_id: int, sampled: bool) -> None:
    """Each format written is read by its reference reader as this one context."""
    for header in READERS:
        assert got.get(header) is not None, f"{header} was not written: {got}"
        sc = read(got.pairs, header)
        assert sc.is_valid, f"the reference reader rejects {header}: {got.get(header)!r}"
        assert (sc.trace_id, sc.span_id, sc.trace_flags.sampled) == (trace_id, span_id, sampled), (
            f"{header}: {got.get(header)!r}"
        )


# 1. A higher traceparent version is continued and written on as version 00.


@pytest.mark.parametrize(
    "incoming",
    [
        # W3C test suite, test_traceparent_version_0x_cc: exactly 55 characters.
        f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01",
        # W3C Trace Context, "Versioning of traceparent": a longer value of a higher version is
        # parsed as far as version 00 goes, with `-` at position 55 (the suite's
        # `cc-...-01-what-the-future-will-be-like`).
        f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01-what-the-future-will-be-like",
    ],
    ids=["exactly-55", "longer"],
)
def test_higher_version_is_continued_as_version_00(proxy, incoming):
    got = proxy.send([("traceparent", incoming), ("tracestate", "foo=1")])
    # "Mutating the traceparent Field": downgrade the version; nothing else changes.
    assert got.get("traceparent") == f"00-{SUITE_TRACE}-{SUITE_SPAN}-01"
    assert got.all("tracestate") == ["foo=1"]
    assert_every_reader_reads(got, int(SUITE_TRACE, 16), int(SUITE_SPAN, 16), True)


def test_higher_version_with_a_dot_at_55_starts_a_new_trace(proxy):
    # W3C test suite: `cc-...-01.what-the-future-will-be-like` is invalid.
    got = proxy.send([("traceparent", f"cc-{SUITE_TRACE}-{SUITE_SPAN}-01.what-the-future")])
    assert SUITE_TRACE not in got.get("traceparent")


# 2. Repeated tracestate keys: the list is passed on, the first entry of each key kept.


@pytest.mark.parametrize(
    "lines, want",
    [
        # The W3C test suite's test_tracestate_duplicated_keys requests. Its own tracestate
        # parser (test/tracecontext/tracestate.py) keeps the first entry of a repeated key:
        # "two behaviors are valid: Either pass on the duplicated key as-is or drop it".
        (["foo=1,foo=1"], "foo=1"),
        (["foo=1,foo=2"], "foo=1"),
        (["foo=1", "foo=1"], "foo=1"),
        (["foo=1", "foo=2"], "foo=1"),
        # W3C "Combined Header Value": one entry per key; order of the others kept.
        (["a=1,foo=1,b=2", "foo=2,c=3"], "a=1,foo=1,b=2,c=3"),
    ],
    ids=["same-value", "other-value", "two-lines", "two-lines-other-value", "with-others"],
)
def test_repeated_tracestate_key_keeps_its_first_entry(proxy, lines, want):
    tp = f"00-{SUITE_TRACE}-{SUITE_SPAN}-00"
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", tp)] + [("tracestate", line) for line in lines])
    assert got.get("traceparent") == tp
    assert got.all("tracestate") == [want]
    # Not counted as invalid: it was passed on.
    assert "tracebridge.invalid.tracestate" not in delta
    sc = read(got.pairs, "traceparent")
    # OpenTelemetry Python drops a tracestate with a repeated key whole; what we send it reads.
    assert sc.trace_state.get("foo") == "1"
    assert sc.trace_state.to_header() == want


# 3. Jaeger's deprecated parent field is ignored, whatever it holds.


@pytest.mark.parametrize(
    "incoming, trace_id, span_id, sampled",
    [
        # OpenTelemetry Rust's Jaeger propagator vector (`12345:54321:ignored_parent_span_id:3`)
        # and opentelemetry-go-contrib propagators/jaeger's "ignore parent span id" vector
        # (`...:whatever:1`); their readers, and Python's, skip the third field.
        ("12345:54321:ignored_parent_span_id:3", 0x12345, 0x54321, True),
        ("12345%3A54321%3Aignored_parent_span_id%3A3", 0x12345, 0x54321, True),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:whatever:1",
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
            True,
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:whatever:0",
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
            False,
        ),
    ],
    ids=["short-ids-debug", "url-encoded", "whatever-sampled", "whatever-not-sampled"],
)
def test_jaeger_parent_field_is_ignored(proxy, incoming, trace_id, span_id, sampled):
    with proxy.counting() as delta:
        got = proxy.send([("uber-trace-id", incoming)])
    assert delta == {"tracebridge.extracted.jaeger": 1}
    flags = "01" if sampled else "00"
    assert got.get("traceparent") == f"00-{trace_id:032x}-{span_id:016x}-{flags}"
    assert_every_reader_reads(got, trace_id, span_id, sampled)


# 4. A header left byte for byte must be in a form standard readers take.

XRAY_ROOT = "1-5759e988-bd862e3fe1be46a994272793"  # AWS X-Ray documentation's example
XRAY_TRACE = 0x5759E988BD862E3FE1BE46A994272793
XRAY_PARENT = "53995c3f42cd8ad8"


def test_xray_trailing_semicolon_is_rewritten(proxy):
    incoming = f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1;"
    # OpenTelemetry Python's AwsXRayPropagator rejects the empty field.
    assert not read([("x-amzn-trace-id", incoming)], "x-amzn-trace-id").is_valid
    got = proxy.send([("x-amzn-trace-id", incoming)])
    assert got.get("x-amzn-trace-id") == f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1"
    assert_every_reader_reads(got, XRAY_TRACE, int(XRAY_PARENT, 16), True)


def test_canonical_xray_with_extra_fields_passes_byte_for_byte(proxy):
    incoming = f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1;Lineage=a87bd80c:1|68fd508a:5"
    got = proxy.send([("x-amzn-trace-id", incoming)])
    assert got.get("x-amzn-trace-id") == incoming
    assert_every_reader_reads(got, XRAY_TRACE, int(XRAY_PARENT, 16), True)


def test_url_encoded_uber_trace_id_is_rewritten(proxy):
    incoming = "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1"
    # OpenTelemetry Python's JaegerPropagator splits on ':' only.
    assert not read([("uber-trace-id", incoming)], "uber-trace-id").is_valid
    got = proxy.send([("uber-trace-id", incoming)])
    # The Jaeger propagation format, as OpenTelemetry writes it (parent 0).
    assert got.get("uber-trace-id") == "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
    assert_every_reader_reads(got, 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)


def test_canonical_uber_trace_id_passes_byte_for_byte(proxy):
    # A 64-bit trace id and a hex parent, as Jaeger clients write them.
    incoming = "a3ce929d0e0e4736:00f067aa0ba902b7:53995c3f42cd8ad8:1"
    got = proxy.send([("uber-trace-id", incoming)])
    assert got.get("uber-trace-id") == incoming
    assert_every_reader_reads(got, 0xA3CE929D0E0E4736, 0x00F067AA0BA902B7, True)


# 5. A version-00 writer sets only the defined flag bits.


@pytest.mark.parametrize(
    "flags, written, sampled",
    [
        # W3C Trace Context "trace-flags": bits other than sampled (01) and random (02) are
        # reserved and set to zero by a version-00 sender; OpenTelemetry Go's writer masks the
        # flags to the defined bits (its reader rejects version-00 flags above 03).
        ("ff", "03", True),
        ("09", "01", True),
        ("fe", "02", False),
    ],
)
def test_reserved_flag_bits_are_cleared(proxy, flags, written, sampled):
    incoming = f"00-{SUITE_TRACE}-{SUITE_SPAN}-{flags}"
    got = proxy.send([("traceparent", incoming), ("tracestate", "foo=1")])
    assert got.get("traceparent") == f"00-{SUITE_TRACE}-{SUITE_SPAN}-{written}"
    assert got.all("tracestate") == ["foo=1"]
    assert_every_reader_reads(got, int(SUITE_TRACE, 16), int(SUITE_SPAN, 16), sampled)


def test_canonical_traceparent_passes_byte_for_byte(proxy):
    incoming = f"00-{SUITE_TRACE}-{SUITE_SPAN}-03"
    got = proxy.send([("traceparent", incoming)])
    assert got.get("traceparent") == incoming


# 6. A context from Datadog headers, written as W3C, carries dd-trace's `dd` member.

DD_TRACE = "11803532876627986230"  # 0xa3ce929d0e0e4736
DD_PARENT = "67667974448284343"  # 0x00f067aa0ba902b7


@pytest.mark.parametrize(
    "extra, flags, member",
    [
        # dd-trace: s = sampling priority, o = origin, p = the last Datadog parent as 16
        # lower-case hex digits, t.<key> = the _dd.p.<key> propagated tags.
        (
            [
                ("x-datadog-sampling-priority", "2"),
                ("x-datadog-origin", "rum"),
                ("x-datadog-tags", "_dd.p.dm=-4"),
            ],
            "01",
            "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4",
        ),
        ([("x-datadog-sampling-priority", "-1")], "00", "dd=s:-1;p:00f067aa0ba902b7"),
        # Origin encoding (dd-trace-go originRgx): `,` `;` `~` become `_`, `=` becomes `~`.
        (
            [("x-datadog-sampling-priority", "1"), ("x-datadog-origin", "a;b=c")],
            "01",
            "dd=s:1;o:a_b~c;p:00f067aa0ba902b7",
        ),
        # The 128-bit id's upper half travels in traceparent, not as t.tid.
        (
            [
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6,_dd.p.usr.id=baz64=="),
            ],
            "01",
            "dd=s:1;p:00f067aa0ba902b7;t.usr.id:baz64~~",
        ),
    ],
    ids=["user-keep-origin-tags", "user-reject", "origin-encoding", "128-bit"],
)
def test_datadog_context_carries_the_dd_member(proxy, extra, flags, member):
    headers = [("x-datadog-trace-id", DD_TRACE), ("x-datadog-parent-id", DD_PARENT)] + extra
    got = proxy.send(headers)
    high = "4bf92f3577b34da6" if any("_dd.p.tid" in v for _, v in extra) else "0" * 16
    tp = f"00-{high}a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"
    assert got.get("traceparent") == tp
    assert got.all("tracestate") == [member]
    sc = read(got.pairs, "traceparent")
    assert sc.is_valid
    assert sc.trace_state.get("dd") == member[len("dd=") :]


def test_datadog_member_replaces_an_older_one_and_keeps_the_others(proxies):
    # Datadog first, as dd-trace's default extraction order `datadog,tracecontext`.
    proxy = proxies({"extract": ["datadog", "tracecontext"], "inject": ALL_OUT["inject"]})
    # dd-trace writes its member first and drops its old one (composeTracestate skips `dd=`);
    # the traceparent of the same trace brought the list.
    got = proxy.send(
        [
            ("x-datadog-trace-id", DD_TRACE),
            ("x-datadog-parent-id", DD_PARENT),
            ("x-datadog-sampling-priority", "1"),
            ("traceparent", "00-0000000000000000a3ce929d0e0e4736-1111111111111111-01"),
            ("tracestate", "foo=1,dd=s:0;p:1111111111111111,bar=2"),
        ]
    )
    assert got.get("traceparent") == "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert got.all("tracestate") == ["dd=s:1;p:00f067aa0ba902b7,foo=1,bar=2"]


def test_existing_dd_member_is_kept_when_the_context_is_not_datadogs(proxy):
    # The system-tests' W3C vector; W3C: "Vendors SHOULD NOT delete keys that were not
    # generated by them."
    tp = f"00-{SUITE_TRACE}-{SUITE_SPAN}-01"
    ts = "key1=value1,dd=s:2;o:rum;p:0123456789abcdef;t.dm:-4;t.usr.id:12345~"
    got = proxy.send([("traceparent", tp), ("tracestate", ts)])
    assert got.get("traceparent") == tp
    assert got.all("tracestate") == [ts]
