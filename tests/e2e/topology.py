"""Envoy topologies beyond harness.py's one-Envoy shape, for the placement, hot-reload
and multicloud tests and for `make demo-multicloud`.

harness.Envoy renders envoy/tracebridge.yaml's shape only (the wasm filter in the
HCM chain, one cluster named "upstream"). Here:

* render(): any config under envoy/: the wasm filter anywhere (HCM chain, a
  cluster's upstream `http_filters`, an ECDS resource), any cluster's port, the
  tracer's collector redirected, a probe added.
* RenderedEnvoy: a harness.Envoy that runs such a rendered config, with the same
  process handling (own process group, unique --base-id, --disable-hot-restart,
  stopped at exit), plus extra command-line arguments (--service-node/-cluster).
* probe(): a small Lua filter that records the trace headers a request carries at
  its position and returns them to the client as `x-probe-<tag>-<header>` response
  headers. Placed in a cluster's upstream chain before the wasm filter it shows
  what Envoy's tracer injected; last, what leaves the hop. (harness.Tap is a
  Python forwarder between two proxies; a probe sits inside one.)
* send(): one request, returning what the upstream received AND the response
  headers (the probes, Envoy's %TRACE_ID%).
* Recorders for spans a tracer reports: a Zipkin HTTP/JSON collector and an
  X-Ray daemon (UDP), so that tests can compare header ids with the span Envoy
  itself reported.
"""

from __future__ import annotations

import copy
import time
import http.client
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable, Iterator

import yaml

from harness import (
    HCM_TYPE,
    STRING_VALUE_TYPE,
    TRACE_HEADERS,
    WASM,
    WASM_FILTER_TYPE,
    Envoy,
    HarnessError,
    Received,
    ThreadingHTTPServer,
    load_config,
)

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
ALL_FORMATS = ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"]


# ---------------------------------------------------------------------------
# Walking a configuration
# ---------------------------------------------------------------------------


def _walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def wasm_plugins(cfg) -> list[dict]:
    """The PluginConfig of every wasm HTTP filter, wherever it sits (HCM chain,
    upstream filters, ECDS resource)."""
    return [
        node["config"]
        for node in _walk(cfg)
        if node.get("@type") == WASM_FILTER_TYPE and "config" in node
    ]


def hcms(cfg: dict) -> list[dict]:
    return [node for node in _walk(cfg) if node.get("@type") == HCM_TYPE]


def cluster(cfg: dict, name: str) -> dict:
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise HarnessError(f"no cluster {name!r}")


def upstream_http_filters(cfg: dict, cluster_name: str) -> list[dict]:
    """The `http_filters` of a cluster's HttpProtocolOptions (the upstream chain)."""
    options = cluster(cfg, cluster_name)["typed_extension_protocol_options"]
    return options[HTTP_PROTOCOL_OPTIONS]["http_filters"]


def set_cluster_port(cfg: dict, name: str, port: int) -> None:
    for group in cluster(cfg, name)["load_assignment"]["endpoints"]:
        for ep in group["lb_endpoints"]:
            ep["endpoint"]["address"]["socket_address"]["port_value"] = port


def plugin_config_text(config) -> str:
    """Plugin configuration as Envoy gets it: a dict as compact JSON, a str as is."""
    if isinstance(config, str):
        return config
    return json.dumps(config, separators=(",", ":"), sort_keys=True)


def set_plugin_config(plugin: dict, config) -> None:
    plugin["configuration"] = {"@type": STRING_VALUE_TYPE, "value": plugin_config_text(config)}


def plugin_json(plugin: dict) -> dict:
    return json.loads(plugin["configuration"]["value"])


def set_wasm_path(cfg, wasm_path: Path = WASM) -> None:
    for plugin in wasm_plugins(cfg):
        plugin["vm_config"]["code"]["local"]["filename"] = str(Path(wasm_path).resolve())


def tracing(cfg: dict) -> dict:
    (hcm,) = hcms(cfg)
    return hcm["tracing"]


def load(path: Path | str) -> dict:
    """A configuration under envoy/ as the running Envoy loads it (harness.load_config)."""
    return load_config(path)


def render(
    source: Path | str | dict,
    *,
    clusters: dict[str, int] | None = None,
    listener_port: int = 0,
    admin_port: int = 0,
    wasm_path: Path = WASM,
    mutate: Callable[[dict], None] | None = None,
) -> dict:
    """A copy of an envoy/ config for a test run: admin and listener ports (0 = any
    free port), cluster ports by name, the wasm path made absolute, then `mutate`."""
    cfg = copy.deepcopy(source) if isinstance(source, dict) else load(source)
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listener_port
    for name, port in (clusters or {}).items():
        set_cluster_port(cfg, name, port)
    set_wasm_path(cfg, wasm_path)
    if mutate is not None:
        mutate(cfg)
    return cfg


# ---------------------------------------------------------------------------
# The probe: a Lua filter that reports the trace headers at its position
# ---------------------------------------------------------------------------

UPSTREAM_CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
    },
}

