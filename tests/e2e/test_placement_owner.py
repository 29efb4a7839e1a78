"""Placement "owner": tracebridge in the HCM chain, Envoy's tracer on but told not to
propagate (envoy/owner-no-context-propagation.yaml: Zipkin USE_B3 at 100 %,
`tracing.no_context_propagation: true`).

Proves that the headers the filter writes, in all five formats, with the filter's
sampling decision, are the ones the upstream gets, although the Zipkin tracer owns
B3: without `no_context_propagation` (the control below) the router overwrites B3
after the filter has run. Envoy's own spans are recorded by a local Zipkin collector
to show what they are in this placement.

Envoy versions: `no_context_propagation` is new in Envoy 1.38, so the tests of the
placement itself need it (min_envoy: the configuration's min-envoy line); the
control, the same Envoy without the field, is what Envoy 1.36 and 1.37 (Istio 1.28,
1.29) do with a tracer, and runs on every version. What those meshes do instead:
test_placement_before_istio_1_30.py.
"""

from __future__ import annotations

import pytest

import topology
from topology import RenderedEnvoy, formats

CONFIG = "envoy/owner-no-context-propagation.yaml"

B3_TRACE, B3_SPAN = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
W3C_TRACE, W3C_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
ALB_ROOT = "Root=1-5759e988-bd862e3fe1be46a994272793"
XRAY_TRACE = "5759e988bd862e3fe1be46a994272793"


def shipped_plugin_config() -> dict:
    (plugin,) = topology.wasm_plugins(topology.load(CONFIG))
    return topology.plugin_json(plugin)


def start(tmp_path_factory, upstream_port: int, collector, *, propagate: bool) -> RenderedEnvoy:
    # The shipped plugin configuration, at probability 0: every decision the filter
    # makes itself is "not sampled", while the tracer samples 100 %.
    plugin_cfg = shipped_plugin_config()
    plugin_cfg["sampling"]["probability"] = 0

    def mutate(cfg):
        if propagate:  # as an Envoy without the field does: the tracer propagates
            del topology.tracing(cfg)["no_context_propagation"]
        (plugin,) = topology.wasm_plugins(cfg)
        topology.set_plugin_config(plugin, plugin_cfg)
        topology.add_response_trace_id(cfg)
        cfg["layered_runtime"] = {
            "layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]
        }

    cfg = topology.render(
        CONFIG, clusters={"upstream": upstream_port, "zipkin": collector.port}, mutate=mutate
    )
    envoy = RenderedEnvoy(tmp_path_factory.mktemp("owner"), cfg)
    return envoy.start()


@pytest.fixture(scope="module")
def collector():
    with topology.ZipkinCollector() as c:
        yield c


@pytest.fixture(scope="module")
def owner(tmp_path_factory, upstream, wasm, envoy_cmd, collector):
    envoy = start(tmp_path_factory, upstream.port, collector, propagate=False)
    yield envoy
    envoy.stop()


@pytest.fixture(scope="module")
def propagating(tmp_path_factory, upstream, wasm, envoy_cmd, collector):
    """The control: the same Envoy without no_context_propagation."""
    envoy = start(tmp_path_factory, upstream.port, collector, propagate=True)
    yield envoy
    envoy.stop()


def send(envoy, headers) -> topology.Reply:
    reply = topology.send(envoy.listener_port, headers)
    assert reply.status == 200, reply.body
    return reply


def test_shipped_config():
    cfg = topology.load(CONFIG)
    tracing = topology.tracing(cfg)
    assert tracing["no_context_propagation"] is True
    assert tracing["provider"]["name"] == "envoy.tracers.zipkin"
    (hcm,) = topology.hcms(cfg)
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.wasm",
        "envoy.filters.http.router",
    ]
    assert shipped_plugin_config() == {
        "extract": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"],
        "inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"],
        "sampling": {"probability": 0.01},
    }


needs_no_context_propagation = pytest.mark.min_envoy(config=CONFIG)


