"""`response`: the trace on the response, through a real Envoy.

The upstream (response_upstream.ResponseUpstream) sets its own Server-Timing metrics on two
lines and answers with the request headers it received, so every expected value is taken from
what actually went upstream, and the formats from the specifications:

* W3C Trace Context editor's draft, "Trace Context Server Timing Metric Format"
  (w3c/trace-context spec/21-http_response_header_format.md): metric name `trace`,
  description `version "-" trace-id "-" child-id "-" trace-flags`, e.g.
  `server-timing: trace;desc=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01`;
  flags: sampled 0x01, random-trace-id 0x02, which a participant that continues a trace
  "MUST set ... to the same value that was found in the incoming traceparent".
* The `traceresponse` header of the earlier drafts (the same file before the metric replaced
  it): `version "-" trace-id "-" child-id "-" trace-flags`, the same value.
* W3C Server Timing: `server-timing-metric = metric-name *( OWS ";" OWS server-timing-param )`,
  several header lines form one list, and a response may carry several metrics.
"""

from __future__ import annotations

import json

import pytest

import topology
from harness import Envoy, EnvoyExited, HarnessError, free_port
from response_upstream import (
    OWN_HEADERS,
    UPSTREAM_SERVER_TIMING,
    ResponseUpstream,
    get,
)

# W3C Trace Context examples
W3C_TRACE, W3C_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
# B3 README example ids
B3_TRACE, B3_SPAN = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"

LINK = {
    "header": "x-trace-link",
    "template": "https://trace.example/{trace_id}?span={span_id}&xray={xray_trace_id}",
}
FULL = {"traceresponse": True, "timing_allow_origin": "*", "link": LINK}


def link(trace: str, span: str) -> str:
    # X-Ray trace id: "1-" + the first 8 hex digits + "-" + the other 24 (AWS X-Ray
    # developer guide, "Tracing header").
    return f"https://trace.example/{trace}?span={span}&xray=1-{trace[:8]}-{trace[8:]}"


@pytest.fixture(scope="module")
def upstream():
    with ResponseUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def envoys(tmp_path_factory, upstream, wasm, envoy_cmd):
    """envoys(plugin configuration) -> a running Envoy (envoy/tracebridge.yaml) in front of
    the response upstream; one per configuration and module."""
    started: dict[str, Envoy] = {}

    def get_envoy(config: dict, upstream_port: int | None = None) -> Envoy:
        key = json.dumps(config, sort_keys=True) + f"@{upstream_port}"
        if key not in started:
            envoy = Envoy(
                tmp_path_factory.mktemp("envoy"),
                upstream_port=upstream_port or upstream.port,
                plugin_config=json.dumps(config),
            )
            try:
                envoy.start()
            except HarnessError as e:
                pytest.fail(f"Envoy did not start with {config}: {e}")
            started[key] = envoy
        return started[key]

    yield get_envoy
    for envoy in started.values():
        envoy.stop()


def traceparent_upstream(answer) -> str:
    value = answer.upstream()["traceparent"]
    assert value.startswith("00-") and len(value) == 55, value
    return value


def assert_upstream_metrics_kept(answer) -> None:
    """The upstream's own Server-Timing lines reach the client unchanged, in order."""
    ours = [v for v in answer.all("server-timing") if v.startswith("trace;")]
    theirs = [v for v in answer.all("server-timing") if not v.startswith("trace;")]
    assert theirs == list(UPSTREAM_SERVER_TIMING), answer.headers
    assert len(ours) <= 1, answer.headers


def trace_metric(answer) -> str | None:
    """The description of tracebridge's `trace` metric (its own header line), or None."""
    ours = [v for v in answer.all("server-timing") if v.startswith("trace;")]
    assert len(ours) <= 1, answer.headers
    if not ours:
        return None
    name, _, desc = ours[0].partition(";desc=")
    assert name == "trace", ours
    return desc


# -- sampled requests ----------------------------------------------------------------------


