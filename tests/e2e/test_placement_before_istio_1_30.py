"""Istio 1.28 and 1.29 (Envoy 1.36 and 1.37) have no Telemetry `disableContextPropagation`
(Istio 1.30, Envoy 1.38's `no_context_propagation`), so envoy/istio/owner/telemetry.yaml
cannot stop the workload's tracer there. The two recipes of README "Supported versions",
run on every supported Envoy:

* The owner placement without a tracer: envoy/istio/owner/telemetry-before-1.30.yaml
  disables span reporting for the workload, and istiod then gives its listeners no
  tracing configuration at all (istio/istio pilot/pkg/networking/core/tracing.go,
  configureTracingFromTelemetry: a disabled spec returns before the connection manager
  gets a tracer). The sidecar is then a connection manager with the WasmPlugin's filter
  and no tracer: envoy/tracebridge.yaml's shape with owner/wasmplugin.yaml's
  pluginConfig. The control is the same workload with Istio's default Zipkin tracer left
  on, which is what Istio 1.28 makes of telemetry.yaml (it does not know the field): the
  router overwrites B3 with the tracer's context and decision.
* Beside the tracer: envoy/istio/beside-tracer/envoyfilter.yaml's plugin configuration as
  the upstream filter behind a Zipkin tracer (envoy/beside-zipkin.yaml's shape), for a
  caller sending `b3`, which Envoy's Zipkin tracer before 1.40 forwards as it came.

Expected values: B3 README example ids; formats() encodes each format per its spec.
"""

from __future__ import annotations

import pytest
import yaml

import topology
from harness import REPO_ROOT
from topology import RenderedEnvoy, formats, is_span_id

ISTIO = REPO_ROOT / "envoy" / "istio"
WASMPLUGIN = ISTIO / "owner" / "wasmplugin.yaml"
TELEMETRY_BEFORE_1_30 = ISTIO / "owner" / "telemetry-before-1.30.yaml"
ENVOYFILTER = ISTIO / "beside-tracer" / "envoyfilter.yaml"

