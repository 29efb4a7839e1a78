"""The proxy's own spans (`spans`), through real Envoys, reported to a real OTLP/HTTP receiver
(otlp_receiver.py: every export decoded with OpenTelemetry's generated classes, unknown fields
rejected).

Expected values come from the OTLP proto (field meanings, SpanFlags), OpenTelemetry's HTTP
semantic conventions (names, attributes, status) and W3C Trace Context (the parent id the
upstream receives). Envoys run envoy/spans.yaml with one worker, so one exporter sees every
request.
"""

from __future__ import annotations

import re
import time
import pytest

import topology
from harness import REPO_ROOT, EnvoyExited, free_port
from otlp_receiver import OtlpReceiver
from topology import RenderedEnvoy

CONFIG = "envoy/spans.yaml"
CRATE_VERSION = re.search(
    r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "Cargo.toml").read_text(), re.M
).group(1)

TRACE, CALLER = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SAMPLED_PARENT = ("traceparent", f"00-{TRACE}-{CALLER}-01")

# OTLP SpanFlags: the low byte is W3C's trace flags; HAS_IS_REMOTE, IS_REMOTE.
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200

ISTIO_NODE = {
    "id": "sidecar~10.0.0.7~checkout-7d9f-x2.shop~shop.svc.cluster.local",
    "cluster": "checkout.shop",
    "metadata": {
        "NAME": "checkout-7d9f-x2",
        "NAMESPACE": "shop",
        "WORKLOAD_NAME": "checkout",
        "OWNER": "kubernetes://apis/apps/v1/namespaces/shop/deployments/checkout",
    },
}


def spans_config(probability: float = 1, **spans) -> dict:
    return {
        "sampling": {"probability": probability},
        "spans": {"cluster": "otel-collector", "flush_interval_ms": 100, **spans},
    }


def spans_envoy(
    tmp_path_factory,
    upstream_port: int,
    collector_port: int,
    plugin_config: dict,
    *,
    node: dict | None = None,
    mutate=None,
) -> RenderedEnvoy:
    def change(cfg):
        (plugin,) = topology.wasm_plugins(cfg)
        topology.set_plugin_config(plugin, plugin_config)
        if node is not None:
            cfg["node"] = node
        if mutate is not None:
            mutate(cfg)

    cfg = topology.render(
        CONFIG,
        clusters={"upstream": upstream_port, "otel-collector": collector_port},
        mutate=change,
    )
    return RenderedEnvoy(tmp_path_factory.mktemp("spans"), cfg).start()


def add_status_routes(cfg: dict) -> None:
    """/status/<code> answered by Envoy itself (the filter runs before the router)."""
    (hcm,) = topology.hcms(cfg)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    for code in (404, 503):
        routes.insert(
            0, {"match": {"path": f"/status/{code}"}, "direct_response": {"status": code}}
        )


def span_counters(envoy) -> dict[str, int]:
    stats = envoy.stats("tracebridge.spans")
    return {name.rsplit(".", 1)[1]: value for name, value in stats.items()}


