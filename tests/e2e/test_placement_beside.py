"""Placement "beside Envoy's tracer": tracebridge as an upstream (cluster) HTTP filter.

envoy/beside-zipkin.yaml, envoy/beside-opentelemetry.yaml, envoy/beside-xray.yaml: the
HCM's tracer runs at 100 %; the cluster's upstream chain is [tracebridge, upstream_codec].
Order on Envoy 1.40 (ENVOY_FACTS c.1): the tracer extracts its own format in the HCM,
starts Envoy's span (same trace id, a new span id), the router injects the tracer's
header, then the upstream filters run. So the filter, reading the tracer's format first,
must put Envoy's trace id and Envoy's NEW span id into every format: the application's
span then parents to Envoy's span whatever format the application reads.

What the tracer injected is observed independently of the filter: a Lua probe placed
just before the wasm filter in the upstream chain returns the headers it saw as response
headers, Envoy adds its own trace id (%TRACE_ID%) to the response, and for Zipkin and
X-Ray the span Envoy reports is recorded by a local collector / daemon.
"""

from __future__ import annotations

import json
import time

import pytest

import topology
from harness import envoy_at_least
from topology import RenderedEnvoy, formats, is_span_id, is_trace_id, xray_root

# W3C Trace Context example ids
W3C_TRACE, W3C_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
# B3 README example ids
B3_TRACE, B3_SPAN = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
# X-Ray documentation example ids (an ALB's Root)
XRAY_TRACE, XRAY_PARENT = "5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
ALB_ROOT = "Root=1-5759e988-bd862e3fe1be46a994272793"

CONFIGS = {
    "zipkin": "envoy/beside-zipkin.yaml",
    "opentelemetry": "envoy/beside-opentelemetry.yaml",
    "xray": "envoy/beside-xray.yaml",
}


class Gateway:
    """A running beside-* Envoy, with what its tracer reported."""

    def __init__(self, envoy: RenderedEnvoy, spans=None):
        self.envoy = envoy
        self.spans = spans  # ZipkinCollector / XRayDaemon / None

    def send(self, headers=()) -> topology.Reply:
        reply = topology.send(self.envoy.listener_port, headers)
        assert reply.status == 200, reply.body
        return reply


def start_gateway(tmp_path_factory, name: str, upstream_port: int, spans=None) -> Gateway:
    def mutate(cfg):
        # what the tracer injected, before tracebridge runs
        topology.add_upstream_probe(cfg, "upstream", "tracer", before_wasm=True)
        topology.add_response_trace_id(cfg)
        provider = topology.tracing(cfg)["provider"]["typed_config"]
        if name == "zipkin":
            topology.set_cluster_port(cfg, "zipkin", spans.port)
            # report every span at once instead of batching 5 per 5 s
            cfg["layered_runtime"] = {
                "layers": [
                    {"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}
                ]
            }
        elif name == "xray":
            provider["daemon_endpoint"]["port_value"] = spans.port

    cfg = topology.render(CONFIGS[name], clusters={"upstream": upstream_port}, mutate=mutate)
    envoy = RenderedEnvoy(tmp_path_factory.mktemp(f"beside-{name}"), cfg)
    envoy.start()
    return Gateway(envoy, spans)


@pytest.fixture(scope="module")
def zipkin(tmp_path_factory, upstream, wasm, envoy_cmd):
    with topology.ZipkinCollector() as collector:
        gw = start_gateway(tmp_path_factory, "zipkin", upstream.port, collector)
        yield gw
        gw.envoy.stop()


@pytest.fixture(scope="module")
def otel(tmp_path_factory, upstream, wasm, envoy_cmd):
    gw = start_gateway(tmp_path_factory, "opentelemetry", upstream.port)
    yield gw
    gw.envoy.stop()


@pytest.fixture(scope="module")
def xray(tmp_path_factory, upstream, wasm, envoy_cmd):
    with topology.XRayDaemon() as daemon:
        gw = start_gateway(tmp_path_factory, "xray", upstream.port, daemon)
        yield gw
        gw.envoy.stop()


def assert_recent_epoch(trace: str) -> None:
    """X-Ray's rule for a new trace id: the first 8 hex digits are the Unix time."""
    assert abs(int(trace[:8], 16) - time.time()) < 600, f"{trace} does not start with the time"


# ---------------------------------------------------------------------------
# The shipped configurations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, tracer_formats",
    [("zipkin", ["b3", "b3multi"]), ("opentelemetry", ["tracecontext"]), ("xray", ["xray"])],
)
def test_shipped_config_reads_the_tracer_format_first(name, tracer_formats):
    if name == "zipkin" and not zipkin_reinjects_b3_single():
        tracer_formats = ["b3multi", "b3"]  # its before-envoy 1.40 line
    cfg = topology.load(CONFIGS[name])
    (hcm,) = topology.hcms(cfg)
    assert hcm["tracing"]["random_sampling"] == {"value": 100}
    assert not [f for f in hcm["http_filters"] if "wasm" in f["name"]], "not in the HCM chain"
    chain = topology.upstream_http_filters(cfg, "upstream")
    assert [f["name"] for f in chain] == [
        "envoy.filters.http.wasm",
        "envoy.filters.http.upstream_codec",
    ]
    (plugin,) = topology.wasm_plugins(cfg)
    plugin_cfg = topology.plugin_json(plugin)
    assert plugin_cfg["extract"][: len(tracer_formats)] == tracer_formats
    assert sorted(plugin_cfg["extract"]) == sorted(topology.ALL_FORMATS)
    assert plugin_cfg["inject"] == ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"]


