"""jaeger, datadog and grpctracebin together with the first five formats: the default
extract order (`tracecontext, b3, b3multi, xray, cloudtrace, jaeger, datadog,
grpctracebin`), conflicts, fall-through past invalid headers, a custom order, the
defaults of `{}`, and untrusted callers.

Every input below is written in its format's canonical encoding, so a format that wins
is left as it came and equals what the filter would write for that context: the whole
expected header set is `every_format(winner)`.
"""

import pytest

import expect
from formats_h2 import (
    ALL_COUNTERS,
    ALL_FORMATS,
    default_formats,
    every_format,
    grpc_trace_bin,
    trace_headers,
)

ALL = {"inject": ALL_FORMATS}  # extract: the default order
ORDER = {"extract": ["grpctracebin", "datadog", "jaeger", "tracecontext"], "inject": ALL_FORMATS}
UNTRUSTED = {"sampling": {"probability": 0, "trust_incoming": False}}

# One context per format, each with its own trace id; all sampled.
CONTEXTS = {
    "tracecontext": (
        [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ),
    "b3": (
        [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"),
    ),
    "b3multi": (
        [
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
        ("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"),
    ),
    "xray": (
        [
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )
        ],
        ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"),
    ),
    "cloudtrace": (
        [("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1")],
        ("105445aa7843bc8bf206b12000100000", "0000000000000001"),
    ),
    "jaeger": (
        [("uber-trace-id", "1a2b3c4d5e6f708192a3b4c5d6e7f809:0102030405060708:0:1")],
        ("1a2b3c4d5e6f708192a3b4c5d6e7f809", "0102030405060708"),
    ),
    "datadog": (
        # 0x8448eb211c80319c = 9532127138774266268; 0xb7ad6b7169203331 = 13235353014750950193
        [
            ("x-datadog-trace-id", "9532127138774266268"),
            ("x-datadog-parent-id", "13235353014750950193"),
            ("x-datadog-sampling-priority", "1"),
            ("x-datadog-tags", "_dd.p.tid=0af7651916cd43dd"),
        ],
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
    ),
    "grpctracebin": (
        # 00 00 f0e1d2c3b4a5968778695a4b3c2d1e0f 01 1122334455667788 02 01
        [("grpc-trace-bin", "AADw4dLDtKWWh3hpWks8LR4PAREiM0RVZneIAgE")],
        ("f0e1d2c3b4a5968778695a4b3c2d1e0f", "1122334455667788"),
    ),
}
assert grpc_trace_bin("f0e1d2c3b4a5968778695a4b3c2d1e0f", "1122334455667788", True) == (
    CONTEXTS["grpctracebin"][0][0][1]
)


def won_by(format: str, trace: str, span: str, flags: str) -> dict[str, list[str]]:
    """every_format, and for a Datadog context dd-trace's `tracestate` member (its CONTEXTS
    entry has priority 1 and no tag but `_dd.p.tid`; dd-trace-go `composeTracestate`)."""
    out = every_format(trace, span, flags)
    if format == "datadog":
        out["tracestate"] = [f"dd=s:1;p:{span}"]
    return out


def headers_of(*formats: str) -> list:
    return [h for f in formats for h in CONTEXTS[f][0]]


def extracted(delta: dict) -> dict:
    return {k: v for k, v in delta.items() if k.startswith("tracebridge.extracted.")}


@pytest.fixture(scope="module")
def proxy(proxies):
    return proxies(ALL)


@pytest.mark.parametrize("format", ["jaeger", "datadog", "grpctracebin"])
def test_each_new_format_in_is_written_to_every_format(proxy, format):
    sent, (trace, span) = CONTEXTS[format]
    with proxy.counting() as delta:
        got = proxy.send(sent)
    assert trace_headers(got) == won_by(format, trace, span, "01")
    assert delta == {f"tracebridge.extracted.{format}": 1}


@pytest.mark.parametrize("winner", ALL_FORMATS)
def test_default_order_first_valid_format_wins(proxy, winner):
    # The winner and every format after it in the default order, all present.
    present = ALL_FORMATS[ALL_FORMATS.index(winner) :]
    trace, span = CONTEXTS[winner][1]
    with proxy.counting() as delta:
        got = proxy.send(headers_of(*reversed(present)))  # header order does not matter
    assert trace_headers(got) == won_by(winner, trace, span, "01")
    assert extracted(delta) == {f"tracebridge.extracted.{winner}": 1}


@pytest.mark.parametrize(
    "invalid, valid, winner",
    [
        ([("x-cloud-trace-context", "zz/1;o=1")], ["jaeger", "datadog"], "jaeger"),
        ([("uber-trace-id", "not:a:jaeger:value")], ["datadog", "grpctracebin"], "datadog"),
        (
            [("x-datadog-trace-id", "12345678901234567890123"), ("x-datadog-parent-id", "1")],
            ["grpctracebin"],
            "grpctracebin",
        ),
    ],
    ids=["cloudtrace-to-jaeger", "jaeger-to-datadog", "datadog-to-grpctracebin"],
)
def test_invalid_higher_format_falls_through(proxy, invalid, valid, winner):
    bad_format = {"x-cloud-trace-context": "cloudtrace", "uber-trace-id": "jaeger"}.get(
        invalid[0][0], "datadog"
    )
    trace, span = CONTEXTS[winner][1]
    with proxy.counting() as delta:
        got = proxy.send(invalid + headers_of(*valid))
    assert trace_headers(got) == won_by(winner, trace, span, "01")
    assert delta == {
        f"tracebridge.invalid.{bad_format}": 1,
        f"tracebridge.extracted.{winner}": 1,
    }


def test_same_trace_conflicting_decisions_follow_the_winner(proxy):
    # Same trace and span in jaeger (not sampled), datadog and grpc-trace-bin (sampled):
    # jaeger comes first, so the others are rewritten to "not sampled"; Datadog keeps its
    # tags and origin (same trace).
    t, s = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    sent = [
        ("grpc-trace-bin", grpc_trace_bin(t, s, True, padded=True)),
        ("x-datadog-trace-id", "11803532876627986230"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6"),
        ("x-datadog-origin", "rum"),
        ("uber-trace-id", f"{t}:{s}:0:0"),
    ]
    with proxy.counting() as delta:
        got = proxy.send(sent)
    assert trace_headers(got) == {
        **every_format(t, s, "00"),
        "x-datadog-tags": ["_dd.p.dm=-4,_dd.p.tid=4bf92f3577b34da6"],
        "x-datadog-origin": ["rum"],
    }
    assert delta == {"tracebridge.extracted.jaeger": 1}


def test_custom_extract_order(proxies):
    proxy = proxies(ORDER)
    trace, span = CONTEXTS["grpctracebin"][1]
    with proxy.counting() as delta:
        got = proxy.send(headers_of(*ALL_FORMATS))
    assert trace_headers(got) == every_format(trace, span, "01")
    assert extracted(delta) == {"tracebridge.extracted.grpctracebin": 1}

    # Without grpc-trace-bin, datadog is next; xray is not in extract at all.
    trace, span = CONTEXTS["datadog"][1]
    with proxy.counting() as delta:
        got = proxy.send(headers_of("xray", "tracecontext", "jaeger", "datadog"))
    assert trace_headers(got) == won_by("datadog", trace, span, "01")
    assert extracted(delta) == {"tracebridge.extracted.datadog": 1}


# -- `{}`: the documented defaults ----------------------------------------------


@pytest.mark.parametrize("format", ["jaeger", "datadog", "grpctracebin"])
def test_defaults_extract_the_new_formats_and_leave_them_as_they_came(proxies, format):
    proxy = proxies({})
    sent, (trace, span) = CONTEXTS[format]
    with proxy.counting() as delta:
        got = proxy.send(sent)
    # Not injected by default: the format's own headers as they came, the default four
    # written from its context.
    assert trace_headers(got) == {
        **default_formats(trace, span, "01"),
        **({"tracestate": [f"dd=s:1;p:{span}"]} if format == "datadog" else {}),
        **{name: [value] for name, value in sent},
    }
    assert delta == {f"tracebridge.extracted.{format}": 1}


def test_defaults_leave_losing_new_formats_untouched(proxies):
    proxy = proxies({})
    sent = headers_of("tracecontext", "jaeger", "datadog", "grpctracebin")
    got = proxy.send(sent)
    trace, span = CONTEXTS["tracecontext"][1]
    assert trace_headers(got) == {
        **default_formats(trace, span, "01"),
        **{name: [value] for name, value in sent},
    }


# -- untrusted ----------------------------------------------------------------


def test_untrusted_caller_loses_every_format_not_injected(proxies):
    proxy = proxies(UNTRUSTED)
    sent = headers_of(*ALL_FORMATS) + [
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("jaeger-debug-id", "force"),
        ("x-datadog-origin", "rum"),
        ("x-keep", "yes"),
    ]
    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send(sent)
    traces = tuple(ctx[1][0] for ctx in CONTEXTS.values())
    trace, span, sampled = expect.new_trace(got, p=0, not_trace=traces)
    assert not sampled
    # Only the four injected formats remain, with the new trace.
    assert trace_headers(got) == default_formats(trace, span, "02")
    assert got.all("jaeger-debug-id") == [] and got.all("tracestate") == []
    assert got.all("x-keep") == ["yes"]
    assert delta.get("tracebridge.untrusted") == 1
    assert delta.get("tracebridge.reason.untrusted_restart") == 1
    assert extracted(delta) == {}
