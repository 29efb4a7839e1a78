"""The inject list, and everything the filter must not touch."""

import pytest

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TS = "rojo=00f067aa0ba902b7"
B3MULTI = [
    ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("X-B3-SpanId", "e457b5a2e4d86bd1"),
    ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
    ("X-B3-Sampled", "1"),
]
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
CLOUD = "105445aa7843bc8bf206b12000100000/1;o=0"


def test_inject_tracecontext_only(proxies):
    proxy = proxies({"inject": ["tracecontext"], "extract": ["b3multi", "tracecontext"]})
    got = proxy.send(
        [("traceparent", TP), ("tracestate", TS)]
        + B3MULTI
        + [("X-Amzn-Trace-Id", XRAY), ("X-Cloud-Trace-Context", CLOUD), ("b3", "0")]
    )
    assert got.trace() == {
        "traceparent": ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"],
        # other formats: as they came
        "b3": ["0"],
        "x-b3-traceid": ["80f198ee56343ba864fe8b2a57d3eff7"],
        "x-b3-spanid": ["e457b5a2e4d86bd1"],
        "x-b3-parentspanid": ["05e3ac9a4f6e3b90"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [XRAY],
        "x-cloud-trace-context": [CLOUD],
    }


def test_inject_xray_and_cloudtrace_only(proxies):
    proxy = proxies({"inject": ["xray", "cloudtrace"]})
    b3multi = [
        ("X-B3-TraceId", "463ac35c9f6413ad"),
        ("X-B3-SpanId", "a2fb4a1d1a96d312"),
        ("X-B3-Flags", "1"),
    ]
    got = proxy.send([("traceparent", TP), ("tracestate", TS), ("tracestate", "x=y")] + b3multi)
    assert got.trace() == {
        "traceparent": [TP],
        "tracestate": [TS, "x=y"],
        "x-b3-traceid": ["463ac35c9f6413ad"],
        "x-b3-spanid": ["a2fb4a1d1a96d312"],
        "x-b3-flags": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"],
    }


def test_tracestate_left_alone_when_tracecontext_not_injected(proxies):
    proxy = proxies({"inject": ["b3multi"], "extract": ["xray"]})
    bad_state = "rojo=1,rojo=2"  # invalid, but tracecontext is not injected
    got = proxy.send([("traceparent", TP), ("tracestate", bad_state), ("X-Amzn-Trace-Id", XRAY)])
    assert got.trace() == {
        "traceparent": [TP],
        "tracestate": [bad_state],
        "x-b3-traceid": ["5759e988bd862e3fe1be46a994272793"],
        "x-b3-spanid": ["53995c3f42cd8ad8"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [XRAY],
    }


@pytest.mark.parametrize(
    "b3_in, b3_out",
    [
        # chosen context comes from traceparent: b3 is written, 128-bit, with decision
        ([("traceparent", TP)], "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        (
            [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ),
        (
            [
                ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("X-B3-SpanId", "e457b5a2e4d86bd1"),
                ("X-B3-Flags", "1"),
            ],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        ),
        (
            [("X-Cloud-Trace-Context", "105445aa7843bc8bf206b12000100000/1;o=1"), ("b3", "0")],
            "105445aa7843bc8bf206b12000100000-0000000000000001-1",
        ),
    ],
    ids=["from-traceparent", "not-sampled", "debug", "replaces-sampling-only"],
)
def test_inject_b3_single(proxies, b3_in, b3_out):
    proxy = proxies({"inject": ["b3"]})
    got = proxy.send(b3_in)
    assert got.all("b3") == [b3_out]
    # nothing else injected: the request's other trace headers as they came
    sent = {}
    for n, v in b3_in:
        if n.lower() != "b3":
            sent.setdefault(n.lower(), []).append(v)
    assert {k: v for k, v in got.trace().items() if k != "b3"} == sent


@pytest.mark.parametrize(
    "value",
    [
        "463ac35c9f6413ad-a2fb4a1d1a96d312-1",  # 64-bit trace id
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",  # with parent
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
    ],
    ids=["64-bit", "with-parent", "debug"],
)
def test_inject_b3_single_matching_context_left_untouched(proxies, value):
    proxy = proxies({"inject": ["b3"]})
    got = proxy.send([("b3", value)])
    assert got.trace() == {"b3": [value]}


def test_inject_nothing(proxies):
    proxy = proxies({"inject": []})
    headers = (
        [("traceparent", TP), ("tracestate", TS)]
        + B3MULTI
        + [("X-Amzn-Trace-Id", XRAY), ("X-Cloud-Trace-Context", CLOUD), ("b3", "1")]
    )
    got = proxy.send(headers)
    sent = {}
    for n, v in headers:
        sent.setdefault(n.lower(), []).append(v)
    assert got.trace() == sent


# Headers that are not trace context, including look-alikes, duplicates,
# raw non-UTF-8 bytes and a 20 KB value, in an order to be kept.
OTHER_HEADERS = [
    ("User-Agent", "tracebridge-e2e"),
    ("Accept", "*/*"),
    ("X-Dup", "first"),
    ("x-request-context", "a=b"),
    ("X-Dup", "second"),
    ("traceparent-x", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("x-b3-traceid-copy", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("uber-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"),
    ("x-datadog-trace-id", "1234567890"),
    ("baggage", "k1=v1,k2=v2"),
    ("grpc-trace-bin", "AAAAAAAA"),
    ("X-Latin1", b"caf\xe9 \xff\xfe"),
    ("X-Big", "z" * 20000),
    ("X-Dup", "third"),
    ("Authorization", "Bearer abc.def"),
]


@pytest.mark.parametrize(
    "config, trace",
    [
        (None, [("traceparent", TP), ("tracestate", TS)]),
        (None, B3MULTI),
        (None, [("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793")]),
        (None, []),
        (None, [("traceparent", b"\xff\xfe"), ("b3", "x" * 20000)]),
        ({"inject": ["b3"], "extract": ["xray"]}, [("X-Cloud-Trace-Context", CLOUD)]),
    ],
    ids=["tracecontext", "b3multi", "xray-root-only", "none", "garbage", "inject-b3"],
)
def test_other_headers_never_lost(proxies, config, trace):
    proxy = proxies(config)
    got = proxy.send(OTHER_HEADERS[:7] + trace + OTHER_HEADERS[7:])
    names = {n.lower() for n, _ in OTHER_HEADERS}
    arrived = [(n, v.encode("latin-1")) for n, v in got.pairs if n in names]
    sent = [(n.lower(), v if isinstance(v, bytes) else v.encode()) for n, v in OTHER_HEADERS]
    assert arrived == sent
    # and the filter produced some context in every case
    assert len(got.all("traceparent") + got.all("b3")) >= 1
