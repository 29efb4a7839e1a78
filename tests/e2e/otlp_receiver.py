"""A real OTLP/HTTP trace receiver for the span tests, on 127.0.0.1.

Every POST is decoded with OpenTelemetry's generated classes (the `opentelemetry-proto`
package): `ExportTraceServiceRequest.FromString`, then a walk over every message checking that
the parser left no unknown field behind (a field the filter wrote under a wrong number or wire
type would otherwise be skipped silently). An export that is not `POST /v1/traces` with
`content-type: application/x-protobuf`, does not parse, or has unknown fields is answered 400
and recorded in `errors`, which the tests assert empty.

The answer is configurable (`answer()`): an HTTP status, an OTLP partial success
(`rejected_spans`), a delay before answering (a collector slower than the filter's timeout).
The receiver counts the exports it is handling at once (until it answers or the client hangs
up), so a test can see that a worker never has more than one in flight.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from harness import ThreadingHTTPServer

PROTOBUF = "application/x-protobuf"


def unknown_fields(message: Message, where: str = "") -> list[str]:
    """Where in `message` (recursively) the parser kept fields it does not know."""
    found = []
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})
        found.append(f"{where or message.DESCRIPTOR.name}: unknown field numbers {numbers}")
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        path = f"{where}.{descriptor.name}" if where else descriptor.name
        if descriptor.is_repeated:  # OTLP has no map fields
            for i, item in enumerate(value):
                found += unknown_fields(item, f"{path}[{i}]")
        else:
            found += unknown_fields(value, path)
    return found


@dataclass
class Export:
    """One export request as received."""

    headers: dict[str, str]
    request: trace_service_pb2.ExportTraceServiceRequest
    received_at: float


@dataclass
class ReceivedSpan:
    span: trace_pb2.Span
    resource: dict[str, object]
    scope: tuple[str, str]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, object]:
        return attributes(self.span.attributes)

    @property
    def kind(self) -> str:
        return trace_pb2.Span.SpanKind.Name(self.span.kind)

    @property
    def status(self) -> str:
        return trace_pb2.Status.StatusCode.Name(self.span.status.code)


def any_value(value) -> object:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def attributes(key_values) -> dict[str, object]:
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass
class Answer:
    status: int = 200
    rejected_spans: int = 0
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802
        receiver: OtlpReceiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with receiver.cond:
            # Exports whose client already hung up are not in flight for it any more.
            for other in [h for h in receiver.live if h._hung_up()]:
                receiver.live.discard(other)
                receiver.abandoned += 1
            receiver.live.add(self)
            receiver.max_active = max(receiver.max_active, len(receiver.live))
            answer = receiver.current
        try:
            problem = None
            if self.path != "/v1/traces":
                problem = f"path {self.path}"
            elif self.headers.get("content-type") != PROTOBUF:
                problem = f"content-type {self.headers.get('content-type')}"
            if problem is None:
                try:
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    unknown = unknown_fields(request)
                except DecodeError as e:
                    problem = f"does not decode: {e}"
                except Exception as e:  # noqa: BLE001 - recorded, so the test fails on it
                    problem = f"{type(e).__name__}: {e}"
                else:
                    if unknown:
                        problem = "; ".join(unknown)
            if problem is not None:
                with receiver.cond:
                    receiver.errors.append(problem)
                    receiver.cond.notify_all()
                self._reply(400, b"")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.cond:
                receiver.exports.append(Export(headers, request, time.monotonic()))
                receiver.cond.notify_all()
            if answer.delay and not self._wait_unless_abandoned(answer.delay):
                with receiver.cond:
                    if self in receiver.live:
                        receiver.live.discard(self)
                        receiver.abandoned += 1
                return
            response = trace_service_pb2.ExportTraceServiceResponse()
            if answer.rejected_spans:
                response.partial_success.rejected_spans = answer.rejected_spans
                response.partial_success.error_message = "rejected by the test"
            self._reply(answer.status, response.SerializeToString())
        finally:
            with receiver.cond:
                receiver.live.discard(self)


    def _hung_up(self, wait: float = 0.0) -> bool:
        """Whether the client closed the connection (Envoy gives up on a call at its timeout)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], wait)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait_unless_abandoned(self, delay: float) -> bool:
        """Waits `delay` seconds before answering; False as soon as the client hangs up."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._hung_up(min(left, 0.02)):
                self.close_connection = True
                return False
        return True

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", PROTOBUF)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the filter gave up waiting (its timeout)

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


class OtlpReceiver:
    """with OtlpReceiver() as otlp: ... otlp.port ... otlp.wait_spans(n)"""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.receiver = self
        self.port = self.server.server_address[1]
        self.cond = threading.Condition()
        self.exports: list[Export] = []
        self.errors: list[str] = []
        self.current = Answer()
        # Exports being handled whose client still waits, the most there were at once, and how
        # many the client gave up on before the answer.
        self.live: set = set()
        self.max_active = 0
        self.abandoned = 0
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "OtlpReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, status: int = 200, rejected_spans: int = 0, delay: float = 0.0) -> None:
        with self.cond:
            self.current = Answer(status, rejected_spans, delay)

    def spans(self) -> list[ReceivedSpan]:
        out = []
        with self.cond:
            exports = list(self.exports)
        for export in exports:
            for resource_spans in export.request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    scope = (scope_spans.scope.name, scope_spans.scope.version)
                    out.extend(ReceivedSpan(s, resource, scope) for s in scope_spans.spans)
        return out

    def wait_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """At least `count` spans received; all of them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if len(spans) >= count or time.monotonic() > deadline:
                break
            with self.cond:
                self.cond.wait(0.05)
        assert not self.errors, f"the receiver rejected exports: {self.errors}"
        assert len(spans) >= count, f"{len(spans)} spans received, {count} expected: {spans}"
        return spans

    def wait_span(self, predicate, timeout: float = 10.0) -> ReceivedSpan:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans() if predicate(s)]
            if found:
                assert not self.errors, f"the receiver rejected exports: {self.errors}"
                return found[0]
            with self.cond:
                self.cond.wait(0.05)
        raise AssertionError(f"no matching span; received {self.spans()}, errors {self.errors}")
