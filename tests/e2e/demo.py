"""`make demo` and `make run`: Envoy with the tracebridge filter in front of an echo upstream.

    python tests/e2e/demo.py demo   one request per input format, print what the upstream got
    python tests/e2e/demo.py run    stay up for hand-made requests until Ctrl-C

Uses envoy/tracebridge.yaml as it is (plugin configuration included) plus a `response`
block (DEMO_RESPONSE: the trace metric and a Grafana Tempo link on sampled responses), with
the ports taken from LISTENER_PORT (10000), ADMIN_PORT (9901) and UPSTREAM_PORT (8080).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    DEFAULT_CONFIG,
    TRACE_HEADERS,
    EchoUpstream,
    Envoy,
    HarnessError,
    Proxy,
    Received,
    render_config,
    require_wasm,
    wasm_filter_configs,
)
from response_upstream import get  # noqa: E402

# What the demo adds to the file's plugin configuration: sampled responses say where their
# trace is (a Grafana Explore link that opens the trace in a Tempo data source with uid "tempo").
DEMO_RESPONSE = {
    "link": {
        "header": "x-trace-link",
        "template": "https://grafana.example.com/explore?schemaVersion=1&panes="
        "%7B%22t%22:%7B%22datasource%22:%22tempo%22,%22queries%22:%5B%7B%22refId%22:%22A%22,"
        "%22queryType%22:%22traceql%22,%22query%22:%22{trace_id}%22%7D%5D%7D%7D&orgId=1",
    }
}
RESPONSE_HEADERS = ("server-timing", "x-trace-link")

REQUESTS = [
    ("tracecontext", [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                      ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")]),
    ("b3", [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]),
    ("b3multi", [("X-B3-TraceId", "463ac35c9f6413ad"), ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                 ("X-B3-ParentSpanId", "0020000000000001"), ("X-B3-Sampled", "1")]),
    ("xray", [("X-Amzn-Trace-Id",
               "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")]),
    ("cloudtrace", [("X-Cloud-Trace-Context", "105445aa7843bc8bf206b12000100000/1;o=1")]),
    ("no trace headers", []),
]  # fmt: skip


def port_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip() or str(default)
    try:
        port = int(value)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        sys.exit(f"error: {name}={value!r} is not a port number")
    return port


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def demo_plugin_config() -> str:
    """The plugin configuration of envoy/tracebridge.yaml, with DEMO_RESPONSE added."""
    (plugin,) = wasm_filter_configs(render_config(DEFAULT_CONFIG))
    config = json.loads(plugin["configuration"]["value"])
    config["response"] = DEMO_RESPONSE
    return json.dumps(config)


def show(title: str, sent, got, response_headers) -> None:
    width = max(len(h) for h in TRACE_HEADERS)
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))
    if sent:
        for name, value in sent:
            print(f"  sent      {name.lower():<{width}}  {value}")
    else:
        print("  sent      (no trace headers)")
    received = got.trace()
    for name in TRACE_HEADERS:
        for value in received.get(name, []) or ["-"]:
            print(f"  upstream  {name:<{width}}  {value}")
    for name in RESPONSE_HEADERS:
        for value in [v for n, v in response_headers if n == name] or ["-"]:
            print(f"  response  {name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["demo", "run"])
    args = parser.parse_args()

    listener_port = port_from_env("LISTENER_PORT", 10000)
    admin_port = port_from_env("ADMIN_PORT", 9901)
    upstream_port = port_from_env("UPSTREAM_PORT", 8080)

    try:
        require_wasm()
    except HarnessError as e:
        sys.exit(f"error: {e}")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="tracebridge-"))
    upstream = envoy = None
    try:

        def log_request(pairs):
            trace = [f"    {n}: {v}" for n, v in pairs if n in TRACE_HEADERS]
            stamp = time.strftime("%H:%M:%S")
            lines = "\n".join(trace) or "    (no trace headers)"
            print(f"[{stamp}] the upstream got:\n{lines}", flush=True)

        try:
            upstream = EchoUpstream(
                upstream_port, on_request=log_request if args.mode == "run" else None
            ).start()
        except OSError as e:
            sys.exit(f"error: cannot listen on 127.0.0.1:{upstream_port} ({e}); set UPSTREAM_PORT")
        envoy = Envoy(
            workdir,
            upstream_port=upstream.port,
            listener_port=listener_port,
            admin_port=admin_port,
            concurrency=1,
            source=DEFAULT_CONFIG,
            plugin_config=demo_plugin_config(),
        )
        try:
            envoy.start()
        except HarnessError as e:
            print(f"error: Envoy did not start: {e}", file=sys.stderr)
            print("(ports busy? set LISTENER_PORT / ADMIN_PORT / UPSTREAM_PORT)", file=sys.stderr)
            return 1
        proxy = Proxy(envoy)

        if args.mode == "demo":
            print(
                f"Envoy {envoy.url} (admin {envoy.admin_url}) -> echo upstream "
                f"127.0.0.1:{upstream.port}; plugin configuration: envoy/{DEFAULT_CONFIG.name}'s"
                f" with \"response\": {json.dumps(DEMO_RESPONSE)}"
            )
            for title, headers in REQUESTS:
                answer = get(envoy.listener_port, headers)
                if answer.status != 200:
                    raise HarnessError(f"HTTP {answer.status}: {answer.body[:300]!r}")
                got = Received([(n, v) for n, v in json.loads(answer.body)])
                show(title, headers, got, answer.headers)
            print("\n=== counters " + "=" * 57)
            for name, value in sorted(proxy.counters().items()):
                print(f"  {name:<40} {value}")
            return 0

        print(
            f"""
tracebridge is running; Ctrl-C stops Envoy and the upstream.
  listener:  {envoy.url}  (Envoy with the filter)
  admin:     {envoy.admin_url}  (counters: {envoy.admin_url}/stats?filter=tracebridge)
  upstream:  http://127.0.0.1:{upstream.port}  (echo server: answers with the headers it got)
  envoy log: {envoy.log_path}

try:
  curl -s -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' {envoy.url}/
  curl -s -H 'X-Cloud-Trace-Context: 105445aa7843bc8bf206b12000100000/1;o=1' {envoy.url}/
  curl -si -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' {envoy.url}/ | grep -iE '^(server-timing|x-trace-link):'
  curl -s {envoy.admin_url}/stats?filter=tracebridge
""",
            flush=True,
        )
        while envoy.proc.poll() is None:
            time.sleep(0.2)
        print(
            f"error: Envoy exited with code {envoy.proc.returncode}\n{envoy.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except _Stop as stop:
        print(f"\n{stop}: stopping", file=sys.stderr)
        return 0 if args.mode == "run" else 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if envoy is not None:
            envoy.stop()
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
