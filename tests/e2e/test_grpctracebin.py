"""grpc-trace-bin over real HTTP/2: an h2c client, Envoy on envoy/tracebridge-h2c.yaml
(h2c listener, h2c upstream cluster), and an h2c echo upstream.

The value is the OpenCensus binary trace context (census-instrumentation/opencensus-specs
encodings/BinaryEncoding.md): version 0, then field 0 with the 16-byte trace id, field 1
with the 8-byte span id, field 2 with 1 byte of options (bit 0: sampled). On HTTP/2 it is
base64 (gRPC PROTOCOL-HTTP2.md: "Implementations MUST accept padded and un-padded values
and should emit un-padded values"). README: options optional (default not sampled),
unknown trailing fields ignored, unpadded written.
"""

import json
import subprocess

import pytest

import expect
from formats_h2 import (
    DEFAULT_INJECT,
    GRPC_PATH,
    b64,
    default_formats,
    grpc_trace_bin,
    grpc_trace_bin_bytes,
    h2_proxies,  # noqa: F401 - fixture
    h2_upstream,  # noqa: F401 - fixture
    trace_headers,
)

CONFIG = {"inject": DEFAULT_INJECT + ["grpctracebin"]}

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

# The OpenCensus example, byte by byte:
#   00                                                  version 0
#   00 4b f9 2f 35 77 b3 4d a6 a3 ce 92 9d 0e 0e 47 36  field 0: trace id
#   01 00 f0 67 aa 0b a9 02 b7                          field 1: span id
#   02 01                                               field 2: options, sampled
EXAMPLE = bytes.fromhex(
    "00" "00" "4bf92f3577b34da6a3ce929d0e0e4736" "01" "00f067aa0ba902b7" "02" "01"
)  # fmt: skip
# Its base64 (29 bytes: nine groups of 3, then 02 01 -> "AgE" + one "="). Worked out
# once by hand for the groups that matter: 00 00 4b -> AABL; 02 01 -> 000000 100000
# 000100 -> A g E; 02 00 -> A g A.
PADDED = "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE="
UNPADDED = "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgE"
UNPADDED_NOT_SAMPLED = "AABL+S81d7NNpqPOkp0ODkc2AQDwZ6oLqQK3AgA"
assert b64(EXAMPLE, padded=True) == PADDED and b64(EXAMPLE) == UNPADDED
assert grpc_trace_bin(TRACE, SPAN, False) == UNPADDED_NOT_SAMPLED

# traceparent 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 as grpc-trace-bin:
# 00 00 0af7651916cd43dd8448eb211c80319c 01 b7ad6b7169203331 02 01, unpadded base64.
TP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP2_BIN = "AAAK92UZFs1D3YRI6yEcgDGcAbeta3FpIDMxAgE"
assert grpc_trace_bin("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True) == TP2_BIN


@pytest.fixture(scope="module")
def proxy(h2_proxies):  # noqa: F811
    return h2_proxies(CONFIG)


def test_request_arrives_over_http2_as_grpc(proxy):
    got = proxy.send([("grpc-trace-bin", PADDED)])
    # Pseudo-header fields exist only in HTTP/2: the upstream saw HTTP/2 end to end.
    assert got.get(":method") == "POST"
    assert got.get(":path") == GRPC_PATH
    assert got.get("content-type") == "application/grpc"


@pytest.mark.parametrize("value", [PADDED, UNPADDED], ids=["padded", "unpadded"])
def test_matching_value_passes_exactly_as_it_came(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("grpc-trace-bin", value)])
    assert trace_headers(got) == {
        **default_formats(TRACE, SPAN, "01"),
        "grpc-trace-bin": [value],
    }
    assert delta == {"tracebridge.extracted.grpctracebin": 1}


@pytest.mark.parametrize(
    "value, flags",
    [
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, 0x00), padded=True), "00"),
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, 0x00)), "00"),
        # Only bit 0 of the options is read: ff is sampled, fe is not.
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, 0xFF)), "01"),
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, 0xFE), padded=True), "00"),
        # Options omitted (27 bytes): "default not sampled".
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, None), padded=True), "00"),
        (b64(grpc_trace_bin_bytes(TRACE, SPAN, None)), "00"),
        # An unknown field 3 after the options ends decoding; not an error.
        (b64(EXAMPLE + bytes([0x03, 0x09, 0x09])), "01"),
    ],
    ids=[
        "not-sampled-padded",
        "not-sampled",
        "options-ff",
        "options-fe",
        "no-options-padded",
        "no-options",
        "unknown-trailing-field",
    ],
)
def test_options_and_layout(proxy, value, flags):
    with proxy.counting() as delta:
        got = proxy.send([("grpc-trace-bin", value)])
    assert trace_headers(got) == {
        **default_formats(TRACE, SPAN, flags),
        "grpc-trace-bin": [value],  # already says the chosen context: as it came
    }
    # The caller's decision, not one of the filter's.
    assert delta == {"tracebridge.extracted.grpctracebin": 1}


def test_rewritten_value_is_unpadded(proxy):
    # traceparent wins (default order); it says "not sampled", the padded grpc-trace-bin
    # says "sampled": rewritten as 29 canonical bytes, options 00, without padding.
    got = proxy.send(
        [("traceparent", f"00-{TRACE}-{SPAN}-00"), ("grpc-trace-bin", PADDED)]
    )
    assert got.all("grpc-trace-bin") == [UNPADDED_NOT_SAMPLED]
    assert got.all("traceparent") == [f"00-{TRACE}-{SPAN}-00"]


