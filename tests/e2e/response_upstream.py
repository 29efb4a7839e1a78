"""Test helpers for the response side (`response` configuration): an upstream that sets
its own Server-Timing metrics, requests that return every response header line, and
headless Chromium.

* ResponseUpstream: an HTTP/1.1 server on 127.0.0.1. Every answer carries the upstream's own
  Server-Timing metrics on two lines, the W3C Server Timing specification's example
  (`miss, db;dur=53, app;dur=47.2` and `cache;desc="Cache Read";dur=23.2`). Paths:
    /            JSON: the request's header lines, [[name, value], ...]
    /own-trace   the same, and the upstream reports its own trace: a `trace` metric,
                 `traceresponse`, `x-trace-link` and `Timing-Allow-Origin` of its own
    /page        an HTML page whose script reads `serverTiming` of the navigation and of a
                 fetch() of the URL in its `api` query parameter, and writes both, with
                 the `traceparent` the upstream received for the page, into <pre id=out>
    /api         JSON like /, with `Access-Control-Allow-Origin: *` for cross-origin fetches
* get(): one request on a new connection; returns the status, every response header
  line (duplicates kept, names lower-case) and the body.
* chromium_command(): Debian's chromium, headless, with the flags that work on these
  machines; fails when it is not installed.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

from harness import HarnessError, ThreadingHTTPServer

# W3C Server Timing, "Examples": the metrics of one response, on two header lines.
UPSTREAM_SERVER_TIMING = ("miss, db;dur=53, app;dur=47.2", 'cache;desc="Cache Read";dur=23.2')
# The upstream's own trace on /own-trace: the W3C Trace Context examples' ids.
OWN_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OWN_HEADERS = (
    ("server-timing", f"trace;desc={OWN_TRACEPARENT}"),
    ("traceresponse", OWN_TRACEPARENT),
    ("x-trace-link", "https://upstream.example/trace"),
    ("timing-allow-origin", "https://upstream.example"),
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tracebridge response test</title></head>
<body>
<pre id="upstream">%(traceparent)s</pre>
<pre id="out">pending</pre>
<script>
function metrics(list) {
  return Array.from(list || [], m => ({name: m.name, description: m.description, duration: m.duration}));
}
async function main() {
  const out = {};
  out.upstream_traceparent = document.getElementById("upstream").textContent;
  out.navigation = metrics(performance.getEntriesByType("navigation")[0].serverTiming);
  const api = new URL(location.href).searchParams.get("api");
  if (api) {
    const response = await fetch(api);
    out.fetch_status = response.status;
    out.fetch_upstream = await response.json();
    const entry = performance.getEntriesByName(api, "resource")[0];
    out.fetch = entry ? metrics(entry.serverTiming) : null;
  }
  return out;
}
main().then(
  out => { document.getElementById("out").textContent = JSON.stringify(out); },
  err => { document.getElementById("out").textContent = JSON.stringify({error: String(err)}); });
</script>
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "tracebridge-response-upstream"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        pairs = [[name.lower(), value] for name, value in self.headers.items()]
        path = self.path.split("?", 1)[0]
        extra: list[tuple[str, str]] = []
        if path == "/page":
            traceparent = self.headers.get("traceparent") or ""
            body = (PAGE % {"traceparent": html.escape(traceparent)}).encode("utf-8")
            content_type = "text/html; charset=utf-8"
        else:
            body = json.dumps(pairs).encode("ascii")
            content_type = "application/json"
            if path == "/api":
                extra.append(("access-control-allow-origin", "*"))
            elif path == "/own-trace":
                extra.extend(OWN_HEADERS)
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-store")
        for value in UPSTREAM_SERVER_TIMING:
            self.send_header("server-timing", value)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass


class ResponseUpstream:
    """The upstream above, serving from a daemon thread."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="response-upstream", daemon=True
        )

    def __enter__(self) -> "ResponseUpstream":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class Answer:
    """A response: status, every header line (names lower-case, in order), body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} on {len(values)} lines: {values}"
        return values[0] if values else None

    def upstream(self) -> dict[str, str]:
        """The request headers the upstream received (JSON answers), one value per name."""
        assert self.status == 200, (self.status, self.body[:300])
        return {n: v for n, v in json.loads(self.body)}


def get(port: int, headers=(), path: str = "/", host: str = "127.0.0.1") -> Answer:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Answer(resp.status, [(n.lower(), v) for n, v in resp.getheaders()], body)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise HarnessError(
            "chromium is not installed: `make e2e` installs Debian's chromium when run as root "
            "(or: apt-get install chromium)"
        )
    return found


def dump_dom(url: str, budget_ms: int = 3000, timeout: float = 90.0) -> str:
    """The DOM of `url` after its scripts ran (`--dump-dom`), from a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="tracebridge-chromium-") as profile:
        cmd = [
            chromium_binary(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            f"--virtual-time-budget={budget_ms}",
            url,
        ]
        env = dict(os.environ, HOME=profile)
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            start_new_session=True,
        )
    if result.returncode != 0:
        raise HarnessError(
            f"chromium exited with {result.returncode}\n{result.stderr[-2000:]}"
        )
    return result.stdout


def page_result(dom: str) -> dict:
    """What the /page script wrote into <pre id=out>."""
    start = dom.find('<pre id="out">')
    end = dom.find("</pre>", start)
    if start < 0 or end < 0:
        raise HarnessError(f"no <pre id=out> in the page:\n{dom[:2000]}")
    text = html.unescape(dom[start + len('<pre id="out">') : end])
    if text == "pending":
        raise HarnessError("the page's script did not finish within the virtual time budget")
    return json.loads(text)


def chromium_version() -> str:
    return subprocess.run(
        [chromium_binary(), "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
