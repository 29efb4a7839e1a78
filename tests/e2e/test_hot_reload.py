"""Hot reload over ECDS, the way Istio's WasmPlugin delivers the plugin configuration.

envoy/ecds.yaml names the filter in the HCM chain with `config_discovery`; the Wasm
filter itself (with the plugin configuration) is the resource in
envoy/ecds/tracebridge.yaml, read through a `path_config_source`. Envoy watches the
path with inotify: a new version is published by renaming a complete file over it.

The test publishes v1 -> v2 -> v3 (rejected) -> v4 while a background thread sends
requests back to back, and checks that no request fails, that each good version takes
effect without a restart (same PID, ECDS stats), and that the rejected one is logged and
counted while the previous version keeps serving.
"""

from __future__ import annotations

import os
import time

import pytest

import topology
from topology import RenderedEnvoy, Traffic

CONFIG = "envoy/ecds.yaml"
RESOURCE = topology.ECDS_RESOURCE
STAT = topology.ECDS_STAT
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

V1 = {"sampling": {"probability": 0}}
V2 = {
    "inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"],
    "sampling": {"probability": 1},
}
V3_BAD = {"sampling": {"probability": 2}}
V4 = {"inject": ["tracecontext"], "sampling": {"probability": 0}}


def version_text(envoy) -> str:
    _, body = envoy.admin_get("/stats?filter=tracebridge.version_text")
    for line in body.splitlines():
        if line.startswith(STAT + "version_text:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise AssertionError(f"no version_text stat: {body}")


def wait_stat(envoy, name: str, value: int, timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats = topology.ecds_stats(envoy)
        if stats.get(name) == value or time.monotonic() > deadline:
            assert stats.get(name) == value, f"{name}: {stats}"
            return stats
        time.sleep(0.02)


def wait_log(envoy, *needles: str, timeout: float = 15.0) -> str:
    """Envoy's log once it contains every needle (the log file is flushed periodically)."""
    deadline = time.monotonic() + timeout
    while True:
        log = envoy.log()
        missing = [n for n in needles if n not in log]
        if not missing:
            return log
        assert time.monotonic() < deadline, f"not in the log: {missing}\n{envoy.log_tail()}"
        time.sleep(0.1)


def sampled(got) -> str | None:
    return got.get("x-b3-sampled")


def test_shipped_ecds_config_starts_and_serves_the_resource_file(
    tmp_path, upstream, wasm, envoy_cmd
):
    # envoy/ecds.yaml and envoy/ecds/tracebridge.yaml as shipped (paths relative to the
    # repository root, node id and cluster in the bootstrap); only ports changed.
    cfg = topology.load(CONFIG)
    (hcm,) = topology.hcms(cfg)
    (entry,) = [f for f in hcm["http_filters"] if "config_discovery" in f]
    assert entry["config_discovery"]["config_source"]["path_config_source"]["path"] == RESOURCE
    assert entry["config_discovery"]["type_urls"] == [WASM_TYPE]
    resource = topology.load(RESOURCE)
    assert [r["name"] for r in resource["resources"]] == [entry["name"]]

    envoy = RenderedEnvoy(tmp_path, topology.render(CONFIG, clusters={"upstream": upstream.port}))
    with envoy:
        assert wait_stat(envoy, "update_success", 1)["update_rejected"] == 0
        assert version_text(envoy) == resource["version_info"]
        b3 = [
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),  # = 16453819474850114513
            ("X-B3-Sampled", "1"),
        ]
        got = topology.send(envoy.listener_port, b3).upstream
        # the filter from the ECDS file ran: B3 translated into the default formats
        assert got.get("traceparent") == "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        assert got.get("x-cloud-trace-context") == (
            "80f198ee56343ba864fe8b2a57d3eff7/16453819474850114513;o=1"
        )


@pytest.fixture
def ecds_envoy(tmp_path, upstream, wasm, envoy_cmd):
    ecds = topology.EcdsFile(tmp_path / "ecds" / "tracebridge.yaml")
    ecds.path.parent.mkdir()
    ecds.publish(1, V1)

    def mutate(cfg):
        del cfg["node"]  # from the command line instead, as a sidecar gets it
        (hcm,) = topology.hcms(cfg)
        (entry,) = [f for f in hcm["http_filters"] if "config_discovery" in f]
        entry["config_discovery"]["config_source"]["path_config_source"]["path"] = str(ecds.path)

    envoy = RenderedEnvoy(
        tmp_path / "envoy",
        topology.render(CONFIG, clusters={"upstream": upstream.port}, mutate=mutate),
        concurrency=2,
        extra_args=[
            "--service-node", "tracebridge-test",
            "--service-cluster", "tracebridge",
            "--file-flush-interval-msec", "100",  # the log, for the rejection line
        ],  # fmt: skip
    )
    with envoy:
        yield envoy, ecds