@pytest.mark.parametrize(
    "traceparent, expected",
    [
        (TP2, TP2_BIN),
        # flags 03 (sampled + random): options carry the sampled bit only.
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", TP2_BIN),
        # not sampled: ... 02 00 -> "...AgA"
        (f"00-{TRACE}-{SPAN}-00", UNPADDED_NOT_SAMPLED),
    ],
    ids=["sampled", "sampled-random", "not-sampled"],
)
def test_traceparent_written_as_grpc_trace_bin(proxy, traceparent, expected):
    with proxy.counting() as delta:
        got = proxy.send([("traceparent", traceparent)])
    assert got.all("grpc-trace-bin") == [expected]
    assert got.all("traceparent") == [traceparent]
    assert delta == {"tracebridge.extracted.tracecontext": 1}


def test_64_bit_b3_id_is_left_padded_in_the_binary_trace_id(proxy):
    got = proxy.send(
        [
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]
    )
    # 00 00 | 00*8 46 3a c3 5c 9f 64 13 ad | 01 a2 fb 4a 1d 1a 96 d3 12 | 02 00
    assert got.all("grpc-trace-bin") == ["AAAAAAAAAAAAAEY6w1yfZBOtAaL7Sh0altMSAgA"]


def test_stale_value_of_another_trace_is_replaced(proxy):
    with proxy.counting() as delta:
        got = proxy.send([("grpc-trace-bin", PADDED), ("traceparent", TP2)])
    assert trace_headers(got) == {
        **default_formats("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01"),
        "grpc-trace-bin": [TP2_BIN],
    }
    assert delta == {"tracebridge.extracted.tracecontext": 1}


def test_two_lines_are_replaced_by_one(proxy):
    got = proxy.send([("grpc-trace-bin", UNPADDED), ("grpc-trace-bin", UNPADDED)])
    assert got.all("grpc-trace-bin") == [UNPADDED]
    assert got.all("traceparent") == [f"00-{TRACE}-{SPAN}-01"]


def _swap(data: bytes, i: int, value: int) -> bytes:
    return data[:i] + bytes([value]) + data[i + 1 :]


INVALID = {
    "not-base64": "not base64!",
    "url-safe-alphabet": UNPADDED.replace("+", "-"),
    "padding-on-unpadded-length": UNPADDED + "==",
    "padding-in-the-middle": PADDED[:8] + "=" + PADDED[8:],
    "length-1-mod-4": UNPADDED[:37],
    "version-1": b64(_swap(EXAMPLE, 0, 0x01)),
    "version-ff": b64(_swap(EXAMPLE, 0, 0xFF)),
    "options-id-without-value": b64(EXAMPLE[:28]),
    "span-truncated": b64(EXAMPLE[:20]),
    "trace-only": b64(EXAMPLE[:18]),
    "trace-truncated": b64(EXAMPLE[:12]),
    "span-field-first": b64(
        bytes.fromhex("00" "01" + SPAN + "00" + TRACE + "0201")
    ),  # fmt: skip
    "wrong-trace-field-id": b64(_swap(EXAMPLE, 1, 0x05)),
    "zero-trace-id": b64(grpc_trace_bin_bytes("0" * 32, SPAN, 1)),
    "zero-span-id": b64(grpc_trace_bin_bytes(TRACE, "0" * 16, 1)),
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_invalid_value_is_counted_and_replaced_by_the_new_trace(proxy, value):
    with proxy.counting() as delta:
        got = proxy.send([("grpc-trace-bin", value), ("x-keep", "yes")])
    trace, span, sampled = expect.new_trace(got, not_trace=TRACE)
    assert got.all("grpc-trace-bin") == [grpc_trace_bin(trace, span, sampled)]
    assert got.all("x-keep") == ["yes"]
    decision = "tracebridge.decision.sampled" if sampled else "tracebridge.decision.not_sampled"
    assert delta == {
        "tracebridge.invalid.grpctracebin": 1,
        "tracebridge.trace_started": 1,
        decision: 1,
    }


def test_invalid_value_is_counted_beside_a_valid_context(proxy):
    # The X-Ray context supplies the context; the invalid grpc-trace-bin is still counted
    # and rewritten to the chosen context.
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    with proxy.counting() as delta:
        got = proxy.send([("grpc-trace-bin", "AAAA"), ("x-amzn-trace-id", xray)])
    assert got.all("grpc-trace-bin") == [
        grpc_trace_bin("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)
    ]
    assert delta == {"tracebridge.invalid.grpctracebin": 1, "tracebridge.extracted.xray": 1}


def _curl(proxy, *headers: str) -> list:
    cmd = ["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge"]
    for h in ("content-type: application/grpc", "te: trailers") + headers:
        cmd += ["-H", h]
    cmd += ["--data-binary", "@-", f"http://127.0.0.1:{proxy.envoy.listener_port}{GRPC_PATH}"]
    result = subprocess.run(cmd, input=b"\0\0\0\0\0", capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_curl_http2_prior_knowledge_round_trip(proxy):
    # An independent HTTP/2 client: curl (nghttp2).
    pairs = _curl(proxy, f"grpc-trace-bin: {PADDED}")
    got = {n: v for n, v in pairs}
    assert got[":method"] == "POST"
    assert got["grpc-trace-bin"] == PADDED
    assert got["traceparent"] == f"00-{TRACE}-{SPAN}-01"

    pairs = _curl(proxy, f"traceparent: {TP2}")
    assert [v for n, v in pairs if n == "grpc-trace-bin"] == [TP2_BIN]
