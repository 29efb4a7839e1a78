#!/usr/bin/env python3
"""Envoy load benchmark for tracebridge (Python standard library only).

One front Envoy per variant (one worker, --concurrency 1) in front of one upstream Envoy that
answers every request itself, driven by wrk with W3C trace headers. Variants:

  none                 no HTTP filter but the router
  noop-wasm            a proxy-wasm filter that does nothing (benches/wasm/noop): the floor
  tracebridge-default  tracebridge, configuration benches/envoy/tracebridge-default.json
  tracebridge-widest   tracebridge, configuration benches/envoy/tracebridge-widest.json
  tracebridge-response tracebridge, defaults plus `response` (benches/envoy/tracebridge-response.json):
                       the trace metric, traceresponse, a link and Timing-Allow-Origin
  lua                  benches/envoy/w3c_translate.lua, the same translation in a Lua filter
  tracebridge-spans-p* tracebridge reporting its own spans (benches/envoy/tracebridge-spans-*.json),
                       at p = 0.01 and p = 1, side by side with
  envoy-otel-p*        Envoy's OpenTelemetry tracer at the same rates (benches/envoy/tracing/);
                       both export OTLP/HTTP to the same receiver (front-spans.yaml), and their
                       requests carry no trace context, so every decision is the proxy's

Rounds are interleaved (A B C ... A B C ...), each variant visited once per round, and every
figure is a median over rounds: requests/s and p50/p99 latency from wrk, and the CPU time of
the front Envoy's worker thread per request (from /proc; a noisy neighbour disturbs it less
than throughput). Ratios are medians of per-round ratios, so a slow drift in the machine's load
cancels out. Then the module sizes and the V8 load time from Envoy's log, and the host-call
experiment (benches/wasm/hostcall-probe): reading the header map once vs. one call per header
name, and one batched map write vs. per-header writes, first with the same interleaved wrk
method, then timed inside the proxy by the probe itself (`mode=time`), which resolves the
microsecond differences that request throughput on a shared machine cannot. Then the per-phase
breakdown: tracebridge built with --features phase-timing (src/filter/phases.rs) times each phase
of the request inside the proxy (map read, scan, translate, header writes, counters, property,
clock, randomness), for the default and the widest configuration. Last, each target of the
performance issue printed as met or missed, from this run's own figures.

Usage (paths are relative to the repository, wherever it is run from):

  python3 benches/envoy_load.py            # everything: about 4 minutes
  BENCH_ROUNDS=20 BENCH_DURATION=5 python3 benches/envoy_load.py
  python3 benches/envoy_load.py --hostcall-rounds 0 --json results.json

Settings (flag, or environment variable): --rounds BENCH_ROUNDS (12), --duration
BENCH_DURATION (2 s per run), --warmup BENCH_WARMUP (1 s), --connections BENCH_CONNECTIONS (16),
--threads BENCH_THREADS (1), --hostcall-rounds BENCH_HOSTCALL_ROUNDS (6; 0 skips the
experiment), --phase-seconds BENCH_PHASE_SECONDS (8 per configuration; 0 skips the breakdown),
--load-samples BENCH_LOAD_SAMPLES (3), --pin BENCH_PIN (auto: front Envoy on the
first CPU, upstream Envoy and wrk on the others).

Inputs, each overridable by environment variable:
  ENVOY_BIN        Envoy binary (default: .venv/bin/envoy, then `envoy` on PATH)
  WRK_BIN          wrk binary (default: `wrk` on PATH; Debian package "wrk")
  TRACEBRIDGE_WASM the filter (default: target/wasm32-wasip1/release/tracebridge.wasm)
  BENCH_WASM_DIR   noop and probe modules (default: target/bench-wasm/wasm32-wasip1/release)
  TRACEBRIDGE_BASELINE_WASM an earlier build of the filter: adds before-default and
                   before-widest, for this build's ratio to it (default: not run)
  TRACEBRIDGE_PHASE_WASM the filter with --features phase-timing
                   (default: target/phase-wasm/wasm32-wasip1/release/tracebridge.wasm)

Every server listens on 127.0.0.1 on a free port, runs in its own process group and is
stopped before the script exits. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVOY_DIR = REPO / "benches" / "envoy"

# The request every variant gets: W3C in, every other format out.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REQUEST_HEADERS = [
    ("traceparent", TRACEPARENT),
    ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) tracebridge-bench"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
]
# The span variants' request: the same without trace context.
NO_TRACE_HEADERS = [(n, v) for n, v in REQUEST_HEADERS if n not in ("traceparent", "tracestate")]
# What the upstream must see from a translating variant (the Cloud Trace span id is
# 0x00f067aa0ba902b7 in decimal).
EXPECTED_UPSTREAM = {
    "x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736",
    "x-b3-spanid": "00f067aa0ba902b7",
    "x-b3-sampled": "1",
    "x-amzn-trace-id": "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1",
    "x-cloud-trace-context": "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1",
}


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Locating things
# ---------------------------------------------------------------------------------------------


def envoy_command() -> list[str]:
    configured = os.environ.get("ENVOY_BIN", "").strip()
    if configured:
        return shlex.split(configured)
    venv = REPO / ".venv" / "bin" / "envoy"
    if venv.is_file():
        return [str(venv)]
    found = shutil.which("envoy")
    if found:
        return [found]
    raise BenchError("no Envoy: run `make envoy`, or set ENVOY_BIN to an Envoy 1.40 binary")


def wrk_command() -> str:
    found = os.environ.get("WRK_BIN", "").strip() or shutil.which("wrk")
    if not found:
        raise BenchError("no wrk: install Debian's package (apt-get install wrk) or set WRK_BIN")
    return found


def module(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env, "") or default)
    if not path.is_absolute():
        path = REPO / path
    return path


def tracebridge_wasm() -> Path:
    return module("TRACEBRIDGE_WASM", REPO / "target/wasm32-wasip1/release/tracebridge.wasm")


def phase_wasm() -> Path:
    """tracebridge built with --features phase-timing (`make bench` builds it)."""
    return module(
        "TRACEBRIDGE_PHASE_WASM", REPO / "target/phase-wasm/wasm32-wasip1/release/tracebridge.wasm"
    )


def bench_wasm(name: str) -> Path:
    directory = module("BENCH_WASM_DIR", REPO / "target/bench-wasm/wasm32-wasip1/release")
    return directory / name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"__{key}__", value)
    left = re.findall(r"__[A-Z_]+__", template)
    if left:
        raise BenchError(f"unfilled placeholders {sorted(set(left))}")
    return template


def indent_at_placeholder(template: str, placeholder: str, snippet: str) -> str:
    """Replaces the line holding only `placeholder` by `snippet`, indented like that line."""
    out = []
    for line in template.splitlines():
        if line.strip() == placeholder:
            pad = line[: len(line) - len(line.lstrip())]
            out.extend(pad + s if s.strip() else s for s in snippet.splitlines())
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def wasm_filter(name: str, wasm: Path, configuration: str) -> str:
    if not wasm.is_file():
        raise BenchError(f"{wasm} does not exist (build it first; see `make bench`)")
    text = (ENVOY_DIR / "filters" / "wasm.yaml").read_text()
    return fill(
        text,
        {
            "NAME": name,
            "WASM_FILE": str(wasm),
            # A JSON string literal is a valid YAML double-quoted scalar.
            "CONFIGURATION": json.dumps(configuration),
        },
    )


def lua_filter() -> str:
    text = (ENVOY_DIR / "filters" / "lua.yaml").read_text()
    return fill(text, {"LUA_FILE": str(ENVOY_DIR / "w3c_translate.lua")})


@dataclass
class Variant:
    name: str
    filters: str  # YAML list items (may be empty)
    module: Path | None = None
    translates: bool = False  # whether /check must show the translated headers
    front: str = "front.yaml"  # the front proxy's template
    tracing: str = ""  # the HCM's `tracing:` block (front-spans.yaml)
    request_headers: list | None = None  # None: REQUEST_HEADERS


def span_variants() -> list[Variant]:
    """tracebridge's spans and Envoy's OpenTelemetry tracer at p = 0.01 and p = 1, on requests
    without trace context: every request is a root decided by the proxy."""
    tb = tracebridge_wasm()
    otel = (ENVOY_DIR / "tracing" / "opentelemetry.yaml").read_text()
    variants = []
    for label, percent in (("p001", "1"), ("p1", "100")):
        spans_cfg = (ENVOY_DIR / f"tracebridge-spans-{label}.json").read_text()
        variants.append(
            Variant(
                f"tracebridge-spans-{label}",
                wasm_filter("tracebridge", tb, spans_cfg),
                tb,
                front="front-spans.yaml",
                request_headers=NO_TRACE_HEADERS,
            )
        )
        variants.append(
            Variant(
                f"envoy-otel-{label}",
                "",
                front="front-spans.yaml",
                tracing=fill(otel, {"PERCENT": percent}),
                request_headers=NO_TRACE_HEADERS,
            )
        )
    return variants


def main_variants() -> list[Variant]:
    tb = tracebridge_wasm()
    default_cfg = (ENVOY_DIR / "tracebridge-default.json").read_text()
    widest_cfg = (ENVOY_DIR / "tracebridge-widest.json").read_text()
    noop = bench_wasm("noop_filter.wasm")
    return [
        Variant("none", ""),
        Variant("noop-wasm", wasm_filter("noop", noop, ""), noop),
        Variant(
            "tracebridge-default",
            wasm_filter("tracebridge", tb, default_cfg),
            tb,
            translates=True,
        ),
        Variant(
            "tracebridge-widest",
            wasm_filter("tracebridge", tb, widest_cfg),
            tb,
            translates=True,
        ),
        Variant(
            "tracebridge-response",
            wasm_filter(
                "tracebridge", tb, (ENVOY_DIR / "tracebridge-response.json").read_text()
            ),
            tb,
            translates=True,
        ),
        Variant("lua", lua_filter(), translates=True),
    ] + baseline_variants(default_cfg, widest_cfg) + span_variants()


def baseline_variants(default_cfg: str, widest_cfg: str) -> list[Variant]:
    """With TRACEBRIDGE_BASELINE_WASM (an earlier build of the filter, e.g. main's): the same two
    configurations on that module, interleaved with the rest, for a before/after ratio."""
    path = os.environ.get("TRACEBRIDGE_BASELINE_WASM", "").strip()
    if not path:
        return []
    before = module("TRACEBRIDGE_BASELINE_WASM", Path(path))
    return [
        Variant("before-default", wasm_filter("tracebridge", before, default_cfg), before, True),
        Variant("before-widest", wasm_filter("tracebridge", before, widest_cfg), before, True),
    ]


PROBES = [
    ("read=map write=none", "read: whole map, SDK copy (tracebridge today)"),
    ("read=raw write=none", "read: whole map, borrowed from the host buffer"),
    ("read=each write=none", "read: get_http_request_header per name (10 calls)"),
    ("read=map write=each", "write: set_http_request_header x5 (tracebridge today)"),
    ("read=map write=map", "write: one set_http_request_headers (whole map)"),
    ("read=map write=add", "write: add_http_request_header x5"),
]


def probe_variants() -> list[Variant]:
    probe = bench_wasm("hostcall_probe.wasm")
    noop = bench_wasm("noop_filter.wasm")
    variants = [Variant("noop-wasm", wasm_filter("noop", noop, ""), noop)]
    for configuration, _ in PROBES:
        name = "probe " + configuration
        variants.append(
            Variant(name, wasm_filter("probe", probe, configuration), probe)
        )
    return variants


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def pinned(cpus: set[int] | None):
    if not cpus:
        return None

    def set_affinity() -> None:
        os.sched_setaffinity(0, cpus)

    return set_affinity


class Envoy:
    """One Envoy process in its own process group, stopped by stop()."""

    def __init__(
        self,
        name: str,
        config: str,
        workdir: Path,
        cpus: set[int] | None,
        wasm_debug: bool = False,
    ):
        self.name = name
        # Debug logging of the wasm component shows the VM's creation times, and tracebridge
        # follows Envoy's wasm log level: at debug it logs every request, so only the load-time
        # runs use it.
        self.wasm_debug = wasm_debug
        self.admin_port = free_port()
        self.port = free_port()
        self.config_text = config.replace("__ADMIN_PORT__", str(self.admin_port)).replace(
            "__LISTEN_PORT__", str(self.port)
        )
        safe = re.sub(r"[^a-zA-Z0-9_.-]+", "_", name)
        self.config_path = workdir / f"{safe}.yaml"
        self.log_path = workdir / f"{safe}.log"
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.request_headers: list | None = None  # None: REQUEST_HEADERS

    def start(self) -> "Envoy":
        self.config_path.write_text(self.config_text)
        cmd = envoy_command() + [
            "-c",
            str(self.config_path),
            "--concurrency",
            "1",
            # A base id of its own, so several Envoys (and other users' Envoys) never share
            # hot-restart shared memory.
            "--use-dynamic-base-id",
            "--log-level",
            "warn",
            "--component-log-level",
            "main:info,wasm:" + ("debug" if self.wasm_debug else "warn"),
        ]
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=pinned(self.cpus),
            )
        finally:
            log.close()
        RUNNING.append(self)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"Envoy {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin_port}/ready", timeout=1
                ) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise BenchError(f"Envoy {self.name} not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of Envoy's worker thread (the one that runs the
        filters), or of the whole process when the thread cannot be found."""
        stat = Path(f"/proc/{self.proc.pid}/stat")
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                if (task / "comm").read_text().strip().startswith("wrk:worker"):
                    stat = task / "stat"
                    break
            except OSError:
                continue
        fields = stat.read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


RUNNING: list[Envoy] = []


def stop_all() -> None:
    while RUNNING:
        RUNNING.pop().stop()


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    errors: int
    cpu_us_per_request: float


@dataclass
class Result:
    variant: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.runs)


UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * UNITS_US[match.group(2)]


def run_wrk(
    envoy: Envoy, seconds: float, connections: int, threads: int, cpus: set[int] | None
) -> Run:
    # wrk takes whole seconds.
    cmd = [wrk_command(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    cmd.append("--latency")
    for name, value in envoy.request_headers or REQUEST_HEADERS:
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{envoy.port}/")
    cpu_before = envoy.cpu_seconds()
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        preexec_fn=pinned(cpus),
        check=False,
    )
    cpu = envoy.cpu_seconds() - cpu_before
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (rps and total and p50 and p99):
        raise BenchError(f"cannot read wrk output:\n{text}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = int(total.group(1))
    return Run(
        rps=float(rps.group(1)),
        p50_us=parse_latency(p50.group(1)),
        p99_us=parse_latency(p99.group(1)),
        requests=requests,
        errors=errors,
        cpu_us_per_request=cpu * 1e6 / max(requests, 1),
    )


def check_translation(envoy: Envoy) -> dict[str, str]:
    """One request to /check: the trace headers the upstream received."""
    request = urllib.request.Request(f"http://127.0.0.1:{envoy.port}/check")
    for name, value in REQUEST_HEADERS:
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=5) as response:
        return {
            name[len("seen-") :]: value
            for name, value in response.headers.items()
            if name.lower().startswith("seen-") and value not in ("", "-")
        }


def span_stats(envoy: Envoy) -> str:
    """The exporter counters of a span variant: tracebridge's, or Envoy's tracer's."""
    url = f"http://127.0.0.1:{envoy.admin_port}/stats?filter=tracebridge.spans|tracing.opentelemetry"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return ", ".join(line.strip().replace("wasmcustom.", "") for line in lines) or "(none)"


TIMED_OPERATIONS = [
    ("clock", "proxy_get_current_time_nanoseconds (the timer itself; subtracted from the rest)"),
    ("read_map", "read: get_http_request_headers_bytes + scan (tracebridge today)"),
    ("read_raw", "read: one proxy_get_header_map_pairs, lines borrowed from the buffer"),
    ("read_each", "read: get_http_request_header_bytes x10 (one per trace header name)"),
    ("write_each", "write: set_http_request_header x5 (tracebridge today)"),
    ("write_map", "write: one set_http_request_headers_bytes (whole map replaced)"),
    ("read_map_and_write_each", "read_map + write_each together"),
    ("increment_metric", "one counter increment (tracebridge: about 2 per request)"),
    ("set_property", "one set_property (tracebridge: the sampling reason, every request)"),
    ("get_property", "get_property source.address (tracebridge: trust checks)"),
    ("replace_then_remove", "set_http_request_header x5 on absent names, then remove x5"),
    ("add_then_remove", "add_http_request_header x5 on absent names, then remove x5"),
]


# The phases src/filter/phases.rs times (gauges tracebridge.phase.<name>_ns), in its order.
PHASES = [
    ("clock", "get_current_time (the timer; subtracted from the rest)"),
    ("map_read", "proxy_get_header_map_pairs: the request map, one buffer"),
    ("scan", "RequestHeaders::scan of that buffer"),
    ("translate", "translate(): extract, choose, trust, decide, edits"),
    ("header_writes", "every edit written (set_http_request_header each)"),
    ("header_write", "one header write"),
    ("counter_increment", "one increment_metric host call"),
    ("counters_direct", "the request's counters as host calls (before)"),
    ("counters_pending", "the request's counters into the worker's counts (now)"),
    ("set_property", "set_property of the reason (filter_state.sampling_reason)"),
    ("random_get", "one WASI random_get, 20 bytes"),
    ("random_pooled", "20 bytes from the filter's pool"),
    ("request", "the filter's whole request path as configured"),
    ("request_once", "the same, the request's one real pass (every other request)"),
]


class Targets:
    """The issue's targets, each printed as met or missed, from this run's own figures."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def check(self, what: str, value: float, goal: float, at_most: bool, unit: str = "") -> None:
        met = value <= goal if at_most else value >= goal
        self.rows.append(
            {"target": what, "value": value, "goal": goal, "at_most": at_most, "met": met,
             "unit": unit}
        )

    def print(self) -> None:
        if not self.rows:
            return
        print("\nTargets (issue 12), from this run:")
        width = max(len(r["target"]) for r in self.rows)
        for r in self.rows:
            sign = "<=" if r["at_most"] else ">="
            shown = f"{r['value']:.3f}{r['unit']}"
            goal = f"{sign} {r['goal']:g}{r['unit']}"
            verdict = "met" if r["met"] else "MISSED"
            print(f"  {r['target']:<{width}}  {shown:>12}  ({goal:<12}) {verdict}")
        met = sum(r["met"] for r in self.rows)
        print(f"  {met} of {len(self.rows)} met")


def time_hostcalls(
    envoy: Envoy, seconds: float, cpus: set[int] | None, prefix: str = "hostcall_probe"
) -> dict[str, float]:
    """Drives a timing module (the probe in mode=time, or tracebridge built with
    --features phase-timing) with one connection and collects its `<prefix>.<name>_ns` gauges
    (each the median ns per operation over a window of requests); returns the median of the
    polls."""
    cmd = [wrk_command(), "-t1", "-c1", f"-d{max(1, round(seconds))}s"]
    for name, value in REQUEST_HEADERS:
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{envoy.port}/")
    wrk = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(cpus)
    )
    polls: dict[str, list[float]] = {}
    try:
        # The first window of requests fills the gauges; poll after it.
        time.sleep(1.0)
        deadline = time.monotonic() + seconds - 1.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(
                f"http://127.0.0.1:{envoy.admin_port}/stats?filter={prefix}", timeout=5
            ) as response:
                text = response.read().decode()
            for line in text.splitlines():
                match = re.match(rf"^\S*{re.escape(prefix)}\.(\w+)_ns: (\d+)$", line.strip())
                if match:
                    polls.setdefault(match.group(1), []).append(float(match.group(2)))
    finally:
        wrk.wait(timeout=seconds + 30)
    return {name: statistics.median(values) for name, values in polls.items()}


def interleaved(
    envoys: list[Envoy],
    rounds: int,
    seconds: float,
    warmup: float,
    connections: int,
    threads: int,
    client_cpus: set[int] | None,
    label: str,
) -> list[Result]:
    results = [Result(e.name) for e in envoys]
    if warmup > 0:
        for envoy in envoys:
            run_wrk(envoy, warmup, connections, threads, client_cpus)
    n = len(envoys)
    for r in range(rounds):
        # Each round visits every variant once, starting one further along each time, so no
        # variant always follows the same neighbour.
        order = [(r + i) % n for i in range(n)]
        line = []
        for i in order:
            run = run_wrk(envoys[i], seconds, connections, threads, client_cpus)
            results[i].runs.append(run)
            line.append(f"{envoys[i].name} {run.rps:,.0f}")
        print(f"  {label} round {r + 1}/{rounds}: " + ", ".join(line), flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# Module load time from Envoy's log
# ---------------------------------------------------------------------------------------------

LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]")


def log_time(line: str) -> datetime | None:
    match = LOG_TIME.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f") if match else None


def wasm_load_ms(log: str) -> float | None:
    """'Base Wasm created' -> first 'Thread-Local Wasm created': V8 compiling and instantiating
    the module, plus the plugin's on_vm_start and on_configure in the base VM."""
    base = local = None
    for line in log.splitlines():
        if base is None and "Base Wasm created" in line:
            base = log_time(line)
        elif base is not None and "Thread-Local Wasm created" in line:
            local = log_time(line)
            break
    if base is None or local is None:
        return None
    return (local - base).total_seconds() * 1000


def startup_ms(log: str) -> float | None:
    first = ready = None
    for line in log.splitlines():
        t = log_time(line)
        if t is None:
            continue
        if first is None:
            first = t
        if "starting main dispatch loop" in line:
            ready = t
            break
    if first is None or ready is None:
        return None
    return (ready - first).total_seconds() * 1000


def measure_load(
    name: str, filters: str, upstream_port: int, workdir: Path, samples: int, cpus
) -> list[float]:
    times = []
    for i in range(samples):
        config = front_config(filters, upstream_port)
        envoy = Envoy(f"load-{name}-{i}", config, workdir, cpus, wasm_debug=True)
        envoy.start()
        envoy.stop()
        RUNNING.remove(envoy)
        ms = wasm_load_ms(envoy.log_path.read_text(errors="replace"))
        if ms is not None:
            times.append(ms)
    return times


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def front_config(
    filters: str, upstream_port: int, front: str = "front.yaml", tracing: str = ""
) -> str:
    template = (ENVOY_DIR / front).read_text()
    text = indent_at_placeholder(template, "__HTTP_FILTERS__", filters)
    text = indent_at_placeholder(text, "__TRACING__", tracing)
    return text.replace("__UPSTREAM_PORT__", str(upstream_port))


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def paired_ratio(a: Result, b: Result, attribute: str = "rps") -> float:
    """Median over rounds of a/b, each round's two runs a few seconds apart: a slow drift in
    the machine's load cancels out of every ratio."""
    return statistics.median(
        getattr(x, attribute) / getattr(y, attribute) for x, y in zip(a.runs, b.runs)
    )


def paired_diff(a: Result, b: Result, attribute: str = "cpu_us_per_request") -> float:
    """Median over rounds of a - b (each round's two runs a few seconds apart)."""
    return statistics.median(
        getattr(x, attribute) - getattr(y, attribute) for x, y in zip(a.runs, b.runs)
    )


def print_table(results: list[Result], baselines: list[str]) -> None:
    by_name = {r.variant: r for r in results}
    width = max(len(r.variant) for r in results)
    head = f"  {'variant':<{width}} {'req/s':>9} {'p50':>9} {'p99':>9} {'CPU/req':>9} {'errors':>6}"
    for b in baselines:
        head += f" {'rps/' + b:>16}"
    print(head)
    for r in results:
        errors = sum(run.errors for run in r.runs)
        line = (
            f"  {r.variant:<{width}} {r.median('rps'):>9,.0f} {fmt_us(r.median('p50_us')):>9}"
            f" {fmt_us(r.median('p99_us')):>9} {r.median('cpu_us_per_request'):>6.1f} us {errors:>6}"
        )
        for b in baselines:
            line += f" {paired_ratio(r, by_name[b]):>15.3f}x"
        print(line)
    print("  (req/s, latencies and CPU/req: medians over rounds; rps/X: median of per-round ratios)")
    print("  per-round req/s:")
    for r in results:
        print(f"    {r.variant:<{width}} " + " ".join(f"{run.rps:,.0f}" for run in r.runs))


def ratio(results: list[Result], a: str, b: str, attribute: str = "rps") -> float:
    by_name = {r.variant: r for r in results}
    return paired_ratio(by_name[a], by_name[b], attribute)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "12")))
    parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "2")))
    parser.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "1")))
    parser.add_argument(
        "--connections", type=int, default=int(env("BENCH_CONNECTIONS", "16"))
    )
    parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "1")))
    parser.add_argument(
        "--hostcall-rounds",
        type=int,
        default=int(env("BENCH_HOSTCALL_ROUNDS", "6")),
        help="rounds of the host-call experiment (0 skips it)",
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=float(env("BENCH_PHASE_SECONDS", "8")),
        help="seconds of per-phase timing per configuration (0 skips it)",
    )
    parser.add_argument(
        "--load-samples",
        type=int,
        default=int(env("BENCH_LOAD_SAMPLES", "3")),
        help="Envoy starts per module for the V8 load time",
    )
    parser.add_argument(
        "--pin",
        choices=["auto", "on", "off"],
        default=env("BENCH_PIN", "auto"),
        help="front Envoy on CPU 0, upstream and wrk on the others (auto: when there are >= 2)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    pin = args.pin == "on" or (args.pin == "auto" and len(cpus) >= 2)
    front_cpus = {cpus[0]} if pin else None
    other_cpus = set(cpus[1:]) if pin else None

    envoy_version = subprocess.run(
        envoy_command() + ["--version"], capture_output=True, text=True, check=False
    ).stdout.strip().splitlines()
    print("tracebridge Envoy load benchmark")
    print(f"  envoy: {envoy_version[-1] if envoy_version else '?'}")
    print(f"  wrk: {wrk_command()} -t{args.threads} -c{args.connections} -d{args.duration:g}s")
    print(
        f"  rounds: {args.rounds} x {args.duration:g} s per variant (warm-up {args.warmup:g} s),"
        f" host-call rounds: {args.hostcall_rounds}"
    )
    print(
        "  CPUs: "
        + (
            f"front Envoy on {sorted(front_cpus)}, upstream Envoy and wrk on {sorted(other_cpus)}"
            if pin
            else f"not pinned ({len(cpus)} available)"
        )
    )
    report: dict = {"settings": vars(args) | {"json": str(args.json) if args.json else None}}
    targets = Targets()

    workdir = Path(tempfile.mkdtemp(prefix="tracebridge-bench-"))
    try:
        upstream = Envoy("upstream", (ENVOY_DIR / "upstream.yaml").read_text(), workdir, other_cpus)
        upstream.start()
        variants = main_variants()

        # -- main comparison -------------------------------------------------------------
        if args.rounds > 0:
            fronts = []
            for v in variants:
                config = front_config(v.filters, upstream.port, v.front, v.tracing)
                front = Envoy(v.name, config, workdir, front_cpus)
                front.request_headers = v.request_headers
                fronts.append(front.start())
            print("\nWhat the upstream received for the benchmark request (GET /check):")
            for v, envoy in zip(variants, fronts):
                seen = check_translation(envoy)
                ok = all(seen.get(k) == want for k, want in EXPECTED_UPSTREAM.items())
                verdict = "translated" if ok else "not translated"
                if v.translates and not ok:
                    raise BenchError(f"{v.name} did not translate: {seen}")
                print(f"  {v.name:<20} {verdict}: {len(seen)} trace headers")
            print(f"\nThroughput and latency ({args.rounds} interleaved rounds, medians):")
            results = interleaved(
                fronts,
                args.rounds,
                args.duration,
                args.warmup,
                args.connections,
                args.threads,
                other_cpus,
                "main",
            )
            print()
            print_table(results, ["none", "noop-wasm", "lua"])
            by_name = {r.variant: r for r in results}
            default, widest = by_name["tracebridge-default"], by_name["tracebridge-widest"]
            noop, lua = by_name["noop-wasm"], by_name["lua"]
            if "before-default" in by_name:
                print("  this build against TRACEBRIDGE_BASELINE_WASM (median of per-round figures):")
                for label, now in (("default", default), ("widest", widest)):
                    before = by_name[f"before-{label}"]
                    print(
                        f"    {label:<8} req/s {paired_ratio(now, before):.3f}x,"
                        f" worker CPU/request {paired_diff(now, before):+.1f} us"
                    )
            targets.check("default req/s / no-op wasm", paired_ratio(default, noop), 0.93, False)
            targets.check("default req/s / Lua", paired_ratio(default, lua), 1.05, False)
            targets.check(
                "default CPU/req - Lua CPU/req", paired_diff(default, lua), 0.0, True, " us"
            )
            targets.check(
                "default p99 / no-op p99", paired_ratio(default, noop, "p99_us"), 1.05, True
            )
            targets.check(
                "default CPU/req beyond no-op", paired_diff(default, noop), 6.0, True, " us"
            )
            targets.check("widest req/s / no-op wasm", paired_ratio(widest, noop), 0.85, False)
            targets.check(
                "widest CPU/req beyond no-op", paired_diff(widest, noop), 15.0, True, " us"
            )
            # Translation, consistent sampling and spans should cost no more than Envoy's
            # tracer doing less.
            for label in ("p001", "p1"):
                targets.check(
                    f"spans-{label} req/s / Envoy OpenTelemetry",
                    paired_ratio(by_name[f"tracebridge-spans-{label}"], by_name[f"envoy-otel-{label}"]),
                    1.0,
                    False,
                )
            print("  worker CPU per request beyond the no-op wasm filter (median of per-round differences):")
            for r in results:
                if r.variant not in ("none", "noop-wasm"):
                    extra = paired_diff(r, by_name["noop-wasm"])
                    print(f"    {r.variant:<20} {extra:+.1f} us")
            floor = paired_diff(by_name["noop-wasm"], by_name["none"])
            print(f"    (noop-wasm itself: {floor:+.1f} us over no filter)")
            print("  span counters of the span variants after the rounds (and one more flush):")
            time.sleep(1.5)  # both exporters flush at least every second
            for v, envoy in zip(variants, fronts):
                if v.front == "front-spans.yaml":
                    print(f"    {v.name:<24} {span_stats(envoy)}")
            report["main"] = [
                {"variant": r.variant, "runs": [vars(run) for run in r.runs]} for r in results
            ]
            for envoy in fronts:
                envoy.stop()
                RUNNING.remove(envoy)

        # -- module size and V8 load time ---------------------------------------------------
        print("\nModules:")
        report["modules"] = {}
        loads = [
            ("tracebridge", tracebridge_wasm(), variants[2].filters),
            ("noop", bench_wasm("noop_filter.wasm"), variants[1].filters),
        ]
        for name, path, filters in loads:
            size = path.stat().st_size
            times = measure_load(name, filters, upstream.port, workdir, args.load_samples, front_cpus)
            median = statistics.median(times) if times else float("nan")
            print(
                f"  {name:<12} {size:>9,} bytes ({size / 1024:.0f} KiB)   V8 load"
                f" {median:.0f} ms median of {len(times)}"
                f" ({', '.join(f'{t:.0f}' for t in times)} ms)"
            )
            report["modules"][name] = {"bytes": size, "load_ms": times}
        print("  (V8 load: Envoy log 'Base Wasm created' to the first 'Thread-Local Wasm created')")
        targets.check("module size", tracebridge_wasm().stat().st_size / 1024, 200, True, " KiB")
        loads_ms = {name: report["modules"][name]["load_ms"] for name in ("tracebridge", "noop")}
        if loads_ms["tracebridge"] and loads_ms["noop"]:
            targets.check(
                "V8 load time / no-op module's",
                statistics.median(loads_ms["tracebridge"]) / statistics.median(loads_ms["noop"]),
                1.5,
                True,
            )

        # -- per-phase breakdown inside the proxy -------------------------------------------
        if args.phase_seconds > 0:
            timed_wasm = phase_wasm()
            if not timed_wasm.is_file():
                raise BenchError(f"{timed_wasm} does not exist (`make bench` builds it)")
            configs = [
                ("default", (ENVOY_DIR / "tracebridge-default.json").read_text()),
                ("widest", (ENVOY_DIR / "tracebridge-widest.json").read_text()),
            ]
            phases = {}
            for label, cfg in configs:
                front = Envoy(
                    f"phases-{label}",
                    front_config(wasm_filter("tracebridge", timed_wasm, cfg), upstream.port),
                    workdir,
                    front_cpus,
                ).start()
                phases[label] = time_hostcalls(
                    front, max(args.phase_seconds, 3), other_cpus, prefix="tracebridge.phase"
                )
                front.stop()
                RUNNING.remove(front)
            print(
                "\nPer-phase breakdown inside the proxy (V8; tracebridge built with"
                " --features phase-timing;\n  median us per request of each phase, the"
                " benchmark's W3C request):"
            )
            print(f"  {'phase':<18} {'default':>9} {'widest':>9}  what")
            for name, what in PHASES:
                cells = ""
                for label, _ in configs:
                    value = phases[label].get(name)
                    cells += f" {value / 1000:9.2f}" if value is not None else f" {'n/a':>9}"
                print(f"  {name:<18}{cells}  {what}")
            print(
                "  (context creation and drop: the SDK's, the same as the no-op filter's; see"
                " 'noop-wasm itself' above)"
            )
            report["phases_ns"] = phases

        # -- host-call experiment ---------------------------------------------------------
        if args.hostcall_rounds > 0:
            probes = probe_variants()
            fronts = [
                Envoy(v.name, front_config(v.filters, upstream.port), workdir, front_cpus).start()
                for v in probes
            ]
            print(f"\nHost-call experiment ({args.hostcall_rounds} interleaved rounds, medians):")
            results = interleaved(
                fronts,
                args.hostcall_rounds,
                args.duration,
                args.warmup,
                args.connections,
                args.threads,
                other_cpus,
                "host calls",
            )
            print()
            print_table(results, ["noop-wasm"])
            by_name = {r.variant: r for r in results}
            print("\n  worker CPU per request, relative (median of per-round differences):")
            reads = ["probe " + p for p, _ in PROBES[:3]]
            writes = ["probe " + p for p, _ in PROBES[3:]]
            for (config, what), name in zip(PROBES, reads + writes):
                base = by_name["noop-wasm"] if name in reads else by_name[reads[0]]
                extra = paired_diff(by_name[name], base)
                against = "noop-wasm" if name in reads else "read=map write=none"
                print(f"    {config:<22} {extra:+6.1f} us over {against:<20} {what}")
            report["hostcalls"] = [
                {"variant": r.variant, "runs": [vars(run) for run in r.runs]} for r in results
            ]
            for envoy in fronts:
                envoy.stop()
                RUNNING.remove(envoy)

            # The same operations timed inside the proxy, where host noise hardly reaches.
            probe = wasm_filter("probe", bench_wasm("hostcall_probe.wasm"), "mode=time")
            timer = Envoy(
                "probe-time", front_config(probe, upstream.port), workdir, front_cpus
            ).start()
            timed = time_hostcalls(timer, max(args.duration, 5), other_cpus)
            print("\n  Timed inside the proxy (V8, median ns per operation, the request above):")
            for name, what in TIMED_OPERATIONS:
                value = timed.get(name)
                shown = f"{value / 1000:7.2f} us" if value is not None else "     n/a"
                print(f"    {name:<24} {shown}  {what}")
            report["hostcalls_timed_ns"] = timed
        targets.print()
        report["targets"] = targets.rows
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"\nlogs and configurations kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    # Stop the servers on Ctrl-C or SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as err:
        stop_all()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