def test_hot_reload_under_traffic_and_rejected_update(ecds_envoy):
    envoy, ecds = ecds_envoy
    pid = envoy.pid
    assert wait_stat(envoy, "update_success", 1)["config_reload"] == 1
    assert version_text(envoy) == "1"

    traffic = Traffic(envoy.listener_port).start()
    try:
        # v1: probability 0, the default formats (no `b3`)
        traffic.wait_for(lambda got: sampled(got) == "0")

        # v2: probability 1 and `b3` added, published while requests flow
        t2 = time.monotonic()
        ecds.publish(2, V2)
        first_v2 = traffic.wait_for(lambda got: sampled(got) == "1")
        stats = wait_stat(envoy, "update_success", 2)
        assert stats["config_reload"] == 2 and stats["update_rejected"] == 0
        assert version_text(envoy) == "2"
        time.sleep(0.2)
        after_v2 = traffic.since(first_v2)
        assert after_v2 and all(sampled(g) == "1" and g.get("b3") for g in after_v2)

        # v3: rejected by the filter (probability 2): NACKed, v2 keeps serving
        t3 = time.monotonic()
        ecds.publish(3, V3_BAD)
        stats = wait_stat(envoy, "update_rejected", 1)
        assert stats["config_fail"] == 1 and stats["update_success"] == 2
        assert version_text(envoy) == "2"
        time.sleep(0.3)
        after_v3 = traffic.since(t3)
        assert len(after_v3) > 5
        assert all(sampled(g) == "1" and g.get("b3") for g in after_v3)

        # v4: a good version again is accepted: the rejection did not wedge ECDS
        ecds.publish(4, V4)
        traffic.wait_for(lambda got: sampled(got) is None and got.get("traceparent"))
        assert wait_stat(envoy, "update_success", 3)["update_rejected"] == 1
        assert version_text(envoy) == "4"
    finally:
        traffic.stop()

    assert traffic.failures() == []
    assert len(traffic.since(t2)) > 20, "too few requests overlapped the updates"
    assert envoy.proc.poll() is None and envoy.pid == pid  # no restart
    log = wait_log(
        envoy,
        "tracebridge: invalid configuration: sampling.probability: must be between 0 and 1",
        "Filesystem config update rejected: Unable to create Wasm plugin tracebridge",
    )
    # one Wasm VM compiled for the whole run: updates re-configure, not recompile
    assert log.count("Base Wasm created") == 1


def test_watched_directory_symlink_swap(tmp_path, upstream, wasm, envoy_cmd):
    """The Kubernetes ConfigMap layout: the watched path is a symlink through `..data`,
    and an update swaps `..data` atomically; `watched_directory` makes Envoy re-read
    the path on any move in the directory."""
    ecds_dir = tmp_path / "ecds"
    ecds_dir.mkdir()
    versions = {}
    for version, plugin_cfg in ((1, V1), (2, V2)):
        data = ecds_dir / f"..v{version}"
        data.mkdir()
        topology.EcdsFile(data / "tracebridge.yaml").publish(version, plugin_cfg)
        versions[version] = data
    (ecds_dir / "..data").symlink_to(versions[1].name)
    (ecds_dir / "tracebridge.yaml").symlink_to("..data/tracebridge.yaml")

    def mutate(cfg):
        (hcm,) = topology.hcms(cfg)
        (entry,) = [f for f in hcm["http_filters"] if "config_discovery" in f]
        entry["config_discovery"]["config_source"]["path_config_source"] = {
            "path": str(ecds_dir / "tracebridge.yaml"),
            "watched_directory": {"path": str(ecds_dir)},
        }

    cfg = topology.render(CONFIG, clusters={"upstream": upstream.port}, mutate=mutate)
    envoy = RenderedEnvoy(tmp_path / "envoy", cfg)
    with envoy:
        assert sampled(topology.send(envoy.listener_port).upstream) == "0"
        tmp_link = ecds_dir / "..data_tmp"
        tmp_link.symlink_to(versions[2].name)
        os.rename(tmp_link, ecds_dir / "..data")  # what the kubelet does
        wait_stat(envoy, "update_success", 2)
        assert version_text(envoy) == "2"
        assert sampled(topology.send(envoy.listener_port).upstream) == "1"