# ---------------------------------------------------------------------------
# Zipkin (USE_B3, 128-bit, timestamp trace ids)
# ---------------------------------------------------------------------------


def zipkin_reinjects_b3_single() -> bool:
    """Envoy 1.40's Zipkin tracer re-injects an incoming `b3` (single) with its span.
    Before, it forwards `b3` as it came and writes its span into `x-b3-*` only (seen
    on 1.36.2, 1.37.0, 1.38.2, 1.39.0 and 1.39.3; envoyproxy/envoy#47515 describes it):
    envoy/beside-zipkin.yaml then reads b3multi first (its before-envoy 1.40 line)."""
    return envoy_at_least("1.40")


def zipkin_span(gw: Gateway, trace: str, span: str) -> dict:
    return gw.spans.wait_span(lambda s: s["traceId"] == trace and s["id"] == span)


def test_zipkin_b3multi_continued_with_envoys_span_in_every_format(zipkin):
    reply = zipkin.send(
        [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")]
    )
    tracer = reply.probe("tracer")
    new_span = tracer["x-b3-spanid"]
    # Zipkin continued the caller's trace with a new span whose parent is the caller's
    assert tracer["x-b3-traceid"] == B3_TRACE
    assert tracer["x-b3-parentspanid"] == B3_SPAN
    assert tracer["x-b3-sampled"] == "1"
    assert is_span_id(new_span) and new_span != B3_SPAN
    assert reply.header("x-tracer-trace-id") == B3_TRACE
    # one trace id and Envoy's span id in every format; the tracer's B3 passes unchanged
    assert reply.upstream.trace() == {
        **formats(B3_TRACE, new_span, True),
        "x-b3-parentspanid": [B3_SPAN],
    }
    # the span Envoy reported is the one the application will name as its parent
    assert zipkin_span(zipkin, B3_TRACE, new_span)["parentId"] == B3_SPAN


def test_zipkin_b3_single_continued(zipkin):
    reply = zipkin.send([("b3", f"{B3_TRACE}-{B3_SPAN}-1")])
    tracer = reply.probe("tracer")
    if zipkin_reinjects_b3_single():
        # the tracer re-injects B3 in the single format it came in: trace-newspan-1-parent
        trace, new_span, state, parent = tracer["b3"].split("-")
        assert (trace, state, parent) == (B3_TRACE, "1", B3_SPAN)
        assert "x-b3-spanid" not in tracer
        expected = {**formats(B3_TRACE, new_span, True), "b3": [tracer["b3"]]}  # unchanged
    else:
        # `b3` passes as it came (the caller's span); the tracer's span is in x-b3-*
        assert tracer["b3"] == f"{B3_TRACE}-{B3_SPAN}-1"
        new_span = tracer["x-b3-spanid"]
        assert tracer["x-b3-traceid"] == B3_TRACE
        assert tracer["x-b3-parentspanid"] == B3_SPAN
        # the filter read x-b3-* and rewrote the stale `b3` to Envoy's span
        expected = {**formats(B3_TRACE, new_span, True), "x-b3-parentspanid": [B3_SPAN]}
    assert is_span_id(new_span) and new_span != B3_SPAN
    assert reply.upstream.trace() == expected
    assert zipkin_span(zipkin, B3_TRACE, new_span)["parentId"] == B3_SPAN


def test_zipkin_b3_single_beats_stale_b3multi(zipkin):
    # Zipkin reads `b3` first. Envoy 1.40 then leaves a different x-b3-* as it came:
    # the filter must read `b3` first too, or it would propagate the stale trace. An
    # older Envoy overwrites x-b3-* with its span and leaves `b3` as it came: there the
    # filter reads b3multi first (envoy/beside-zipkin.yaml's before-envoy 1.40 line).
    stale = "0af7651916cd43dd8448eb211c80319c"
    reply = zipkin.send(
        [
            ("b3", f"{B3_TRACE}-{B3_SPAN}-1"),
            ("X-B3-TraceId", stale),
            ("X-B3-SpanId", "b7ad6b7169203331"),
            ("X-B3-Sampled", "1"),
        ]
    )
    tracer = reply.probe("tracer")
    assert reply.header("x-tracer-trace-id") == B3_TRACE
    if zipkin_reinjects_b3_single():
        new_span = tracer["b3"].split("-")[1]
        assert tracer["x-b3-traceid"] == stale  # left stale by the tracer
        expected = {
            **formats(B3_TRACE, new_span, True),
            "b3": [f"{B3_TRACE}-{new_span}-1-{B3_SPAN}"],
        }
    else:
        new_span = tracer["x-b3-spanid"]
        assert tracer["b3"] == f"{B3_TRACE}-{B3_SPAN}-1"  # left as it came by the tracer
        assert (tracer["x-b3-traceid"], tracer["x-b3-parentspanid"]) == (B3_TRACE, B3_SPAN)
        expected = {**formats(B3_TRACE, new_span, True), "x-b3-parentspanid": [B3_SPAN]}
    assert is_span_id(new_span) and new_span != B3_SPAN
    assert reply.upstream.trace() == expected


# timestamp_trace_ids is accepted from Envoy 1.38, but 1.38.2 puts the seconds since
# boot (a monotonic clock) into the first 8 hex digits; 1.39.0 and later the Unix time.
@pytest.mark.min_envoy("1.39", reason="Zipkin timestamp_trace_ids starting with the Unix time")
def test_zipkin_new_trace_has_an_x_ray_compatible_id(zipkin):
    reply = zipkin.send([])
    tracer = reply.probe("tracer")
    trace, span = tracer["x-b3-traceid"], tracer["x-b3-spanid"]
    assert is_trace_id(trace) and is_span_id(span)
    assert reply.header("x-tracer-trace-id") == trace
    assert_recent_epoch(trace)  # timestamp_trace_ids: true
    assert reply.upstream.trace() == formats(trace, span, True)
    zipkin_span(zipkin, trace, span)


def test_zipkin_ignores_an_alb_header_and_the_filter_follows_the_tracer(zipkin):
    """The load-balancer header at a gateway with a tracer: an ALB's X-Amzn-Trace-Id
    alone reaches a Zipkin gateway. Zipkin does not read X-Ray, so Envoy starts a new
    trace; the upstream filter then rewrites X-Amzn-Trace-Id to Envoy's trace, so the
    ALB's Root is gone from the request (one consistent trace, not the ALB's)."""
    reply = zipkin.send([("X-Amzn-Trace-Id", ALB_ROOT)])
    tracer = reply.probe("tracer")
    trace, span = tracer["x-b3-traceid"], tracer["x-b3-spanid"]
    assert tracer["x-amzn-trace-id"] == ALB_ROOT  # the tracer leaves it as it came
    assert trace != XRAY_TRACE and "x-b3-parentspanid" not in tracer
    assert reply.header("x-tracer-trace-id") == trace
    got = reply.upstream
    assert got.trace() == formats(trace, span, True)
    assert got.get("x-amzn-trace-id") == f"Root={xray_root(trace)};Parent={span};Sampled=1"
    assert XRAY_TRACE[8:] not in json.dumps(got.pairs)
    assert "parentId" not in zipkin_span(zipkin, trace, span)  # Envoy's span is a root


def test_zipkin_ignores_traceparent_and_the_filter_follows_the_tracer(zipkin):
    reply = zipkin.send(
        [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01"), ("tracestate", "rojo=00f067aa0ba902b7")]
    )
    tracer = reply.probe("tracer")
    trace, span = tracer["x-b3-traceid"], tracer["x-b3-spanid"]
    assert trace != W3C_TRACE
    # traceparent rewritten to Envoy's trace; tracestate belonged to the other trace
    assert reply.upstream.trace() == formats(trace, span, True)


# ---------------------------------------------------------------------------
# OpenTelemetry (gRPC exporter to a closed port)
# ---------------------------------------------------------------------------


def otel_tracer(reply: topology.Reply) -> tuple[str, str, str]:
    version, trace, span, flags = reply.probe("tracer")["traceparent"].split("-")
    assert version == "00" and is_trace_id(trace) and is_span_id(span)
    return trace, span, flags


def test_otel_traceparent_continued_with_envoys_span_in_every_format(otel):
    reply = otel.send(
        [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01"), ("tracestate", "rojo=00f067aa0ba902b7")]
    )
    trace, new_span, flags = otel_tracer(reply)
    assert (trace, flags) == (W3C_TRACE, "01") and new_span != W3C_SPAN
    assert reply.probe("tracer")["tracestate"] == "rojo=00f067aa0ba902b7"
    assert reply.header("x-tracer-trace-id") == W3C_TRACE
    assert reply.upstream.trace() == {
        **formats(W3C_TRACE, new_span, True),
        "tracestate": ["rojo=00f067aa0ba902b7"],
    }


def test_otel_parent_not_sampled_decision_kept(otel):
    reply = otel.send([("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00")])
    trace, new_span, flags = otel_tracer(reply)
    assert (trace, flags) == (W3C_TRACE, "00") and new_span != W3C_SPAN
    # Envoy's OpenTelemetry tracer injects an empty tracestate when none came in;
    # an empty list is valid (W3C: "MUST accept empty tracestate"), so it passes.
    assert reply.upstream.trace() == {**formats(W3C_TRACE, new_span, False), "tracestate": [""]}


def test_otel_new_trace(otel):
    reply = otel.send([])
    trace, span, flags = otel_tracer(reply)
    assert flags == "01"
    assert reply.header("x-tracer-trace-id") == trace
    assert reply.upstream.trace() == {**formats(trace, span, True), "tracestate": [""]}


def test_otel_ignores_b3_and_the_filter_follows_the_tracer(otel):
    reply = otel.send(
        [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")]
    )
    trace, span, _ = otel_tracer(reply)
    assert trace != B3_TRACE
    assert reply.probe("tracer")["x-b3-traceid"] == B3_TRACE  # as the client sent it
    assert reply.upstream.trace() == {**formats(trace, span, True), "tracestate": [""]}


def test_otel_ignores_an_alb_header_and_the_filter_follows_the_tracer(otel):
    reply = otel.send([("X-Amzn-Trace-Id", ALB_ROOT)])
    trace, span, _ = otel_tracer(reply)
    assert trace != XRAY_TRACE
    got = reply.upstream
    assert got.trace() == {**formats(trace, span, True), "tracestate": [""]}
    assert XRAY_TRACE[8:] not in json.dumps(got.pairs)


# ---------------------------------------------------------------------------
# X-Ray (UDP daemon, sampling rule manifest at 100 %)
# ---------------------------------------------------------------------------


def xray_tracer(reply: topology.Reply) -> tuple[str, str, str]:
    """(trace id as 32 hex, Parent, Sampled) of the X-Ray tracer's header."""
    fields = dict(f.split("=", 1) for f in reply.probe("tracer")["x-amzn-trace-id"].split(";"))
    assert set(fields) == {"Root", "Parent", "Sampled"}, fields
    version, epoch, rest = fields["Root"].split("-")
    assert version == "1" and is_span_id(fields["Parent"])
    return epoch + rest, fields["Parent"], fields["Sampled"]


def xray_segment(gw: Gateway, trace: str, segment_id: str) -> dict:
    return gw.spans.wait_segment(
        lambda s: s["trace_id"] == xray_root(trace) and s["id"] == segment_id
    )


def test_xray_continued_with_envoys_segment_in_every_format(xray):
    reply = xray.send([("X-Amzn-Trace-Id", f"{ALB_ROOT};Parent={XRAY_PARENT};Sampled=1")])
    trace, segment, sampled = xray_tracer(reply)
    assert (trace, sampled) == (XRAY_TRACE, "1") and segment != XRAY_PARENT
    assert reply.header("x-tracer-trace-id") == xray_root(XRAY_TRACE)
    assert reply.upstream.trace() == formats(XRAY_TRACE, segment, True)
    assert xray_segment(xray, XRAY_TRACE, segment)["parent_id"] == XRAY_PARENT


def test_xray_alb_root_without_parent_continued(xray):
    # The X-Ray tracer, unlike Zipkin and OpenTelemetry, reads the ALB's header:
    # the Root is kept and Envoy's segment is the first one of the trace.
    reply = xray.send([("X-Amzn-Trace-Id", ALB_ROOT)])
    trace, segment, sampled = xray_tracer(reply)
    assert (trace, sampled) == (XRAY_TRACE, "1")
    assert reply.upstream.trace() == formats(XRAY_TRACE, segment, True)
    assert "parent_id" not in xray_segment(xray, XRAY_TRACE, segment)


def test_xray_not_sampled_decision_kept(xray):
    reply = xray.send([("X-Amzn-Trace-Id", f"{ALB_ROOT};Parent={XRAY_PARENT};Sampled=0")])
    trace, segment, sampled = xray_tracer(reply)
    assert (trace, sampled) == (XRAY_TRACE, "0") and segment != XRAY_PARENT
    assert reply.upstream.trace() == formats(XRAY_TRACE, segment, False)


def test_xray_new_trace(xray):
    reply = xray.send([])
    trace, segment, sampled = xray_tracer(reply)
    assert sampled == "1"
    assert_recent_epoch(trace)
    assert reply.upstream.trace() == formats(trace, segment, True)
    assert "parent_id" not in xray_segment(xray, trace, segment)


def test_xray_ignores_traceparent_and_the_filter_follows_the_tracer(xray):
    reply = xray.send(
        [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00"), ("tracestate", "rojo=00f067aa0ba902b7")]
    )
    trace, segment, sampled = xray_tracer(reply)
    # a new X-Ray trace, sampled by X-Ray's own rule; the client's W3C context is gone
    assert trace != W3C_TRACE and sampled == "1"
    assert reply.upstream.trace() == formats(trace, segment, True)
