#!/usr/bin/env python3
"""Soak run (`make soak`): tracebridge in its widest configuration under saturating load for
SOAK_SECONDS (default 600), with the plugin configuration flipped good, bad, good over ECDS
while the load runs.

  wrk (benches/soak/headers.lua: every request a different mix of valid and broken headers of
  every format, baggage in three spellings, force tokens)
    -> front Envoy, --concurrency 2, tracebridge delivered over ECDS (envoy/ecds.yaml) with
       benches/envoy/tracebridge-widest.json
    -> upstream Envoy answering every request itself (benches/envoy/upstream.yaml)

Every ~10 s it prints the front Envoy's memory: admin /memory `allocated` and `heap_size`, and
the process's resident set (/proc/<pid>/status VmRSS), with the requests so far. At 40%, 50% and
60% of the run it publishes a new ECDS resource: a good variant, a bad one (probability 2, which
the filter refuses) and the widest configuration again.

Fails (exit 1) when:
  - a request failed: a non-2xx response or a socket error (connect, read, write, timeout);
  - an ECDS update was not taken as expected: the good ones not accepted (update_success), the
    bad one not NACKed (update_rejected), or the bad one accepted;
  - memory grew: the RSS or tcmalloc's allocated bytes at the end exceed the figure after the
    warm-up by more than --max-growth-percent and --max-growth-mb (both must be exceeded);
  - Envoy exited or restarted.
The load is bounded in time (wrk -d), and goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import yaml  # noqa: E402

import harness  # noqa: E402
import topology  # noqa: E402
from topology import RenderedEnvoy  # noqa: E402

WIDEST = REPO / "benches/envoy/tracebridge-widest.json"
UPSTREAM = REPO / "benches/envoy/upstream.yaml"
LUA = REPO / "benches/soak/headers.lua"
ECDS_CONFIG = "envoy/ecds.yaml"


class QuietEnvoy(RenderedEnvoy):
    """The harness's Envoy without its debug log of the Wasm component: at saturation it would
    write a line per request."""

    def command(self) -> list[str]:
        return ["wasm:info" if arg == "wasm:debug" else arg for arg in super().command()]


def wait_ecds(envoy, name: str, value: int, timeout: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats = topology.ecds_stats(envoy)
        if stats.get(name, 0) >= value or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def memory(envoy) -> dict[str, int]:
    """The front Envoy's memory: tcmalloc's figures from admin /memory, and VmRSS."""
    _, body = envoy.admin_get("/memory")
    mem = json.loads(body)
    rss = 0
    for line in Path(f"/proc/{envoy.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {
        "allocated": int(mem.get("allocated", 0)),
        "heap_size": int(mem.get("heap_size", 0)),
        "rss": rss,
    }


def mb(n: int) -> str:
    return f"{n / 1048576:8.1f}"


def downstream_requests(envoy) -> int:
    stats = envoy.stats("http.ingress_http.downstream_rq_total")
    return stats.get("http.ingress_http.downstream_rq_total", 0)


def parse_wrk(text: str) -> dict[str, int]:
    out = {"requests": 0, "non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return out


def good_variant() -> dict:
    """The widest configuration with other choices: what a second good version might say."""
    cfg = json.loads(WIDEST.read_text())
    cfg["sampling"]["probability"] = 0.5
    cfg["inject"] = ["tracecontext", "b3multi", "xray", "cloudtrace", "baggage"]
    return cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None,
                        help="the memory baseline is taken after this (default: 10%% of the run, "
                        "at least 30 s)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-growth-mb", type=float, default=32.0)
    parser.add_argument("--max-growth-percent", type=float, default=20.0)
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(30.0, args.seconds * 0.1)
    if args.seconds < warmup + 3 * args.interval:
        print(f"error: --seconds {args.seconds:g} leaves no time after the warm-up", file=sys.stderr)
        return 2

    harness.require_wasm()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: no wrk on PATH (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    widest = json.loads(WIDEST.read_text())
    failures: list[str] = []

    with tempfile.TemporaryDirectory(prefix="tracebridge-soak-") as tmp:
        tmp = Path(tmp)
        upstream_port = harness.free_port()
        upstream_cfg = yaml.safe_load(
            UPSTREAM.read_text()
            .replace("__ADMIN_PORT__", "0")
            .replace("__LISTEN_PORT__", str(upstream_port))
        )
        upstream = QuietEnvoy(tmp / "upstream", upstream_cfg, concurrency=1)

        ecds = topology.EcdsFile(tmp / "ecds" / "tracebridge.yaml")
        ecds.path.parent.mkdir()
        ecds.publish(1, widest)

        def mutate(cfg):
            del cfg["node"]
            (hcm,) = topology.hcms(cfg)
            (entry,) = [f for f in hcm["http_filters"] if "config_discovery" in f]
            entry["config_discovery"]["config_source"]["path_config_source"]["path"] = str(
                ecds.path
            )

        front = QuietEnvoy(
            tmp / "front",
            topology.render(ECDS_CONFIG, clusters={"upstream": upstream_port}, mutate=mutate),
            concurrency=2,
            extra_args=["--service-node", "tracebridge-soak", "--service-cluster", "tracebridge"],
        )
        with upstream, front:
            pid = front.pid
            stats = wait_ecds(front, "update_success", 1)
            if stats.get("update_success", 0) < 1:
                print(f"error: the widest configuration was not accepted: {stats}", file=sys.stderr)
                print(front.log_tail(), file=sys.stderr)
                return 1
            seconds = int(round(args.seconds))
            print(f"==> soak: {seconds} s, wrk -t1 -c{args.connections} with {LUA.relative_to(REPO)}")
            print(f"    front Envoy pid {pid} (--concurrency 2, ECDS, {WIDEST.relative_to(REPO)}),"
                  f" upstream Envoy on 127.0.0.1:{upstream_port}")
            wrk_out = tmp / "wrk.out"
            with open(wrk_out, "w") as out:
                load = subprocess.Popen(
                    [wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s",
                     "-s", str(LUA), front.url + "/"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            start = time.monotonic()
            flips = [
                (0.4, 2, good_variant(), "good (probability 0.5, fewer formats)"),
                (0.5, 3, {**widest, "sampling": {**widest["sampling"], "probability": 2}},
                 "bad (sampling.probability 2)"),
                (0.6, 4, widest, "good (the widest again)"),
            ]  # fmt: skip
            samples: list[tuple[float, dict[str, int]]] = []
            baseline = None
            print(f"{'t/s':>6} {'requests':>10} {'allocated/MB':>13} {'heap/MB':>9} {'RSS/MB':>8}")
            next_sample = 0.0
            try:
                while load.poll() is None:
                    elapsed = time.monotonic() - start
                    while flips and elapsed >= flips[0][0] * args.seconds:
                        _, version, cfg, what = flips.pop(0)
                        before = topology.ecds_stats(front)
                        ecds.publish(version, cfg)
                        bad = cfg["sampling"]["probability"] == 2
                        name = "update_rejected" if bad else "update_success"
                        after = wait_ecds(front, name, before.get(name, 0) + 1)
                        took = after.get(name, 0) > before.get(name, 0)
                        verdict = ("NACKed" if bad else "accepted") if took else "NOT SEEN"
                        print(f"{elapsed:6.0f} ECDS version {version}: {what}: {verdict}"
                              f" (update_success {after.get('update_success')},"
                              f" update_rejected {after.get('update_rejected', 0)})")
                        if not took:
                            failures.append(f"ECDS version {version} ({what}) was not {verdict}")
                        if bad and after.get("update_success", 0) != before.get("update_success", 0):
                            failures.append(f"ECDS version {version} ({what}) was accepted")
                    if elapsed >= next_sample:
                        mem = memory(front)
                        samples.append((elapsed, mem))
                        if baseline is None and elapsed >= warmup:
                            baseline = mem
                        print(f"{elapsed:6.0f} {downstream_requests(front):>10} "
                              f"{mb(mem['allocated']):>13} {mb(mem['heap_size']):>9} {mb(mem['rss']):>8}"
                              + ("   <- baseline after warm-up" if baseline is mem else ""))
                        next_sample += args.interval
                    if front.proc.poll() is not None:
                        failures.append(f"the front Envoy exited ({front.proc.returncode})")
                        break
                    time.sleep(0.5)
            finally:
                if load.poll() is None:
                    load.terminate()
                load.wait(timeout=30)
            end = memory(front)
            elapsed = time.monotonic() - start
            samples.append((elapsed, end))
            print(f"{elapsed:6.0f} {downstream_requests(front):>10} {mb(end['allocated']):>13} "
                  f"{mb(end['heap_size']):>9} {mb(end['rss']):>8}   <- end")
            text = wrk_out.read_text()
            result = parse_wrk(text)
            print("==> wrk:")
            print("    " + "\n    ".join(line for line in text.splitlines() if line.strip()))
            errors = sum(result[k] for k in ("non_2xx", "connect", "read", "write", "timeout"))
            if result["requests"] == 0:
                failures.append("wrk reported no requests")
            if errors:
                failures.append(f"failed requests: {result}")
            if front.proc.poll() is not None or front.pid != pid:
                failures.append("the front Envoy did not run the whole time")
            for key, name in (("rss", "RSS"), ("allocated", "allocated")):
                base = (baseline or samples[0][1])[key]
                grew = end[key] - base
                limit_mb = args.max_growth_mb * 1048576
                limit_pct = base * args.max_growth_percent / 100
                print(f"==> memory {name}: {mb(base).strip()} MB after warm-up, "
                      f"{mb(end[key]).strip()} MB at the end ({grew / 1048576:+.1f} MB)")
                if grew > limit_mb and grew > limit_pct:
                    failures.append(f"{name} grew by {grew / 1048576:.1f} MB "
                                    f"(over {args.max_growth_mb:g} MB and {args.max_growth_percent:g}%)")
            tb = front.stats("tracebridge")
            shown = {k: v for k, v in tb.items() if re.search(r"invalid|requests|truncated", k) and v}
            print("==> tracebridge stats: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
            ecds_final = topology.ecds_stats(front)
            print(f"==> ECDS: update_success {ecds_final.get('update_success')}, "
                  f"update_rejected {ecds_final.get('update_rejected', 0)}, "
                  f"config_fail {ecds_final.get('config_fail', 0)}")
            print(f"==> requests {result['requests']}, non-2xx {result['non_2xx']}, socket errors "
                  f"connect {result['connect']} read {result['read']} write {result['write']} "
                  f"timeout {result['timeout']}")
    if failures:
        print("==> soak FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("==> soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