def wait_counter(envoy, name: str, at_least: int, timeout: float = 15.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counters = span_counters(envoy)
        if counters.get(name, 0) >= at_least or time.monotonic() > deadline:
            assert counters.get(name, 0) >= at_least, f"{name} < {at_least}: {counters}"
            return counters
        time.sleep(0.05)


def upstream_ids(reply: topology.Reply) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of the traceparent the upstream received."""
    _, trace, parent, flags = reply.upstream.get("traceparent").split("-")
    return trace, parent, flags


def send(envoy, headers=(), path="/", status=200) -> topology.Reply:
    reply = topology.send(envoy.listener_port, headers, path=path)
    assert reply.status == status, reply.body
    return reply


@pytest.fixture(scope="module")
def otlp():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory, upstream, wasm, envoy_cmd, otlp):
    """Probability 1, Istio's node metadata, /status/404 and /status/503."""
    envoy = spans_envoy(
        tmp_path_factory,
        upstream.port,
        otlp.port,
        spans_config(),
        node=ISTIO_NODE,
        mutate=add_status_routes,
    )
    yield envoy
    envoy.stop()


# ---------------------------------------------------------------------------------------------
# One span per sampled request, with the ids the upstream received
# ---------------------------------------------------------------------------------------------


def test_a_sampled_request_is_one_span_whose_id_the_upstream_gets_as_its_parent(sidecar, otlp):
    reply = send(
        sidecar,
        [SAMPLED_PARENT, ("user-agent", "tracebridge-e2e/1"), ("tracestate", "rojo=1")],
        path="/orders/7?id=7",
    )
    trace, parent, flags = upstream_ids(reply)
    assert (trace, flags) == (TRACE, "01")
    assert parent != CALLER, "the upstream's parent is the proxy's span, not the caller's"
    got = reply.upstream
    # Every injected format names the same new span.
    assert got.get("x-b3-spanid") == parent
    assert got.get("x-amzn-trace-id") == f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={parent};Sampled=1"
    assert got.get("x-cloud-trace-context") == f"{TRACE}/{int(parent, 16)};o=1"

    span = otlp.wait_span(lambda s: s.span_id == parent)
    assert span.trace_id == TRACE
    assert span.parent_span_id == CALLER
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.span.name == "GET"  # semantic conventions: {method}, no route template
    assert span.status == "STATUS_CODE_UNSET"
    # Sampled, no random flag (the caller's traceparent had none), the parent is remote.
    assert span.span.flags == 0x01 | HAS_IS_REMOTE | IS_REMOTE
    assert span.span.trace_state == "rojo=1"
    assert 0 < span.span.start_time_unix_nano <= span.span.end_time_unix_nano
    assert abs(span.span.start_time_unix_nano / 1e9 - time.time()) < 600
    assert span.attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/orders/7",
        "url.query": "id=7",
        "server.address": "127.0.0.1",
        "server.port": sidecar.listener_port,
        "network.peer.address": "127.0.0.1",
        "network.peer.port": span.attributes["network.peer.port"],
        "network.protocol.version": "1.1",
        "user_agent.original": "tracebridge-e2e/1",
        "http.response.status_code": 200,
        "tracebridge.sampling.reason": "parent",
        "tracebridge.source_format": "tracecontext",
    }
    assert 0 < span.attributes["network.peer.port"] < 65536
    assert span.scope == ("tracebridge", CRATE_VERSION)


def test_the_resource_comes_from_istios_node_metadata(sidecar, otlp):
    _, parent, _ = upstream_ids(send(sidecar, [SAMPLED_PARENT]))
    span = otlp.wait_span(lambda s: s.span_id == parent)
    assert span.resource == {
        # Envoy's node cluster: Istio's tracing service name, what its own tracers report.
        "service.name": "checkout.shop",
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "checkout-7d9f-x2",
        "k8s.deployment.name": "checkout",
    }


def test_a_new_trace_is_a_root_span(sidecar, otlp):
    trace, parent, flags = upstream_ids(send(sidecar))
    assert flags == "03", "sampled, and a random trace id the filter generated"
    span = otlp.wait_span(lambda s: s.span_id == parent)
    assert span.trace_id == trace
    assert span.parent_span_id == "", "a root span has no parent"
    assert span.span.flags == 0x03 | HAS_IS_REMOTE
    assert span.attributes["tracebridge.sampling.reason"] == "probability"
    assert "tracebridge.source_format" not in span.attributes
    # A root at probability 1 writes th:0, and the span says so.
    assert span.span.trace_state == "ot=th:0"


@pytest.mark.parametrize(
    "code, status, error_type",
    [(503, "STATUS_CODE_ERROR", "503"), (404, "STATUS_CODE_UNSET", None)],
)
def test_server_spans_are_errors_for_5xx_only(sidecar, otlp, code, status, error_type):
    reply = topology.send(sidecar.listener_port, [SAMPLED_PARENT], path=f"/status/{code}")
    assert reply.status == code
    span = otlp.wait_span(
        lambda s: s.attributes.get("url.path") == f"/status/{code}" and s.trace_id == TRACE
    )
    assert span.attributes["http.response.status_code"] == code
    assert span.status == status
    assert span.attributes.get("error.type") == error_type


