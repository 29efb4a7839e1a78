"""Forced sampling with HMAC tokens, the secret coming from Envoy's environment, and
the decision reason in Envoy filter state for access logs (README "Forcing a trace",
"Seeing why").

The secret reaches the Wasm VM the way Istio's `WasmPlugin.vmConfig.env` delivers it:
an environment variable of the Envoy process, listed in
`vm_config.environment_variables.host_env_keys`. Tokens are made here with Python's
hmac/hashlib (expect.force_token), from the README's definition.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time

import pytest

import expect
from harness import Envoy, EnvoyExited, HarnessError, Proxy

ALL_COUNTERS = ("tracebridge.",)
ENV = "TRACEBRIDGE_FORCE_OPS"
SECRET = "e2e-force-secret-6f1d2c9a"  # at least 16 bytes
HEADER = "x-tracebridge-force"
MAX_PER_SECOND = 4
TRACE = "4bf92f3577b34da60000000000000001"  # R = 1: not sampled by any p < 1
SPAN = "00f067aa0ba902b7"

FORCE = {
    "header": HEADER,
    "keys": {"ops": {"env": ENV}},
    "max_per_second": MAX_PER_SECOND,
    # A token forces the trace but does not make its caller trusted: an untrusted caller's
    # context restarts (test_edge_keep_trace_id.py runs the default, true).
    "trust_context": False,
}
CONFIG = {
    "sampling": {
        "probability": 0,
        "trust_incoming": False,
        "trusted_sources": {"cidrs": ["127.0.0.2/32"]},
        "rules": [{"match": {"path_prefix": "/checkout"}, "probability": 1}],
        "force": FORCE,
    },
    # The access log below shows the reason.
    "filter_state": {"sampling_reason": True},
}
REASON_KEY = "wasm.tracebridge.sampling_reason"
ACCESS_LOG = (
    f"%REQ(:PATH)% %FILTER_STATE({REASON_KEY}:PLAIN)% %FILTER_STATE({REASON_KEY}:TYPED)%\n"
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, upstream, wasm, envoy_cmd):
    """p = 0, untrusted callers except 127.0.0.2, /checkout at p = 1, force tokens."""
    envoy = Envoy(
        tmp_path_factory.mktemp("force-edge"),
        upstream_port=upstream.port,
        plugin_config=json.dumps(CONFIG),
        env={ENV: SECRET},
        host_env_keys=[ENV],
        access_log_format=ACCESS_LOG,
    )
    try:
        envoy.start()
    except HarnessError as e:
        pytest.fail(f"Envoy with the force configuration did not start: {e}")
    proxy = Proxy(envoy)
    yield proxy
    proxy.close()
    envoy.stop()


def token(expiry_in: int = 300, *, key_id: str = "ops", secret: str = SECRET) -> str:
    return expect.force_token(key_id, secret, int(time.time()) + expiry_in)


def fresh_second() -> None:
    """Sleep until just after the next whole Unix second: the per-second force
    budget starts empty there."""
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)


def assert_sampled_by_force(got, trace: str | None = None) -> None:
    """Sampled with th 0 (p = 1) in every format; a new trace unless `trace` is given."""
    if trace is None:
        expect.fresh_root(got, expect.T_P4[1], "0")
    else:
        expect.assert_injected(got, trace, SPAN, True, random_flag=False)
        assert got.all("tracestate") == ["ot=th:0"]
    assert got.get("x-b3-sampled") == "1"
    assert got.all(HEADER) == []


# ---------------------------------------------------------------------------
# Valid tokens
# ---------------------------------------------------------------------------


def test_a_valid_token_samples_the_request(edge):
    fresh_second()
    with edge.counting(ALL_COUNTERS) as delta:
        # no trace headers: a new trace, sampled at p = 0
        assert_sampled_by_force(edge.send([(HEADER, token())]))
        # an untrusted caller's context and a token: restarted, and sampled
        got = edge.send(
            [("traceparent", f"00-{TRACE}-{SPAN}-00"), ("X-TraceBridge-Force", token())]
        )
        assert_sampled_by_force(got)
        assert TRACE not in got.get("traceparent")
    assert delta.get("tracebridge.force.accepted") == 2, delta
    assert delta.get("tracebridge.reason.forced") == 2, delta
    assert delta.get("tracebridge.decision.sampled") == 2, delta
    assert "tracebridge.force.rejected" not in delta, delta


def test_a_valid_token_samples_a_trusted_parents_negative_decision(edge):
    trusted = Proxy(edge.envoy, source_address="127.0.0.2")
    try:
        fresh_second()
        with edge.counting(ALL_COUNTERS) as delta:
            got = trusted.send([("traceparent", f"00-{TRACE}-{SPAN}-00"), (HEADER, token())])
    finally:
        trusted.close()
    assert_sampled_by_force(got, TRACE)
    assert got.all("traceparent") == [f"00-{TRACE}-{SPAN}-01"]
    assert delta.get("tracebridge.reason.forced") == 1, delta
    assert delta.get("tracebridge.force.accepted") == 1, delta


# ---------------------------------------------------------------------------
# Tokens that do nothing
# ---------------------------------------------------------------------------


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    good = expect.force_token("ops", SECRET, now + 300)
    signed, _, mac = good.rpartition(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    return {
        "expired": expect.force_token("ops", SECRET, now - 5),
        "expiry-zero": expect.force_token("ops", SECRET, 0),
        "unknown-key-id": expect.force_token("dev", SECRET, now + 300),
        "wrong-secret": expect.force_token("ops", "another-secret-0123456789", now + 300),
        "signed-with-the-variable-name": expect.force_token("ops", ENV, now + 300),
        "flipped-mac": f"{signed}.{flipped}",
        "mac-for-another-expiry": f"ops.{now + 301}.{mac}",
        "truncated-mac": good[:-2],
        "mac-too-long": good + "00",
        "non-hex-mac": f"{signed}.{'g' * 64}",
        "no-mac": signed,
        "key-id-only": "ops",
        "non-numeric-expiry": f"ops.soon.{mac}",
        "garbage": "let-me-in",
        "empty": "",
        "mac-of-the-empty-key-id": expect.force_token("", SECRET, now + 300),
    }


BAD_NAMES = list(_bad_tokens())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_invalid_token_does_nothing(edge, name):
    bad = _bad_tokens()[name]
    with edge.counting(ALL_COUNTERS) as delta:
        got = edge.send([(HEADER, bad)])
    expect.fresh_root(got, expect.T_P4[0], "")  # p = 0: not sampled
    assert got.all(HEADER) == [], f"the force header reached the upstream: {got.all(HEADER)}"
    assert delta.get("tracebridge.force.rejected") == 1, delta
    assert "tracebridge.force.accepted" not in delta, delta
    assert "tracebridge.reason.forced" not in delta, delta


def test_the_force_header_never_reaches_the_upstream(edge):
    """Two header lines, different spellings of the name, a valid one among them."""
    fresh_second()
    for headers in (
        [(HEADER, "garbage"), (HEADER, token())],
        [(HEADER, token()), ("X-TRACEBRIDGE-FORCE", "garbage")],
        [("X-TraceBridge-Force", token(expiry_in=-1))],
    ):
        got = edge.send(headers)
        leaked = [(n, v) for n, v in got.pairs if n == HEADER]
        assert not leaked, f"{headers}: the upstream received {leaked}"


# ---------------------------------------------------------------------------
# The per-second limit
# ---------------------------------------------------------------------------


def test_valid_tokens_over_the_limit_are_not_sampled(edge):
    """3 x max_per_second valid tokens in a burst over 3 connections (so that both
    workers may see them): only max_per_second per second are applied."""
    clients = [Proxy(edge.envoy) for _ in range(3)]
    burst = 3 * MAX_PER_SECOND
    try:
        fresh_second()
        with edge.counting(ALL_COUNTERS) as delta:
            start = time.time()
            got = [clients[i % 3].send([(HEADER, token())]) for i in range(burst)]
            end = time.time()
    finally:
        for c in clients:
            c.close()
    seconds = math.floor(end) - math.floor(start) + 1  # Unix seconds the burst touched
    sampled = sum(g.get("x-b3-sampled") == "1" for g in got)
    assert all(g.all(HEADER) == [] for g in got)
    assert MAX_PER_SECOND <= sampled <= MAX_PER_SECOND * seconds, (sampled, seconds)
    if seconds == 1:
        assert sampled == MAX_PER_SECOND
    assert delta.get("tracebridge.force.accepted") == sampled, delta
    assert delta.get("tracebridge.force.over_limit") == burst - sampled, delta
    assert delta.get("tracebridge.reason.forced") == sampled, delta
    # over the limit: the request is decided as without a token (p = 0: not sampled)
    for g in got:
        if g.get("x-b3-sampled") != "1":
            expect.fresh_root(g, expect.T_P4[0], "")


# ---------------------------------------------------------------------------
# The secret must come from the environment
# ---------------------------------------------------------------------------

MISSING = re.compile(r"tracebridge: invalid configuration: sampling\.force\.keys\.ops\.env: \S")


@pytest.mark.parametrize(
    "env, host_env_keys",
    [
        ({ENV: None}, [ENV]),  # listed for the VM, but not set in Envoy's environment
        ({ENV: SECRET}, None),  # set in Envoy's environment, but not passed into the VM
    ],
    ids=["not-set", "not-passed-to-the-vm"],
)
def test_a_missing_environment_variable_refuses_the_configuration(start_envoy, env, host_env_keys):
    envoy = start_envoy(CONFIG, env=env, host_env_keys=host_env_keys)
    with pytest.raises(EnvoyExited) as exc:
        envoy.start()
    assert exc.value.returncode != 0
    lines = [line for line in exc.value.log.splitlines() if MISSING.search(line)]
    assert lines, f"no {MISSING.pattern!r} in the log:\n{envoy.log_tail()}"
    assert any("[error]" in line or "[critical]" in line for line in lines), lines


# ---------------------------------------------------------------------------
# The reason in filter state, for access logs
# ---------------------------------------------------------------------------


def test_the_access_log_shows_each_requests_reason(edge):
    """%FILTER_STATE(wasm.tracebridge.sampling_reason:PLAIN)% is the reason as text;
    :TYPED is a google.protobuf.BytesValue holding the same text."""
    nonce = f"{time.time_ns()}"
    trusted = Proxy(edge.envoy, source_address="127.0.0.2")
    sends = {
        "forced": lambda path: edge.send([(HEADER, token())], path=path),
        "rule": lambda path: edge.send([], path="/checkout" + path),
        "untrusted_restart": lambda path: edge.send(
            [("traceparent", f"00-{TRACE}-{SPAN}-01")], path=path
        ),
        "probability": lambda path: edge.send([], path=path),
        "parent": lambda path: trusted.send([("traceparent", f"00-{TRACE}-{SPAN}-01")], path=path),
    }
    try:
        fresh_second()
        paths = {}
        for reason, send in sends.items():
            paths[reason] = f"/log/{nonce}/{reason}"
            send(paths[reason])
    finally:
        trusted.close()
    deadline = time.monotonic() + 10
    logged: dict[str, tuple[str, str]] = {}
    while len(logged) < len(paths) and time.monotonic() < deadline:
        for line in edge.envoy.access_log_lines():
            path, _, rest = line.partition(" ")
            plain, _, typed = rest.partition(" ")
            for reason, wanted in paths.items():
                if path.endswith(wanted):
                    logged[reason] = (plain, typed)
        time.sleep(0.02)
    assert set(logged) == set(paths), f"logged: {logged}\n{edge.envoy.access_log_lines()[-10:]}"
    for reason, (plain, typed) in logged.items():
        assert plain == reason, f"{paths[reason]}: PLAIN logged {plain!r}, expected {reason!r}"
        value = json.loads(typed)
        assert value["@type"] == "type.googleapis.com/google.protobuf.BytesValue", typed
        assert base64.b64decode(value["value"]).decode() == reason, typed