_PROBE_LUA = """
local NAMES = {%(names)s}
function envoy_on_request(h)
  local md = h:streamInfo():dynamicMetadata()
  for _, name in ipairs(NAMES) do
    local value = h:headers():get(name)
    if value ~= nil then md:set("probe.%(tag)s", name, value) end
  end
end
function envoy_on_response(h)
  local seen = h:streamInfo():dynamicMetadata():get("probe.%(tag)s")
  if seen == nil then return end
  for name, value in pairs(seen) do h:headers():add("x-probe-%(tag)s-" .. name, value) end
end
"""


def probe(tag: str) -> dict:
    """A Lua HTTP filter (in the HCM chain or as an upstream filter) that returns the
    trace headers the request had at its position as response headers
    `x-probe-<tag>-<name>` (the first line of each name). It changes no request header."""
    names = ", ".join(f'"{n}"' for n in TRACE_HEADERS)
    code = _PROBE_LUA % {"names": names, "tag": tag}
    return {
        "name": f"probe.{tag}",
        "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": code}},
    }


def add_upstream_probe(cfg: dict, cluster_name: str, tag: str, *, before_wasm: bool = False):
    """Put a probe into a cluster's upstream chain: just before the wasm filter (what
    Envoy's tracer injected), or last (what leaves the hop). A cluster without an
    upstream chain gets one: [probe, upstream_codec]."""
    c = cluster(cfg, cluster_name)
    options = c.setdefault("typed_extension_protocol_options", {}).setdefault(
        HTTP_PROTOCOL_OPTIONS,
        {
            "@type": "type.googleapis.com/" + HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {"http_protocol_options": {}},
        },
    )
    chain = options.setdefault("http_filters", [copy.deepcopy(UPSTREAM_CODEC)])
    if before_wasm:
        (index,) = [
            i
            for i, f in enumerate(chain)
            if f.get("typed_config", {}).get("@type") == WASM_FILTER_TYPE
        ]
    else:
        index = len(chain) - 1  # upstream_codec is always last
    chain.insert(index, probe(tag))


def probed(response_headers: list[tuple[str, str]], tag: str) -> dict[str, str]:
    """The headers a probe reported: {trace header name: value}."""
    prefix = f"x-probe-{tag}-"
    return {n[len(prefix) :]: v for n, v in response_headers if n.startswith(prefix)}


def add_response_trace_id(cfg: dict, header: str = "x-tracer-trace-id") -> None:
    """Every response carries Envoy's own trace id (%TRACE_ID% of the active span)."""
    (hcm,) = hcms(cfg)
    for vhost in hcm["route_config"]["virtual_hosts"]:
        vhost.setdefault("response_headers_to_add", []).append(
            {"header": {"key": header, "value": "%TRACE_ID%"}}
        )


# ---------------------------------------------------------------------------
# Envoy running a rendered configuration
# ---------------------------------------------------------------------------


class RenderedEnvoy(Envoy):
    """harness.Envoy running `cfg` (already rendered) instead of tracebridge.yaml.

    harness.Envoy's constructor renders tracebridge.yaml; we let it do so (so that
    every attribute it sets exists) and then write our configuration over it.
    """

    def __init__(self, workdir: Path, cfg: dict, *, concurrency: int = 1, extra_args=()):
        super().__init__(workdir, upstream_port=1, concurrency=concurrency)
        self.cfg = cfg
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        return super().command() + self.extra_args

    @property
    def pid(self) -> int:
        return self.proc.pid


# ---------------------------------------------------------------------------
# Requests that return the response headers too
# ---------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def upstream(self) -> Received:
        """What the echo upstream received."""
        if self.status != 200:
            raise HarnessError(f"HTTP {self.status}: {self.body[:300]!r}")
        return Received([(n, v) for n, v in json.loads(self.body)])

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        assert len(values) <= 1, f"response header {name} {len(values)} times: {values}"
        return values[0] if values else None

    def probe(self, tag: str) -> dict[str, str]:
        """What the probe `tag` saw (see add_upstream_probe)."""
        return probed(self.headers, tag)


def send(port: int, headers=(), path: str = "/", timeout: float = 10.0) -> Reply:
    """One request on a new connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, [(n.lower(), v) for n, v in resp.getheaders()], body)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Span recorders
# ---------------------------------------------------------------------------


class _ZipkinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("transfer-encoding", ""):
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b""
        while True:  # Envoy sends the spans chunked
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers, up to the empty line
                return body
            body += self.rfile.read(size + 2)[:size]  # the chunk and its CRLF

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        with self.server.lock:
            self.server.spans.extend(json.loads(body))
            self.server.cond.notify_all()
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


class ZipkinCollector:
    """Zipkin v2 HTTP/JSON collector on 127.0.0.1: records the spans Envoy reports."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ZipkinHandler)
        self.server.daemon_threads = True
        self.server.spans = []
        self.server.lock = threading.Lock()
        self.server.cond = threading.Condition(self.server.lock)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ZipkinCollector":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_span(self, predicate, timeout: float = 10.0) -> dict:
        with self.server.cond:
            found = self.server.cond.wait_for(
                lambda: next((s for s in self.server.spans if predicate(s)), None), timeout
            )
        if not found:
            raise AssertionError(f"no matching span reported; got {self.server.spans}")
        return found