def test_unsampled_requests_record_nothing_and_keep_the_callers_span(
    tmp_path_factory, upstream, wasm, envoy_cmd
):
    with OtlpReceiver() as otlp:
        envoy = spans_envoy(tmp_path_factory, upstream.port, otlp.port, spans_config(0))
        try:
            unsampled = f"00-{TRACE}-{CALLER}-00"
            for _ in range(10):
                assert send(envoy, [("traceparent", unsampled)]).upstream.get("traceparent") == unsampled
                assert upstream_ids(send(envoy))[2] == "02"  # a new trace, not sampled
            # A sampled caller afterwards: its span marks the end of what was recorded.
            _, marker, _ = upstream_ids(send(envoy, [SAMPLED_PARENT]))
            spans = otlp.wait_spans(1)
            assert wait_counter(envoy, "exported", 1)["exported"] == 1
            time.sleep(0.3)  # three more flush intervals: anything else would have arrived
            assert [s.span_id for s in otlp.spans()] == [marker]
            assert span_counters(envoy)["exported"] == 1
        finally:
            envoy.stop()
    assert len(spans) == 1


def test_without_spans_there_are_no_span_counters(proxy):
    proxy.send([SAMPLED_PARENT])
    assert not any(".spans." in name for name in proxy.counters())


# ---------------------------------------------------------------------------------------------
# Export: batches, bounded queue, failures
# ---------------------------------------------------------------------------------------------


def test_spans_are_batched(tmp_path_factory, upstream, wasm, envoy_cmd):
    with OtlpReceiver() as otlp:
        envoy = spans_envoy(
            tmp_path_factory, upstream.port, otlp.port, spans_config(flush_interval_ms=500)
        )
        try:
            sent = {upstream_ids(send(envoy, [SAMPLED_PARENT]))[1] for _ in range(30)}
            spans = otlp.wait_spans(30)
            assert {s.span_id for s in spans} == sent
            assert len(spans) == 30, "each span once"
            assert 1 <= len(otlp.exports) < 30, f"{len(otlp.exports)} exports for 30 spans"
            assert wait_counter(envoy, "exported", 30)["exported"] == 30
            export = otlp.exports[0]
            assert export.headers["host"] == "otel-collector"  # authority defaults to the cluster
            assert export.headers["user-agent"] == f"tracebridge/{CRATE_VERSION}"
        finally:
            envoy.stop()


def test_a_full_batch_is_sent_before_the_flush_interval(tmp_path_factory, upstream, wasm, envoy_cmd):
    with OtlpReceiver() as otlp:
        config = spans_config(flush_interval_ms=600_000, max_batch=5, authority="otel:4318")
        envoy = spans_envoy(tmp_path_factory, upstream.port, otlp.port, config)
        try:
            sent = [upstream_ids(send(envoy, [SAMPLED_PARENT]))[1] for _ in range(5)]
            # Ten minutes before the interval is over: only a full batch explains an export.
            spans = otlp.wait_spans(5, timeout=15)
            assert [s.span_id for s in spans] == sent
            assert len(otlp.exports) == 1
            assert otlp.exports[0].headers["host"] == "otel:4318"
        finally:
            envoy.stop()


def test_a_full_queue_drops_the_oldest_spans(tmp_path_factory, upstream, wasm, envoy_cmd):
    with OtlpReceiver() as otlp:
        # The first batch (3 spans) is held 3 s by the collector; meanwhile 5 more spans meet
        # a queue of 3: the 2 oldest are dropped, the last 3 leave when the answer comes.
        otlp.answer(delay=3.0)
        config = spans_config(flush_interval_ms=600_000, max_queue=3, timeout_ms=10_000)
        envoy = spans_envoy(tmp_path_factory, upstream.port, otlp.port, config)
        try:
            first = [upstream_ids(send(envoy, [SAMPLED_PARENT]))[1] for _ in range(3)]
            otlp.wait_spans(3)
            otlp.answer()
            later = [upstream_ids(send(envoy, [SAMPLED_PARENT]))[1] for _ in range(5)]
            spans = otlp.wait_spans(6, timeout=20)
            assert [s.span_id for s in spans] == first + later[2:]
            counters = wait_counter(envoy, "exported", 6)
            assert counters["dropped"] == 2
            assert counters.get("export_failed", 0) == 0
        finally:
            envoy.stop()


