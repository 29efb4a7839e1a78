"""`make demo` and `make run` (tests/e2e/demo.py) work and clean up after themselves."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import REPO_ROOT, free_port

DEMO = Path(__file__).resolve().parent / "demo.py"


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LISTENER_PORT=str(free_port()),
        ADMIN_PORT=str(free_port()),
        UPSTREAM_PORT=str(free_port()),
    )
    return env


def refused(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
    except urllib.error.URLError as e:
        return isinstance(e.reason, ConnectionRefusedError)
    except ConnectionError:
        return True
    return False


def test_demo_shows_every_format(wasm, envoy_cmd):
    env = demo_env()
    result = subprocess.run(
        [sys.executable, str(DEMO), "demo"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for title in ("tracecontext", "b3", "b3multi", "xray", "cloudtrace", "no trace headers"):
        assert f"=== {title} " in out, out
    # the cloudtrace example of the README, as the upstream received it
    assert (
        "upstream  x-amzn-trace-id        "
        "Root=1-105445aa-7843bc8bf206b12000100000;Parent=0000000000000001;Sampled=1"
    ) in out, out
    assert "tracebridge.extracted.cloudtrace" in out
    # The sampled W3C request's response: the trace metric (W3C Trace Context editor's draft,
    # "Trace Context Server Timing Metric Format") and the Grafana link with its trace id.
    assert (
        "response  server-timing          "
        "trace;desc=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ) in out, out
    assert (
        "response  x-trace-link           https://grafana.example.com/explore?schemaVersion=1"
    ) in out, out
    assert "%22query%22:%224bf92f3577b34da6a3ce929d0e0e4736%22" in out, out
    assert refused(int(env["ADMIN_PORT"])), "Envoy still answers after the demo"


def test_run_serves_until_interrupted(wasm, envoy_cmd):
    env = demo_env()
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), "run"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "tracebridge is running" in line:
                break
        assert any("tracebridge is running" in x for x in lines), "".join(lines)
        req = urllib.request.Request(
            f"http://127.0.0.1:{env['LISTENER_PORT']}/",
            headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read().decode()
        assert "00-105445aa7843bc8bf206b12000100000-0000000000000001-01" in body
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + out
        assert refused(int(env["ADMIN_PORT"])), "Envoy still answers after Ctrl-C"
        assert refused(int(env["UPSTREAM_PORT"])), "the upstream still answers after Ctrl-C"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
