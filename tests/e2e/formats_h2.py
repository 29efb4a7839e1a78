"""Helpers for the end-to-end tests of jaeger, datadog, grpctracebin and baggage.

Reuses harness.py (Envoy, Proxy, Received). Adds:

* header names of the formats harness.TRACE_HEADERS does not list, and
  `trace_headers(got)`: every trace and baggage header that arrived;
* `grpc_trace_bin(...)`: the OpenCensus binary trace context, laid out from the
  specification byte by byte and base64-encoded with Python's standard library;
* HTTP/2 without TLS (h2c), with the `h2` package: `H2EchoUpstream` (answers every
  request with the header fields it received, pseudo-headers included, as JSON),
  `H2Client` (HTTP/2 with prior knowledge, header fields sent exactly as given),
  `H2Proxy` (an Envoy running envoy/tracebridge-h2c.yaml plus an H2Client, with the
  filter's counters) and `h2_proxies`, a module fixture factory like conftest's
  `proxies`, for Envoys in front of an h2c upstream.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)

from harness import ENVOY_DIR, Envoy, HarnessError, Proxy, Received

H2C_CONFIG = ENVOY_DIR / "tracebridge-h2c.yaml"

DEFAULT_INJECT = ["tracecontext", "b3multi", "xray", "cloudtrace"]
ALL_FORMATS = [
    "tracecontext",
    "b3",
    "b3multi",
    "xray",
    "cloudtrace",
    "jaeger",
    "datadog",
    "grpctracebin",
]

JAEGER_HEADERS = ("uber-trace-id", "jaeger-debug-id")
DATADOG_HEADERS = (
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "x-datadog-origin",
)
GRPC_HEADERS = ("grpc-trace-bin",)
OLD_HEADERS = (
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
ALL_TRACE_HEADERS = OLD_HEADERS + JAEGER_HEADERS + DATADOG_HEADERS + GRPC_HEADERS
BAGGAGE_PREFIXES = ("uberctx-", "ot-baggage-")

# Every counter the filter has (counting()'s default leaves some out).
ALL_COUNTERS = ("tracebridge.",)


def trace_headers(got: Received, *, baggage: bool = False) -> dict[str, list[str]]:
    """Every trace header of the eight formats that arrived (name -> values).

    baggage: also `baggage`, `uberctx-*` and `ot-baggage-*`.
    """
    out: dict[str, list[str]] = {}
    for name, value in got.pairs:
        if name in ALL_TRACE_HEADERS or (
            baggage and (name == "baggage" or name.startswith(BAGGAGE_PREFIXES))
        ):
            out.setdefault(name, []).append(value)
    return out


def baggage_headers(got: Received) -> dict[str, list[str]]:
    """`baggage`, `uberctx-*` and `ot-baggage-*` that arrived (name -> values)."""
    return {
        name: values
        for name, values in trace_headers(got, baggage=True).items()
        if name == "baggage" or name.startswith(BAGGAGE_PREFIXES)
    }


# ---------------------------------------------------------------------------
# Expected values, from the specifications
# ---------------------------------------------------------------------------


def grpc_trace_bin_bytes(trace_hex: str, span_hex: str, options: int | None = 1) -> bytes:
    """OpenCensus BinaryEncoding: version 0, field 0 + 16-byte trace id, field 1 +
    8-byte span id, field 2 + 1-byte options (omitted when options is None)."""
    assert len(trace_hex) == 32 and len(span_hex) == 16
    out = bytes([0x00, 0x00]) + bytes.fromhex(trace_hex) + bytes([0x01]) + bytes.fromhex(span_hex)
    if options is not None:
        out += bytes([0x02, options])
    return out


def b64(data: bytes, *, padded: bool = False) -> str:
    """Standard base64 (RFC 4648 section 4); gRPC emits it without padding."""
    text = base64.b64encode(data).decode("ascii")
    return text if padded else text.rstrip("=")


def grpc_trace_bin(trace_hex: str, span_hex: str, sampled: bool, *, padded: bool = False) -> str:
    """The canonical 29-byte value for (trace, span, sampled), base64."""
    return b64(grpc_trace_bin_bytes(trace_hex, span_hex, 1 if sampled else 0), padded=padded)


def default_formats(
    trace: str, span: str, flags: str, *, debug: bool = False
) -> dict[str, list[str]]:
    """What the four default injected formats say for (trace, span) with
    traceparent flags `flags` ("00", "01", "02", "03"); debug: B3 debug."""
    sampled = int(flags, 16) & 1
    d = "1" if sampled else "0"
    out = {
        "traceparent": [f"00-{trace}-{span}-{flags}"],
        "x-b3-traceid": [trace],
        "x-b3-spanid": [span],
        "x-amzn-trace-id": [f"Root=1-{trace[:8]}-{trace[8:]};Parent={span};Sampled={d}"],
        "x-cloud-trace-context": [f"{trace}/{int(span, 16)};o={d}"],
    }
    if debug:
        out["x-b3-flags"] = ["1"]
    else:
        out["x-b3-sampled"] = [d]
    return out


def every_format(
    trace: str, span: str, flags: str, *, debug: bool = False
) -> dict[str, list[str]]:
    """What all eight formats say for (trace, span), in each specification's
    encoding (README "Choices": Jaeger `{32}:{16}:0:{1|0|3}`; Datadog decimal low
    half, `_dd.p.tid` only for a non-zero upper half, debug as priority 2;
    grpc-trace-bin 29 bytes, unpadded)."""
    sampled = bool(int(flags, 16) & 1)
    out = default_formats(trace, span, flags, debug=debug)
    out["b3"] = [f"{trace}-{span}-{'d' if debug else '1' if sampled else '0'}"]
    out["uber-trace-id"] = [f"{trace}:{span}:0:{3 if debug else 1 if sampled else 0}"]
    out["x-datadog-trace-id"] = [str(int(trace[16:], 16))]
    out["x-datadog-parent-id"] = [str(int(span, 16))]
    out["x-datadog-sampling-priority"] = ["2" if debug else "1" if sampled else "0"]
    if int(trace[:16], 16):
        out["x-datadog-tags"] = [f"_dd.p.tid={trace[:16]}"]
    out["grpc-trace-bin"] = [grpc_trace_bin(trace, span, sampled)]
    return out


# ---------------------------------------------------------------------------
# HTTP/2 cleartext (h2c)
# ---------------------------------------------------------------------------

_TIMEOUT = 10.0


def _latin1(pairs) -> list[list[str]]:
    return [
        [
            n.decode("latin-1") if isinstance(n, bytes) else n,
            v.decode("latin-1") if isinstance(v, bytes) else v,
        ]
        for n, v in pairs
    ]


class H2EchoUpstream:
    """An h2c server on 127.0.0.1 that answers every request with a JSON list of
    the request's header fields, ``[[name, value], ...]`` in the order they
    arrived, pseudo-headers (`:method`, `:path`, ...) included, values as bytes
    decoded as Latin-1. Only HTTP/2 with prior knowledge is spoken: a request
    that reaches it came over HTTP/2."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()
        self._stopped = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="h2-echo", daemon=True)

    def start(self) -> "H2EchoUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._thread.join(5)

    def __enter__(self) -> "H2EchoUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = H2Connection(
            config=H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        conn.initiate_connection()
        requests: dict[int, list] = {}
        try:
            sock.sendall(conn.data_to_send())
            while not self._stopped.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        requests[event.stream_id] = list(event.headers)
                    elif isinstance(event, DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        pairs = requests.pop(event.stream_id, [])
                        body = json.dumps(_latin1(pairs)).encode("ascii")
                        conn.send_headers(
                            event.stream_id,
                            [
                                (":status", "200"),
                                ("content-type", "application/json"),
                                ("content-length", str(len(body))),
                            ],
                        )
                        conn.send_data(event.stream_id, body, end_stream=True)
                    elif isinstance(event, ConnectionTerminated):
                        return
                sock.sendall(conn.data_to_send())
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(sock)
            sock.close()


class H2Client:
    """HTTP/2 with prior knowledge over one connection; header fields are sent
    exactly as given (names must be lower case, as HTTP/2 requires)."""

    def __init__(self, host: str, port: int, timeout: float = _TIMEOUT):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.conn: H2Connection | None = None

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.close_connection()
                self.sock.sendall(self.conn.data_to_send())
            self.sock.close()
            self.sock = self.conn = None

    def _connect(self) -> None:
        if self.sock is not None:
            return
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = H2Connection(
            config=H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(
        self,
        headers,
        method: str = "POST",
        path: str = "/",
        body: bytes = b"",
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, response header fields, response body)."""
        for attempt in (1, 2):
            self._connect()
            try:
                return self._request(headers, method, path, body)
            except (ConnectionError, _Closed):
                self.close()  # Envoy closed an idle connection: retry once on a new one
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _request(self, headers, method, path, body):
        conn, sock = self.conn, self.sock
        stream_id = conn.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", "http"),
            (":authority", f"{self.host}:{self.port}"),
            (":path", path),
        ] + list(headers)
        conn.send_headers(stream_id, fields, end_stream=not body)
        if body:
            conn.send_data(stream_id, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, response_headers, data = None, [], bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise _Closed("connection closed by the proxy")
            for event in conn.receive_data(chunk):
                if getattr(event, "stream_id", stream_id) != stream_id:
                    continue
                if isinstance(event, ResponseReceived):
                    response_headers = _latin1(event.headers)
                    status = int(dict(response_headers)[":status"])
                elif isinstance(event, TrailersReceived):
                    response_headers += _latin1(event.headers)
                elif isinstance(event, DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, StreamReset):
                    raise HarnessError(f"stream {stream_id} reset: error code {event.error_code}")
                elif isinstance(event, ConnectionTerminated):
                    raise _Closed(f"GOAWAY: {event.error_code}")
                elif isinstance(event, StreamEnded):
                    sock.sendall(conn.data_to_send())
                    return status, [tuple(p) for p in response_headers], bytes(data)
            sock.sendall(conn.data_to_send())


class _Closed(Exception):
    pass


# An empty gRPC message: compressed flag 0, length 0 (gRPC PROTOCOL-HTTP2.md).
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"
GRPC_PATH = "/helloworld.Greeter/SayHello"


class H2Proxy(Proxy):
    """An Envoy on envoy/tracebridge-h2c.yaml, a gRPC-shaped HTTP/2 client, counters."""

    def __init__(self, envoy: Envoy):
        super().__init__(envoy)
        self.h2 = H2Client("127.0.0.1", envoy.listener_port)

    def send(
        self, headers=(), method: str = "POST", path: str = GRPC_PATH, *, grpc: bool = True
    ) -> Received:
        """One request over HTTP/2; grpc: as a unary gRPC call (content-type
        application/grpc, te: trailers, an empty message). Returns the header
        fields the h2c upstream received."""
        fields = list(headers)
        body = b""
        if grpc:
            fields = [("content-type", "application/grpc"), ("te", "trailers")] + fields
            body = EMPTY_GRPC_MESSAGE
        status, _, data = self.h2.request(fields, method, path, body)
        if status != 200:
            raise HarnessError(f"HTTP/2 request failed with {status}: {data[:300]!r}\n{fields!r}")
        return Received([(n, v) for n, v in json.loads(data)])

    def close(self) -> None:
        self.h2.close()
        super().close()


@pytest.fixture(scope="module")
def h2_upstream():
    with H2EchoUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def h2_proxies(tmp_path_factory, h2_upstream, wasm, envoy_cmd):
    """h2_proxies(config) -> H2Proxy: an Envoy on envoy/tracebridge-h2c.yaml with that
    plugin configuration (a dict), started once per module, in front of an h2c echo."""
    started: dict[str, H2Proxy] = {}

    def get(config) -> H2Proxy:
        key = json.dumps(config, separators=(",", ":"), sort_keys=True)
        if key not in started:
            envoy = Envoy(
                Path(tmp_path_factory.mktemp("envoy-h2c")),
                upstream_port=h2_upstream.port,
                plugin_config=key,
                source=H2C_CONFIG,
            )
            try:
                envoy.start()
            except HarnessError as e:
                pytest.fail(f"h2c Envoy did not start with plugin configuration {key!r}: {e}")
            started[key] = H2Proxy(envoy)
        return started[key]

    yield get
    for p in started.values():
        p.close()
        p.envoy.stop()