def test_a_collector_that_is_down_changes_no_answer(tmp_path_factory, upstream, wasm, envoy_cmd):
    closed = free_port()  # nothing listens there
    envoy = spans_envoy(tmp_path_factory, upstream.port, closed, spans_config())
    try:
        for i in range(40):
            reply = send(envoy, [SAMPLED_PARENT], path=f"/{i}")
            trace, parent, flags = upstream_ids(reply)
            assert (trace, flags) == (TRACE, "01") and parent != CALLER
            assert reply.upstream.get("x-b3-spanid") == parent
        counters = wait_counter(envoy, "export_failed", 40)
        assert counters.get("exported", 0) == 0
    finally:
        envoy.stop()  # flushes its log
    # Logged when exports start failing, not once per export.
    warnings = [line for line in envoy.log().splitlines() if "span export to cluster" in line]
    assert len(warnings) == 1, warnings


def test_a_slow_collector_gets_one_export_at_a_time_and_no_retries(
    tmp_path_factory, upstream, wasm, envoy_cmd
):
    with OtlpReceiver() as otlp:
        otlp.answer(delay=1.0)  # longer than timeout_ms: every export times out
        envoy = spans_envoy(
            tmp_path_factory, upstream.port, otlp.port, spans_config(timeout_ms=200)
        )
        try:
            sent = []
            for _ in range(20):
                sent.append(upstream_ids(send(envoy, [SAMPLED_PARENT]))[1])
                time.sleep(0.05)
            wait_counter(envoy, "export_failed", 20, timeout=20)
            received = [s.span_id for s in otlp.spans()]
            assert otlp.max_active == 1, "one export in flight per worker"
            assert otlp.abandoned >= 2, "the proxy hung up at its timeout"
            assert sorted(received) == sorted(set(received)), "a timed-out batch is not resent"
            assert set(received) <= set(sent)
            assert span_counters(envoy).get("exported", 0) == 0
        finally:
            envoy.stop()


def test_a_partial_success_counts_the_rejected_spans(tmp_path_factory, upstream, wasm, envoy_cmd):
    with OtlpReceiver() as otlp:
        otlp.answer(rejected_spans=2)
        config = spans_config(flush_interval_ms=600_000, max_batch=3)
        envoy = spans_envoy(tmp_path_factory, upstream.port, otlp.port, config)
        try:
            for _ in range(3):
                send(envoy, [SAMPLED_PARENT])
            otlp.wait_spans(3)
            counters = wait_counter(envoy, "export_failed", 2)
            assert (counters["exported"], counters["export_failed"]) == (1, 2)
        finally:
            envoy.stop()


# ---------------------------------------------------------------------------------------------
# Span kind from the listener's direction
# ---------------------------------------------------------------------------------------------


def outbound_listener(cfg: dict) -> None:
    for listener in cfg["static_resources"]["listeners"]:
        listener["traffic_direction"] = "OUTBOUND"


