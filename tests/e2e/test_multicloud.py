"""The multicloud chain of `make demo-multicloud` (tests/e2e/multicloud_demo.py,
envoy/multicloud/*.yaml): ALB stand-in -> EKS ingress gateway (tracebridge owner, the
untrusted edge, `keep_trace_id_from: ["xray"]`) -> EKS proxy (X-Ray tracer, tracebridge
upstream filter) -> GKE proxy (Zipkin B3 tracer, tracebridge upstream filter) ->
application.

A request entering with only an ALB's `X-Amzn-Trace-Id: Root=...` must reach the
application with that one trace id in every format, each hop's output consistent, and
each span the parent of the next: checked against the segment and span the two tracers
report (a local X-Ray daemon and Zipkin collector stand in for the real ones). The
gateway's decision travels with its explicit randomness: `tracestate: ot=th:0;rv:<14
hex>` (OpenTelemetry "TraceState Handling": rv is exactly 14 lower-case hex digits; p = 1
is th:0), kept by every hop after it.

envoy/multicloud/*.yaml are in a subdirectory, which test_config.py's `envoy/*.yaml`
does not reach: they are validated here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import topology
from harness import REPO_ROOT, envoy_at_least, validate_for_this_envoy
from multicloud_demo import HOPS, Multicloud, trace_ids
from topology import formats

DEMO = Path(__file__).resolve().parent / "multicloud_demo.py"
MULTICLOUD_CONFIGS = sorted((REPO_ROOT / "envoy" / "multicloud").glob("*.yaml"))

ALB_TRACE = "5759e988bd862e3fe1be46a994272793"
ALB_ROOT = "1-5759e988-bd862e3fe1be46a994272793"
RV_STATE = re.compile(r"^ot=th:0;rv:[0-9a-f]{14}$")


@pytest.mark.parametrize("path", MULTICLOUD_CONFIGS, ids=[p.name for p in MULTICLOUD_CONFIGS])
def test_multicloud_config_validates(path, wasm, envoy_cmd, tmp_path):
    # as test_config.py's test_envoy_config_validates (version lines held to their word)
    problems = validate_for_this_envoy(path, tmp_path)
    assert not problems, "\n".join(problems)


def test_there_are_four_hops():
    assert [p.name for p in MULTICLOUD_CONFIGS] == [
        "alb.yaml",
        "eks-gateway.yaml",
        "eks.yaml",
        "gke.yaml",
    ]
    assert [config for _, config, _ in HOPS] == [
        f"envoy/multicloud/{p.name}" for p in MULTICLOUD_CONFIGS
    ]


def recorders(xray_daemon, zipkin_collector):
    def eks(cfg):
        provider = topology.tracing(cfg)["provider"]["typed_config"]
        provider["daemon_endpoint"]["port_value"] = xray_daemon.port

    def gke(cfg):
        topology.set_cluster_port(cfg, "zipkin", zipkin_collector.port)
        cfg["layered_runtime"] = {
            "layers": [{"name": "static", "static_layer": {"tracing.zipkin.min_flush_spans": 1}}]
        }

    return {"eks": eks, "gke": gke}


def test_one_trace_from_the_alb_to_the_application(tmp_path, wasm, envoy_cmd):
    with topology.XRayDaemon() as daemon, topology.ZipkinCollector() as collector:
        with Multicloud(tmp_path, mutate=recorders(daemon, collector)) as chain:
            trip = chain.send([("X-Amzn-Trace-Id", f"Root={ALB_ROOT}")])
            segment = daemon.wait_segment(lambda s: s["trace_id"] == ALB_ROOT)
            eks_span = segment["id"]
            span = collector.wait_span(lambda s: s["traceId"] == ALB_TRACE)
            gke_span = span["id"]

    # the ALB stand-in forwards its header as it came
    assert trip.hops["alb"] == {"x-amzn-trace-id": f"Root={ALB_ROOT}"}
    # the gateway (untrusted callers): the ALB's trace id kept, a new span, decided with
    # fresh randomness (p = 1: th:0), written in the formats it injects; no random flag
    gateway = trip.hops["gateway"]
    assert set(gateway) == {"traceparent", "tracestate", "x-amzn-trace-id"}, gateway
    gateway_span = gateway["traceparent"].split("-")[2]
    assert gateway["traceparent"] == f"00-{ALB_TRACE}-{gateway_span}-01"
    assert topology.is_span_id(gateway_span)
    assert gateway["x-amzn-trace-id"] == f"Root={ALB_ROOT};Parent={gateway_span};Sampled=1"
    assert RV_STATE.match(gateway["tracestate"]), gateway["tracestate"]
    # EKS: the X-Ray tracer continued the gateway's header (its segment is the child of the
    # gateway's span); tracebridge wrote the segment into every format, and kept the
    # gateway's tracestate, which belongs to this trace
    assert segment.get("parent_id") == gateway_span, segment
    expected_eks = formats(ALB_TRACE, eks_span, True) | {"tracestate": [gateway["tracestate"]]}
    assert {k: [v] for k, v in trip.hops["eks"].items()} == expected_eks
    # GKE: Zipkin continued EKS's B3 (trace kept, parent = EKS's segment); tracebridge
    # wrote Zipkin's span into every format. Envoy 1.40's Zipkin re-injected `b3` with
    # the parent; an older one wrote its span into x-b3-* only, with the parent there
    # (test_placement_beside.zipkin_reinjects_b3_single).
    assert span["parentId"] == eks_span and gke_span != eks_span
    expected_app = formats(ALB_TRACE, gke_span, True) | {"tracestate": [gateway["tracestate"]]}
    if envoy_at_least("1.40"):
        expected_app["b3"] = [f"{ALB_TRACE}-{gke_span}-1-{eks_span}"]
    else:
        expected_app["x-b3-parentspanid"] = [eks_span]
    assert {k: [v] for k, v in trip.hops["gke"].items()} == expected_app
    # what left GKE is what the application got: one trace id, the ALB's, everywhere
    assert trip.app.trace() == expected_app
    assert set(trace_ids(trip.hops["gke"]).values()) == {ALB_TRACE}


def test_control_without_tracebridge_on_eks_the_trace_breaks(tmp_path, wasm, envoy_cmd):
    def eks_without_filter(cfg):
        chain = topology.upstream_http_filters(cfg, "gke")
        chain[:] = [f for f in chain if f["name"] != "envoy.filters.http.wasm"]

    with Multicloud(tmp_path, mutate={"eks": eks_without_filter}) as chain:
        trip = chain.send([("X-Amzn-Trace-Id", f"Root={ALB_ROOT}")])

    # EKS sends X-Ray (and the gateway's W3C headers) but no B3; GKE's Zipkin cannot read
    # either and starts a new trace, which GKE's tracebridge then writes into every
    # format, X-Ray included
    eks_out = trip.hops["eks"]
    assert set(eks_out) == {"x-amzn-trace-id", "traceparent", "tracestate"}
    assert eks_out["x-amzn-trace-id"].startswith(f"Root={ALB_ROOT};Parent=")
    app_ids = set(trace_ids(trip.hops["gke"]).values())
    assert len(app_ids) == 1 and ALB_TRACE not in app_ids
    assert ALB_TRACE[8:] not in json.dumps(trip.app.pairs)


# ---------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------

PID_LINE = re.compile(r"^\s+(alb|gateway|eks|gke)\s+Envoy pid (\d+)\s+:(\d+)", re.M)


def assert_gone(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"Envoy pid {pid} still running after the demo")


def test_demo_shows_one_trace_and_stops_everything(wasm, envoy_cmd):
    result = subprocess.run(
        [sys.executable, str(DEMO), "--root", ALB_ROOT],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    pids = [int(pid) for _, pid, _ in PID_LINE.findall(out)]
    assert len(pids) == 4, out
    assert f"ONE trace id in all five formats: {ALB_TRACE}" in out
    label = f"    {'GKE -> app':<14}  "  # the demo pads its labels to the longest
    assert f"{label}00-{ALB_TRACE}-" in out, out
    assert f"{label}Root={ALB_ROOT};Parent=" in out, out
    assert re.search(f"{label}ot=th:0;rv:[0-9a-f]{{14}}\n", out), out
    assert_gone(pids)


def test_demo_serve_stops_everything_on_ctrl_c(wasm, envoy_cmd):
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), "--serve"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("running;"):
                break
        out = "".join(lines)
        assert "running;" in out, out
        ports = {hop: int(port) for hop, _, port in PID_LINE.findall(out)}
        pids = [int(pid) for _, pid, _ in PID_LINE.findall(out)]
        req = urllib.request.Request(
            f"http://127.0.0.1:{ports['alb']}/", headers={"X-Amzn-Trace-Id": f"Root={ALB_ROOT}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert f"00-{ALB_TRACE}-" in r.read().decode()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + rest
        assert_gone(pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