B3_TRACE, B3_SPAN = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
W3C_TRACE, W3C_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
B3_CALLER = [("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN), ("X-B3-Sampled", "1")]


def resource(path) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def owner_plugin_config() -> dict:
    """What istiod hands the filter: the WasmPlugin's pluginConfig as JSON."""
    return resource(WASMPLUGIN)["spec"]["pluginConfig"]


def beside_plugin_config() -> dict:
    """The plugin configuration inside the EnvoyFilter's cluster patch."""
    (plugin,) = topology.wasm_plugins(resource(ENVOYFILTER))
    return topology.plugin_json(plugin)


def without_b3_single(expected: dict) -> dict:
    # owner/wasmplugin.yaml injects tracecontext, b3multi, xray and cloudtrace
    return {name: values for name, values in expected.items() if name != "b3"}


def send(envoy, headers, path="/") -> topology.Reply:
    reply = topology.send(envoy.listener_port, headers, path=path)
    assert reply.status == 200, reply.body
    return reply


@pytest.fixture(scope="module")
def no_tracer(tmp_path_factory, upstream, wasm, envoy_cmd):
    """checkout's sidecar with telemetry-before-1.30.yaml: the filter, no tracer."""

    def mutate(cfg):
        (hcm,) = topology.hcms(cfg)
        assert "tracing" not in hcm
        (plugin,) = topology.wasm_plugins(cfg)
        topology.set_plugin_config(plugin, owner_plugin_config())

    cfg = topology.render("envoy/tracebridge.yaml", clusters={"upstream": upstream.port}, mutate=mutate)
    envoy = RenderedEnvoy(tmp_path_factory.mktemp("owner-no-tracer"), cfg).start()
    yield envoy
    envoy.stop()


@pytest.fixture(scope="module")
def istio_tracer(tmp_path_factory, upstream, wasm, envoy_cmd):
    """The control: checkout's sidecar with Istio's Zipkin tracer still on (100 %)."""
    with topology.ZipkinCollector() as collector:

        def mutate(cfg):
            del topology.tracing(cfg)["no_context_propagation"]
            (plugin,) = topology.wasm_plugins(cfg)
            topology.set_plugin_config(plugin, owner_plugin_config())

        cfg = topology.render(
            "envoy/owner-no-context-propagation.yaml",
            clusters={"upstream": upstream.port, "zipkin": collector.port},
            mutate=mutate,
        )
        envoy = RenderedEnvoy(tmp_path_factory.mktemp("owner-istio-tracer"), cfg).start()
        yield envoy
        envoy.stop()


@pytest.fixture(scope="module")
def beside(tmp_path_factory, upstream, wasm, envoy_cmd):
    """A sidecar's outbound cluster with the EnvoyFilter's filter behind Zipkin; spans
    recorded."""
    with topology.ZipkinCollector() as collector:

        def mutate(cfg):
            (plugin,) = topology.wasm_plugins(cfg)
            topology.set_plugin_config(plugin, beside_plugin_config())
            cfg["layered_runtime"] = {
                "layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]
            }

        cfg = topology.render(
            "envoy/beside-zipkin.yaml",
            clusters={"upstream": upstream.port, "zipkin": collector.port},
            mutate=mutate,
        )
        envoy = RenderedEnvoy(tmp_path_factory.mktemp("beside-istio"), cfg).start()
        envoy.spans = collector
        yield envoy
        envoy.stop()


# ---------------------------------------------------------------------------
# Owner without a tracer
# ---------------------------------------------------------------------------


def test_recipe_telemetry_removes_the_tracer_of_the_plugins_workload():
    plugin, telemetry = resource(WASMPLUGIN), resource(TELEMETRY_BEFORE_1_30)
    assert telemetry["metadata"]["namespace"] == plugin["metadata"]["namespace"]
    assert telemetry["spec"]["selector"] == plugin["spec"]["selector"]
    assert plugin["spec"]["match"] == [{"mode": "CLIENT_AND_SERVER"}]
    # one entry, no match (both directions), no provider, no field of Istio 1.30
    assert telemetry["spec"]["tracing"] == [{"disableSpanReporting": True}]


def test_caller_b3_continued_in_every_format(no_tracer):
    got = send(no_tracer, B3_CALLER).upstream
    assert got.trace() == without_b3_single(formats(B3_TRACE, B3_SPAN, True))


def test_application_traceparent_leaves_in_every_format(no_tracer):
    # outbound: the application's SDK writes W3C only; the callee gets every format
    got = send(no_tracer, [("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-01")]).upstream
    assert got.trace() == without_b3_single(formats(W3C_TRACE, W3C_SPAN, True))


def test_new_trace_carries_the_filters_decision(no_tracer):
    # owner/wasmplugin.yaml: /healthz is sampled with probability 0
    got = send(no_tracer, [], path="/healthz").upstream
    trace, span = got.get("x-b3-traceid"), got.get("x-b3-spanid")
    expected = without_b3_single(formats(trace, span, False))
    expected["traceparent"] = [f"00-{trace}-{span}-02"]  # a new trace: W3C random flag
    assert got.trace() == expected


def test_control_istios_tracer_overwrites_b3_and_the_decision(istio_tracer):
    got = send(istio_tracer, B3_CALLER).upstream
    # B3 is the tracer's span (new id, parent = the caller), the other formats the
    # filter's (the caller's span): two parents in one request
    assert got.get("x-b3-spanid") != B3_SPAN
    assert got.get("x-b3-parentspanid") == B3_SPAN
    assert got.get("traceparent") == f"00-{B3_TRACE}-{B3_SPAN}-01"
    # a new trace: the filter decides "not sampled", the tracer (100 %) "sampled"
    got = send(istio_tracer, [], path="/healthz").upstream
    assert got.get("traceparent").endswith("-02")
    assert got.get("x-b3-sampled") == "1"


# ---------------------------------------------------------------------------
# Beside the tracer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caller, trace, parent",
    [
        ([("b3", f"{B3_TRACE}-{B3_SPAN}-1")], B3_TRACE, B3_SPAN),
        (
            [("X-B3-TraceId", W3C_TRACE), ("X-B3-SpanId", W3C_SPAN), ("X-B3-Sampled", "1")],
            W3C_TRACE,
            W3C_SPAN,
        ),
    ],
    ids=["b3-single", "b3-multi"],
)
def test_beside_recipe_passes_envoys_span_on_in_every_format(beside, caller, trace, parent):
    got = send(beside, caller).upstream
    # the span Envoy reported for this request: the caller's child
    span = beside.spans.wait_span(lambda s: s["traceId"] == trace and s.get("parentId") == parent)
    new_span = span["id"]
    assert is_span_id(new_span) and new_span != parent
    expected = formats(trace, new_span, True)
    # `b3` may keep the tracer's parent part (Envoy 1.40 re-injects `b3` itself and
    # the filter leaves a header already saying the chosen context as it is)
    b3 = got.get("b3")
    assert b3 in (expected.pop("b3")[0], f"{trace}-{new_span}-1-{parent}"), b3
    assert got.get("x-b3-parentspanid") in (None, parent)
    assert {k: v for k, v in got.trace().items() if k not in ("b3", "x-b3-parentspanid")} == expected