def test_continued_sampled_traceparent(envoys):
    envoy = envoys({"response": FULL})
    incoming = f"00-{W3C_TRACE}-{W3C_SPAN}-01"
    answer = get(envoy.listener_port, [("traceparent", incoming)])
    sent = traceparent_upstream(answer)
    # Owner placement: the caller's span id is the parent of the next span.
    assert sent == incoming
    assert trace_metric(answer) == sent
    assert answer.one("traceresponse") == sent
    assert answer.one("x-trace-link") == link(W3C_TRACE, W3C_SPAN)
    assert answer.one("timing-allow-origin") == "*"
    assert_upstream_metrics_kept(answer)


def test_continued_random_flag_is_kept(envoys):
    envoy = envoys({"response": FULL})
    answer = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-03")])
    assert trace_metric(answer) == f"00-{W3C_TRACE}-{W3C_SPAN}-03"
    assert answer.one("traceresponse") == f"00-{W3C_TRACE}-{W3C_SPAN}-03"


def test_continued_from_b3_does_not_claim_randomness(envoys):
    envoy = envoys({"response": FULL})
    answer = get(
        envoy.listener_port,
        [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")],
    )
    sent = traceparent_upstream(answer)
    assert sent == f"00-{B3_TRACE}-{B3_SPAN}-01"  # not generated here: no random flag
    assert trace_metric(answer) == sent
    assert answer.one("x-trace-link") == link(B3_TRACE, B3_SPAN)


def test_new_sampled_trace(envoys):
    envoy = envoys({"sampling": {"probability": 1}, "response": FULL})
    answer = get(envoy.listener_port)
    sent = traceparent_upstream(answer)
    trace, span, flags = sent[3:35], sent[36:52], sent[53:]
    # A trace id the filter generated is random and, at probability 1, sampled.
    assert flags == "03"
    assert answer.upstream()["x-b3-traceid"] == trace
    assert trace_metric(answer) == sent
    assert answer.one("traceresponse") == sent
    assert answer.one("x-trace-link") == link(trace, span)
    assert_upstream_metrics_kept(answer)


def test_defaults_add_only_the_metric(envoys):
    envoy = envoys({"response": {}})
    answer = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")])
    assert trace_metric(answer) == f"00-{W3C_TRACE}-{W3C_SPAN}-01"
    for name in ("traceresponse", "timing-allow-origin", "x-trace-link"):
        assert answer.one(name) is None, name
    assert_upstream_metrics_kept(answer)


# -- unsampled requests, `when` both ways --------------------------------------------------


def assert_nothing_added(answer) -> None:
    assert answer.all("server-timing") == list(UPSTREAM_SERVER_TIMING), answer.headers
    for name in ("traceresponse", "timing-allow-origin", "x-trace-link"):
        assert answer.one(name) is None, (name, answer.headers)


def test_unsampled_when_sampled_reveals_nothing(envoys):
    envoy = envoys({"sampling": {"probability": 0}, "response": FULL})
    answer = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00")])
    assert traceparent_upstream(answer) == f"00-{W3C_TRACE}-{W3C_SPAN}-00"
    assert_nothing_added(answer)
    answer = get(envoy.listener_port)  # a new trace, not sampled at probability 0
    assert traceparent_upstream(answer).endswith("-02")
    assert_nothing_added(answer)


def test_unsampled_when_always(envoys):
    envoy = envoys({"sampling": {"probability": 0}, "response": dict(FULL, when="always")})
    answer = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00")])
    assert trace_metric(answer) == f"00-{W3C_TRACE}-{W3C_SPAN}-00"
    assert answer.one("traceresponse") == f"00-{W3C_TRACE}-{W3C_SPAN}-00"
    assert answer.one("x-trace-link") == link(W3C_TRACE, W3C_SPAN)
    answer = get(envoy.listener_port)
    sent = traceparent_upstream(answer)
    assert sent.endswith("-02")  # random, not sampled
    assert trace_metric(answer) == sent
    assert_upstream_metrics_kept(answer)


# -- what is never touched ------------------------------------------------------------------


def test_the_upstreams_own_trace_and_headers_win(envoys):
    envoy = envoys({"response": FULL})
    answer = get(envoy.listener_port, [("traceparent", f"00-{B3_TRACE}-{B3_SPAN}-01")], "/own-trace")
    assert traceparent_upstream(answer) == f"00-{B3_TRACE}-{B3_SPAN}-01"
    own = dict(OWN_HEADERS)
    assert answer.all("server-timing") == [*UPSTREAM_SERVER_TIMING, own["server-timing"]]
    for name in ("traceresponse", "x-trace-link", "timing-allow-origin"):
        assert answer.all(name) == [own[name]], name


def test_without_response_nothing_is_added(envoys):
    envoy = envoys({"sampling": {"probability": 1}})
    for headers in ([], [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")]):
        answer = get(envoy.listener_port, headers)
        assert traceparent_upstream(answer)  # the request was translated
        assert_nothing_added(answer)


# -- Envoy's own replies and the beside placement -------------------------------------------


def test_owner_placement_marks_envoys_local_replies(envoys):
    """In the connection manager's chain the filter's response hook also runs for replies
    Envoy makes itself after it (here the router's 503 when the upstream is down)."""
    dead_port = free_port()  # nothing listens there
    envoy = envoys({"response": FULL}, upstream_port=dead_port)
    answer = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")])
    assert answer.status == 503, answer.body
    assert answer.all("server-timing") == [f"trace;desc=00-{W3C_TRACE}-{W3C_SPAN}-01"]
    assert answer.one("x-trace-link") == link(W3C_TRACE, W3C_SPAN)
    unsampled = get(envoy.listener_port, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00")])
    assert unsampled.status == 503 and unsampled.all("server-timing") == []


def beside_zipkin(tmp_path_factory, upstream_port: int, collector_port: int, response: dict):
    def mutate(cfg):
        (plugin,) = topology.wasm_plugins(cfg)
        config = topology.plugin_json(plugin)
        config["response"] = response
        topology.set_plugin_config(plugin, config)
        topology.set_cluster_port(cfg, "zipkin", collector_port)

    cfg = topology.render(
        "envoy/beside-zipkin.yaml", clusters={"upstream": upstream_port}, mutate=mutate
    )
    envoy = topology.RenderedEnvoy(tmp_path_factory.mktemp("beside-response"), cfg)
    envoy.start()
    return envoy


def test_beside_placement_reports_the_span_envoy_sent(tmp_path_factory, upstream, wasm, envoy_cmd):
    """As the cluster's upstream filter, beside Zipkin: the span id sent upstream, and so the
    one on the response, is Envoy's span, not the caller's. Envoy's own replies (503 when the
    upstream is down) never pass through upstream filters, so they carry nothing."""
    with topology.ZipkinCollector() as collector:
        envoy = beside_zipkin(tmp_path_factory, upstream.port, collector.port, FULL)
        try:
            answer = get(
                envoy.listener_port,
                [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")],
            )
            sent = traceparent_upstream(answer)
            received = answer.upstream()
            assert sent[3:35] == B3_TRACE
            assert sent[36:52] == received["x-b3-spanid"] != B3_SPAN
            assert received["x-b3-parentspanid"] == B3_SPAN
            assert trace_metric(answer) == sent
            assert answer.one("x-trace-link") == link(B3_TRACE, sent[36:52])
            assert_upstream_metrics_kept(answer)
        finally:
            envoy.stop()
        envoy = beside_zipkin(tmp_path_factory, free_port(), collector.port, FULL)
        try:
            answer = get(
                envoy.listener_port,
                [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")],
            )
            assert answer.status == 503, answer.body
            assert answer.all("server-timing") == [] and answer.one("x-trace-link") is None
        finally:
            envoy.stop()


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, message",
    [
        (
            {"link": {"header": "x-trace-link", "template": "https://t.example/{traceid}"}},
            "response.link.template: unknown placeholder {traceid}",
        ),
        (
            {"link": {"header": "x trace", "template": "{trace_id}"}},
            'response.link.header: "x trace" is not a valid HTTP header name',
        ),
        ({"when": "sometimes"}, 'response.when: must be "sampled" or "always"'),
        ({"timing_allow_origin": "https://app.example/"}, "response.timing_allow_origin:"),
    ],
)
def test_bad_response_configuration_refuses_to_start(start_envoy, response, message):
    envoy = start_envoy({"response": response})
    with pytest.raises(EnvoyExited) as exc:
        envoy.start()
    assert exc.value.returncode != 0
    assert f"tracebridge: invalid configuration: {message}" in exc.value.log