class XRayDaemon:
    """X-Ray daemon stand-in on 127.0.0.1 (UDP): records the segments Envoy sends.

    Each datagram is `{"format": "json", "version": 1}` + newline + a segment document.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.segments: list[dict] = []
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            _, _, doc = data.decode("utf-8", "replace").partition("\n")
            with self._cond:
                self.segments.append(json.loads(doc))
                self._cond.notify_all()

    def __enter__(self) -> "XRayDaemon":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def wait_segment(self, predicate, timeout: float = 10.0) -> dict:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((s for s in self.segments if predicate(s)), None), timeout
            )
        if not found:
            raise AssertionError(f"no matching segment; got {self.segments}")
        return found


# ---------------------------------------------------------------------------
# Expected headers
# ---------------------------------------------------------------------------


def formats(trace: str, span: str, sampled: bool) -> dict[str, list[str]]:
    """The five formats carrying (trace, span, decision), each in its specification's
    encoding (no W3C random flag, no B3 parent):

    traceparent  00-<trace>-<span>-<flags: 01 sampled, 00 not>      (W3C Trace Context)
    b3           <trace>-<span>-<1|0>                                (B3 single header)
    x-b3-*       traceid, spanid, sampled 1|0                        (B3 multi)
    X-Amzn-...   Root=1-<trace[:8]>-<trace[8:]>;Parent=<span>;Sampled=1|0   (X-Ray)
    X-Cloud-...  <trace>/<span as unsigned decimal>;o=1|0           (Cloud Trace)
    """
    d = "1" if sampled else "0"
    return {
        "traceparent": [f"00-{trace}-{span}-0{d}"],
        "b3": [f"{trace}-{span}-{d}"],
        "x-b3-traceid": [trace],
        "x-b3-spanid": [span],
        "x-b3-sampled": [d],
        "x-amzn-trace-id": [f"Root=1-{trace[:8]}-{trace[8:]};Parent={span};Sampled={d}"],
        "x-cloud-trace-context": [f"{trace}/{int(span, 16)};o={d}"],
    }


def xray_root(trace: str) -> str:
    """The X-Ray form of a 128-bit trace id: 1-<8 hex>-<24 hex>."""
    return f"1-{trace[:8]}-{trace[8:]}"


def is_span_id(value: str) -> bool:
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value) and int(value, 16) != 0


def is_trace_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value) and int(value, 16) != 0


# ---------------------------------------------------------------------------
# Background traffic
# ---------------------------------------------------------------------------


class Traffic:
    """Requests sent back to back from a background thread over one keep-alive
    connection, until stop(). Every outcome is recorded, failures included: a
    failed request is never retried."""

    def __init__(self, port: int, headers=(), pause: float = 0.005):
        self.port, self.headers, self.pause = port, list(headers), pause
        self.results: list[tuple[float, Received | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:

        conn = None
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.putrequest("GET", "/", skip_accept_encoding=True)
                for name, value in self.headers:
                    conn.putheader(name, value)
                conn.endheaders()
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.results.append((now, None, f"HTTP {resp.status}: {body[:200]!r}"))
                else:
                    self.results.append((now, Received([tuple(p) for p in json.loads(body)]), None))
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is a result
                self.results.append((now, None, f"{type(e).__name__}: {e}"))
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def start(self) -> "Traffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def failures(self) -> list[str]:
        return [err for _, _, err in self.results if err is not None]

    def since(self, t: float) -> list[Received]:
        return [got for when, got, _ in self.results if when >= t and got is not None]

    def wait_for(self, predicate, timeout: float = 10.0) -> float:
        """Wait until a response received after now satisfies predicate; its send time."""

        start = time.monotonic()
        seen = 0
        while time.monotonic() - start < timeout:
            results = self.results[seen:]
            seen += len(results)
            for when, got, _ in results:
                if when >= start and got is not None and predicate(got):
                    return when
            time.sleep(0.02)
        raise AssertionError(f"no response within {timeout} s satisfied the predicate")


# The ECDS resource of envoy/ecds.yaml and the prefix of its discovery stats.
ECDS_RESOURCE = "envoy/ecds/tracebridge.yaml"
ECDS_STAT = "extension_config_discovery.http_filter.tracebridge."


class EcdsFile:
    """The ECDS resource file, published atomically: written next to the watched path,
    then renamed over it."""

    def __init__(self, path: Path):
        self.path = path
        self.resource = load(ECDS_RESOURCE)
        set_wasm_path(self.resource)

    def publish(self, version: int, plugin_config) -> None:
        doc = copy.deepcopy(self.resource)
        doc["version_info"] = str(version)
        (plugin,) = wasm_plugins(doc)
        set_plugin_config(plugin, plugin_config)
        tmp = self.path.with_name(f".{self.path.name}.{version}.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.rename(tmp, self.path)


def ecds_stats(envoy) -> dict[str, int]:
    """The tracebridge filter's ECDS stats, without their prefix."""
    stats = envoy.stats("extension_config_discovery")
    return {k[len(ECDS_STAT) :]: v for k, v in stats.items()}