@pytest.mark.parametrize(
    "kind_setting, direction, kind",
    [
        (None, "OUTBOUND", "SPAN_KIND_CLIENT"),
        (None, "INBOUND", "SPAN_KIND_SERVER"),
        ("server", "OUTBOUND", "SPAN_KIND_SERVER"),
        ("client", "INBOUND", "SPAN_KIND_CLIENT"),
    ],
)
def test_the_span_kind_follows_the_listener_unless_configured(
    tmp_path_factory, upstream, wasm, envoy_cmd, kind_setting, direction, kind
):
    def mutate(cfg):
        for listener in cfg["static_resources"]["listeners"]:
            listener["traffic_direction"] = direction

    extra = {} if kind_setting is None else {"kind": kind_setting}
    with OtlpReceiver() as otlp:
        envoy = spans_envoy(
            tmp_path_factory, upstream.port, otlp.port, spans_config(**extra), mutate=mutate
        )
        try:
            _, parent, _ = upstream_ids(send(envoy, [SAMPLED_PARENT], path="/items?sig=x"))
            span = otlp.wait_span(lambda s: s.span_id == parent)
        finally:
            envoy.stop()
    assert span.kind == kind
    attrs = span.attributes
    if kind == "SPAN_KIND_CLIENT":
        # Client spans: url.full (signed-URL credentials redacted), the server's port, and the
        # upstream the proxy connected to as the network peer.
        assert attrs["url.full"] == f"http://127.0.0.1:{envoy.listener_port}/items?sig=REDACTED"
        assert attrs["server.port"] == envoy.listener_port
        assert attrs["network.peer.address"] == "127.0.0.1"
        assert attrs["network.peer.port"] == upstream.port
        assert "url.path" not in attrs
    else:
        assert attrs["url.path"] == "/items"
        assert attrs["url.query"] == "sig=REDACTED"
        assert "url.full" not in attrs


# ---------------------------------------------------------------------------------------------
# Two Envoys: one connected trace
# ---------------------------------------------------------------------------------------------


def test_an_edge_and_a_mesh_proxy_give_one_connected_trace(
    tmp_path_factory, upstream, wasm, envoy_cmd
):
    with OtlpReceiver() as otlp:
        mesh = spans_envoy(
            tmp_path_factory,
            upstream.port,
            otlp.port,
            # The mesh continues the edge's decision; it would sample nothing by itself.
            spans_config(0, service_name="checkout"),
            node={"id": "mesh", "cluster": "checkout.shop"},
        )
        edge = spans_envoy(
            tmp_path_factory,
            mesh.listener_port,
            otlp.port,
            spans_config(1),
            node={"id": "edge", "cluster": "edge"},
        )
        try:
            trace, app_parent, flags = upstream_ids(send(edge))
            assert flags == "03"
            spans = otlp.wait_spans(2)
        finally:
            edge.stop()
            mesh.stop()
    by_service = {s.resource["service.name"]: s for s in spans}
    assert set(by_service) == {"edge", "checkout"}, spans
    edge_span, mesh_span = by_service["edge"], by_service["checkout"]
    assert edge_span.trace_id == mesh_span.trace_id == trace
    assert edge_span.parent_span_id == "", "the edge started the trace"
    assert mesh_span.parent_span_id == edge_span.span_id
    assert app_parent == mesh_span.span_id, "the application's parent is the mesh span"
    assert mesh_span.attributes["tracebridge.sampling.reason"] == "parent"
    # The edge's span encloses the mesh's.
    assert edge_span.span.start_time_unix_nano <= mesh_span.span.start_time_unix_nano
    assert mesh_span.span.end_time_unix_nano <= edge_span.span.end_time_unix_nano


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

INVALID = {
    "no-cluster": ('{"spans": {}}', r"spans\.cluster: is required"),
    "unknown-key": ('{"spans": {"cluster": "c", "endpoint": "x"}}', r"spans\.endpoint: unknown key"),
    "bad-kind": ('{"spans": {"cluster": "c", "kind": "producer"}}', r"spans\.kind: unknown kind"),
    "zero-interval": (
        '{"spans": {"cluster": "c", "flush_interval_ms": 0}}',
        r"spans\.flush_interval_ms: must be a whole number",
    ),
}


@pytest.mark.parametrize("config, message", INVALID.values(), ids=INVALID.keys())
def test_a_bad_spans_configuration_is_refused(start_envoy, config, message):
    envoy = start_envoy(config)
    with pytest.raises(EnvoyExited):
        envoy.start()
    assert re.search(r"tracebridge: invalid configuration: " + message, envoy.log()), envoy.log_tail()