@needs_no_context_propagation
def test_b3_caller_span_passes_through_and_envoys_span_is_a_sibling(owner, collector):
    reply = send(
        owner, [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")]
    )
    # the filter's context: the caller's trace and span, in every format, untouched by Zipkin
    assert reply.upstream.trace() == formats(B3_TRACE, B3_SPAN, True)
    # Envoy still reports its span (same trace, a new id, parent = the caller), but the
    # application names the caller's span as its parent: Envoy's span is a sibling.
    span = collector.wait_span(lambda s: s["traceId"] == B3_TRACE and s.get("parentId") == B3_SPAN)
    assert span["id"] != B3_SPAN


@needs_no_context_propagation
def test_traceparent_continued_in_b3_although_zipkin_ignores_it(owner, collector):
    reply = send(owner, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")])
    assert reply.upstream.trace() == formats(W3C_TRACE, W3C_SPAN, True)
    # Zipkin's span belongs to a trace of its own (it cannot read traceparent)
    envoy_trace = reply.header("x-tracer-trace-id")
    assert envoy_trace != W3C_TRACE
    collector.wait_span(lambda s: s["traceId"] == envoy_trace)


@needs_no_context_propagation
def test_alb_root_continued_with_the_filters_decision(owner):
    reply = send(owner, [("X-Amzn-Trace-Id", ALB_ROOT)])
    got = reply.upstream
    span = got.get("x-b3-spanid")
    assert topology.is_span_id(span)
    # Root without a decision: the filter decides, at probability 0: not sampled,
    # although Envoy's tracer samples 100 %
    assert got.trace() == formats(XRAY_TRACE, span, False)


@needs_no_context_propagation
def test_new_trace_carries_the_filters_decision_not_the_tracers(owner, collector):
    reply = send(owner, [])
    got = reply.upstream
    trace = got.get("x-b3-traceid")
    span = got.get("x-b3-spanid")
    expected = formats(trace, span, False)
    expected["traceparent"] = [f"00-{trace}-{span}-02"]  # a new trace: W3C random flag
    assert got.trace() == expected
    # Envoy sampled its own (unrelated) span anyway: its sampling is the tracer's
    envoy_trace = reply.header("x-tracer-trace-id")
    assert envoy_trace != trace
    collector.wait_span(lambda s: s["traceId"] == envoy_trace)


# ---------------------------------------------------------------------------
# Control: the same, with the tracer propagating
# ---------------------------------------------------------------------------


def test_control_with_propagation_zipkin_overwrites_b3(propagating):
    reply = send(
        propagating, [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")]
    )
    got = reply.upstream
    # B3 is Envoy's span (new span id, parent = caller) while the filter's formats
    # still name the caller's span: two parents for one request
    assert got.get("x-b3-spanid") != B3_SPAN
    assert got.get("x-b3-parentspanid") == B3_SPAN
    assert got.get("traceparent") == f"00-{B3_TRACE}-{B3_SPAN}-01"


def test_control_with_propagation_two_trace_ids_in_one_request(propagating):
    reply = send(propagating, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")])
    got = reply.upstream
    assert got.get("traceparent") == f"00-{W3C_TRACE}-{W3C_SPAN}-01"
    assert got.get("x-b3-traceid") != W3C_TRACE  # Zipkin's new trace won B3
    assert got.get("x-b3-traceid") == reply.header("x-tracer-trace-id")
    # the filter's other formats still carry the client's trace
    assert got.get("b3") == f"{W3C_TRACE}-{W3C_SPAN}-1"
    assert got.get("x-cloud-trace-context").startswith(f"{W3C_TRACE}/")


def test_control_with_propagation_tracer_decision_wins_b3(propagating):
    got = send(propagating, []).upstream
    assert got.get("traceparent").endswith("-02")  # the filter: not sampled
    assert got.get("x-b3-sampled") == "1"  # the tracer: sampled
