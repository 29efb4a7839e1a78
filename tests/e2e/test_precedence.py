"""Several formats in one request: the extract order decides, the others follow."""

import expect

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TS = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
B3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90"
B3MULTI = [
    ("X-B3-TraceId", "463ac35c9f6413ad"),
    ("X-B3-SpanId", "a2fb4a1d1a96d312"),
    ("X-B3-ParentSpanId", "0020000000000001"),
    ("X-B3-Sampled", "0"),
]
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a:1"
CLOUD = "105445aa7843bc8bf206b12000100000/1;o=0"

EVERYTHING = (
    [("traceparent", TP), ("tracestate", TS), ("b3", B3)]
    + B3MULTI
    + [("X-Amzn-Trace-Id", XRAY), ("X-Cloud-Trace-Context", CLOUD)]
)


def test_tracecontext_wins_by_default_and_the_others_follow(proxy):
    with proxy.counting() as delta:
        got = proxy.send(EVERYTHING)
    assert got.trace() == {
        "traceparent": [TP],
        "tracestate": [TS],
        "b3": [B3],  # not injected by default: as it came
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["00f067aa0ba902b7"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"],
    }
    assert delta.get("tracebridge.extracted.tracecontext") == 1
    assert not {k for k in delta if k.startswith("tracebridge.extracted.")} - {
        "tracebridge.extracted.tracecontext"
    }


def test_invalid_traceparent_falls_through_to_b3(proxy):
    bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", bad), ("tracestate", TS)] + EVERYTHING[2:])
    assert got.trace() == {
        "traceparent": ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00"],
        "b3": [B3],
        "x-b3-traceid": ["80f198ee56343ba864fe8b2a57d3eff7"],
        "x-b3-spanid": ["e457b5a2e4d86bd1"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-80f198ee-56343ba864fe8b2a57d3eff7;Parent=e457b5a2e4d86bd1;Sampled=0"
        ],
        "x-cloud-trace-context": ["80f198ee56343ba864fe8b2a57d3eff7/16453819474850114513;o=0"],
    }
    assert delta.get("tracebridge.invalid.tracecontext") == 1
    assert delta.get("tracebridge.extracted.b3") == 1


def test_custom_extract_order_is_followed(proxies):
    proxy = proxies({"extract": ["cloudtrace", "xray", "b3multi", "b3", "tracecontext"]})
    with proxy.counting() as delta:
        got = proxy.send(EVERYTHING)
    assert got.trace() == {
        "traceparent": ["00-105445aa7843bc8bf206b12000100000-0000000000000001-00"],
        "b3": [B3],
        "x-b3-traceid": ["105445aa7843bc8bf206b12000100000"],
        "x-b3-spanid": ["0000000000000001"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [
            "Root=1-105445aa-7843bc8bf206b12000100000;Parent=0000000000000001;Sampled=0"
        ],
        "x-cloud-trace-context": [CLOUD],
    }
    assert delta == {"tracebridge.extracted.cloudtrace": 1}


def test_xray_first_keeps_its_extra_fields_and_drops_foreign_tracestate(proxies):
    proxy = proxies({"extract": ["xray", "tracecontext"]})
    got = proxy.send([("traceparent", TP), ("tracestate", TS), ("X-Amzn-Trace-Id", XRAY)])
    assert got.trace() == {
        "traceparent": ["00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"],
        "x-b3-traceid": ["5759e988bd862e3fe1be46a994272793"],
        "x-b3-spanid": ["53995c3f42cd8ad8"],
        "x-b3-sampled": ["0"],
        "x-amzn-trace-id": [XRAY],
        "x-cloud-trace-context": ["5759e988bd862e3fe1be46a994272793/6023947403358210776;o=0"],
    }


def test_tracestate_kept_and_random_flag_known_when_trace_ids_match(proxies):
    proxy = proxies({"extract": ["b3multi", "tracecontext"]})
    got = proxy.send(
        [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"),
            ("tracestate", TS),
            ("X-B3-TraceId", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "1"),
        ]
    )
    assert got.trace() == {
        "traceparent": ["00-4bf92f3577b34da6a3ce929d0e0e4736-e457b5a2e4d86bd1-03"],
        "tracestate": [TS],
        "x-b3-traceid": ["4bf92f3577b34da6a3ce929d0e0e4736"],
        "x-b3-spanid": ["e457b5a2e4d86bd1"],
        "x-b3-sampled": ["1"],
        "x-amzn-trace-id": [
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=e457b5a2e4d86bd1;Sampled=1"
        ],
        "x-cloud-trace-context": ["4bf92f3577b34da6a3ce929d0e0e4736/16453819474850114513;o=1"],
    }


def test_tracestate_removed_when_trace_ids_differ(proxies):
    proxy = proxies({"extract": ["b3multi", "tracecontext"]})
    got = proxy.send(
        [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"),
            ("tracestate", TS),
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "1"),
        ]
    )
    assert got.all("tracestate") == []
    # the random flag of a traceparent with another trace id says nothing about this one
    assert got.all("traceparent") == ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"]


def test_format_not_in_extract_is_ignored(proxies):
    proxy = proxies({"extract": ["b3multi"]})
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", TP), ("tracestate", TS), ("X-Amzn-Trace-Id", XRAY)])
    expect.new_trace(got, not_trace="4bf92f3577b34da6a3ce929d0e0e4736")
    assert delta["tracebridge.trace_started"] == 1


def test_conflicting_decision_in_another_format_is_overwritten(proxy):
    got = proxy.send(
        [
            ("traceparent", TP),
            ("X-B3-TraceId", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("X-B3-SpanId", "00f067aa0ba902b7"),
            ("X-B3-Sampled", "0"),
        ]
    )
    assert got.all("x-b3-sampled") == ["1"]
    assert got.all("x-b3-traceid") == ["4bf92f3577b34da6a3ce929d0e0e4736"]


def test_b3_sampling_only_is_ignored_when_a_context_exists(proxy):
    got = proxy.send(
        [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), ("b3", "1")]
    )
    assert got.all("x-b3-sampled") == ["0"]
    assert got.all("b3") == ["1"]
