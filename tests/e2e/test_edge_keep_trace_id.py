"""A load balancer's trace id kept at an untrusted edge, and force tokens that make
their caller trusted (issue 15; README "Sampling at the edge", "Keeping a load
balancer's trace id").

The chain: client -> edge (`trust_incoming: false`, `keep_trace_id_from: [xray,
cloudtrace]`, p = 0.25, force tokens) -> tap -> mesh (trusted, reads X-Ray first and
then W3C, as a proxy beside Envoy's X-Ray tracer does, p = 0.5) -> echo upstream.
The tap (harness.Tap) records what the edge sent.

Expected values come from the specifications, not from the filter:
* OpenTelemetry "TraceState: Probability Sampling": keep iff R >= T; R is the `rv`
  sub-key when present, else the trace id's low 56 bits; `rv` is exactly 14
  lower-case hex digits; T(0.25) = 0xc0000000000000 (`th:c`), T(0.5) =
  0x80000000000000 (`th:8`), as in expect.T_P4.
* W3C Trace Context Level 2: the random-trace-id flag (0x02) only for an id whose
  low 7 bytes are known to be random, i.e. not for a caller's id.
* The load balancers' header forms: AWS ALB `X-Amzn-Trace-Id: Root=1-<8 hex
  time>-<24 hex>` (no Parent on the first hop), Google's `X-Cloud-Trace-Context:
  TRACE_ID/SPAN_ID;o=OPTIONS`.
Every forged id ends in 14 f's, which the id-as-randomness rule would sample at
every probability; the sampled share is held to a 5-sigma binomial band.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import time
from pathlib import Path

import pytest

import expect
from harness import Client, Envoy, HarnessError, Proxy, Received, Tap, send_in_parallel, through_tap

ALL_COUNTERS = ("tracebridge.",)
THREADS = 8
EDGE_P, MESH_P = 0.25, 0.5
T_EDGE, T_MESH = expect.T_P4[EDGE_P], expect.T_P4[MESH_P]

ENV = "TRACEBRIDGE_FORCE_EDGE"
SECRET = "e2e-keep-trace-id-secret-41c7"  # at least 16 bytes
FORCE_HEADER = "x-tracebridge-force"
MAX_FORCED_PER_SECOND = 3

EDGE_CONFIG = {
    "inject": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace"],
    "sampling": {
        "probability": EDGE_P,
        "trust_incoming": False,
        "keep_trace_id_from": ["xray", "cloudtrace"],
        "force": {
            "header": FORCE_HEADER,
            "keys": {"ops": {"env": ENV}},
            "max_per_second": MAX_FORCED_PER_SECOND,
        },
    },
    # The edge's access log shows the reason.
    "filter_state": {"sampling_reason": True},
}
MESH_CONFIG = {
    "extract": ["xray", "tracecontext", "b3", "b3multi", "cloudtrace"],
    "sampling": {"probability": MESH_P},
}

RV_STATE = re.compile(r"^ot=(?:th:([0-9a-f]{1,14});)?rv:([0-9a-f]{14})$")
REASON_KEY = "wasm.tracebridge.sampling_reason"
ACCESS_LOG = f"%REQ(:PATH)% %FILTER_STATE({REASON_KEY}:PLAIN)%\n"


class Chain:
    """edge -> tap -> mesh -> upstream."""

    def __init__(self, root: Path, upstream_port: int):
        self.envoys: list[Envoy] = []
        self.tap: Tap | None = None
        try:
            self.mesh = self._start(root / "mesh", upstream_port, MESH_CONFIG)
            self.tap = Tap(self.mesh.envoy.listener_port).start()
            self.edge = self._start(
                root / "edge",
                self.tap.port,
                EDGE_CONFIG,
                env={ENV: SECRET},
                host_env_keys=[ENV],
                access_log_format=ACCESS_LOG,
            )
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path, upstream_port: int, config: dict, **kw) -> Proxy:
        text = json.dumps(config)
        envoy = Envoy(workdir, upstream_port=upstream_port, plugin_config=text, **kw)
        self.envoys.append(envoy)
        try:
            envoy.start()
        except HarnessError as e:
            pytest.fail(f"Envoy did not start with plugin configuration {text}: {e}")
        return Proxy(envoy)

    def stop(self) -> None:
        if self.tap is not None:
            self.tap.stop()
        for envoy in self.envoys:
            envoy.stop()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, upstream, wasm, envoy_cmd):
    made = Chain(tmp_path_factory.mktemp("keep-trace-id"), upstream.port)
    yield made
    made.stop()


def through_edge(chain: Chain, requests: list) -> list[tuple[Received, Received]]:
    """(what the mesh received from the edge, what the upstream received from the mesh)."""
    return through_tap(chain.edge.envoy.listener_port, requests, THREADS)


def at_mesh(chain: Chain, requests: list) -> list[Received]:
    """Requests sent to the mesh directly (a trusted caller)."""
    return send_in_parallel(
        chain.mesh.envoy.listener_port, requests, lambda c, h: c.send(h), THREADS
    )


@contextlib.contextmanager
def counting(*proxies: Proxy):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(p.counting(ALL_COUNTERS)) for p in proxies]


# ---------------------------------------------------------------------------
# Load balancers' headers with chosen ids and forged decisions
# ---------------------------------------------------------------------------


def chosen_id(rng: random.Random) -> str:
    """An X-Ray-style id (Unix time first) whose low 56 bits are all ones."""
    return f"{int(time.time()):08x}{rng.getrandbits(40):010x}ffffffffffffff"


def alb(trace: str, extra: str = "") -> list[tuple[str, str]]:
    return [("X-Amzn-Trace-Id", f"Root=1-{trace[:8]}-{trace[8:]}{extra}")]


# name: (format whose id is kept, headers for (id, caller's span))
LOAD_BALANCERS = {
    # an ALB's first hop: Root without Parent
    "alb": ("xray", lambda t, s: alb(t)),
    "alb-forged-sampled": ("xray", lambda t, s: alb(t, ";Sampled=1")),
    # an ALB keeps a caller's Root and puts its Self first (AWS, "Request tracing for your
    # Application Load Balancer"); this caller forged Parent, Sampled and a W3C context of
    # the same id with explicit randomness of its choosing
    "alb-forged-everything": (
        "xray",
        lambda t, s: [
            (
                "X-Amzn-Trace-Id",
                f"Self=1-{t[:8]}-0123456789abcdef01234567;Root=1-{t[:8]}-{t[8:]};"
                f"Parent={s};Sampled=1;CalledFrom=app",
            ),
            ("traceparent", f"00-{t}-{s}-03"),
            ("tracestate", "ot=th:0;rv:ffffffffffffff,evil=forged"),
            ("X-B3-Flags", "1"),
        ],
    ),
    # Google's load balancer: TRACE_ID/SPAN_ID;o=OPTIONS, the client forcing o=1
    "gclb-forced": (
        "cloudtrace",
        lambda t, s: [("X-Cloud-Trace-Context", f"{t}/{int(s, 16)};o=1")],
    ),
    "gclb": ("cloudtrace", lambda t, s: [("X-Cloud-Trace-Context", f"{t}/{int(s, 16)}")]),
}
PER_VARIANT = 120  # 600 load balancer requests
RESTARTS = 60  # and traceparent alone


def assert_adopted(got: Received, trace: str, caller_span: str) -> tuple[str, int, bool]:
    """What the edge sent for a kept id: (span id, rv, sampled), each checked."""
    sent_trace, span, flags = expect.traceparent_parts(got)
    assert sent_trace == trace, f"the load balancer's trace id {trace} was not kept:\n{got}"
    assert span != caller_span and int(span, 16) != 0, f"span {span}: not a new span id\n{got}"
    # the random flag is not claimed for the caller's id; the decision is R = rv >= T
    assert flags in ("00", "01"), f"flags {flags}: only the sampled bit may be set\n{got}"
    states = got.all("tracestate")
    assert len(states) == 1, f"tracestate {states}\n{got}"
    m = RV_STATE.match(states[0])
    assert m, f"tracestate {states[0]!r} is not ot=[th:..;]rv:<14 hex>"
    th, rv_hex = m.groups()
    rv = int(rv_hex, 16)
    sampled = rv >= T_EDGE
    assert flags == ("01" if sampled else "00"), f"rv {rv_hex} at T {T_EDGE:014x}: flags {flags}"
    assert th == (expect.TH_P4[EDGE_P] if sampled else None), f"th {th!r}, sampled={sampled}"
    expect.assert_injected(got, trace, span, sampled, random_flag=False)
    d = "1" if sampled else "0"
    assert got.all("b3") == [f"{trace}-{span}-{d}"], got.all("b3")
    # nothing else of the caller's went on
    assert got.all("x-b3-flags") == [], got
    sent = json.dumps(got.pairs)
    assert "forged" not in sent and "Self=" not in sent and "CalledFrom" not in sent, got
    return span, rv, sampled


def test_load_balancer_trace_ids_are_kept_and_decided_with_fresh_randomness(chain):
    """600 ALB- and GCLB-style headers, ids chosen to be sampled at any probability and
    decisions forged, plus 60 bare traceparents, at p = 0.25.

    Every kept id reaches the mesh in all five formats with a new span id, no random
    flag and `ot=rv:<14 hex>` (with `th:c` when sampled); the decision is rv >= T;
    the sampled share is binomial. The mesh continues each decision byte for byte; a
    traceparent alone restarts the trace.
    """
    rng = random.Random(15015)
    requests, expected = [], []
    for _ in range(PER_VARIANT):
        for name, (fmt, make) in LOAD_BALANCERS.items():
            trace, span = chosen_id(rng), f"{rng.getrandbits(64) | 1:016x}"
            requests.append(make(trace, span))
            expected.append((name, fmt, trace, span))
    for _ in range(RESTARTS):
        trace, span = chosen_id(rng), f"{rng.getrandbits(64) | 1:016x}"
        requests.append([("traceparent", f"00-{trace}-{span}-01")])
        expected.append(("traceparent", None, trace, span))
    n = len(requests)
    adopted_n = PER_VARIANT * len(LOAD_BALANCERS)

    with counting(chain.edge, chain.mesh) as (edge_delta, mesh_delta):
        results = through_edge(chain, requests)

    rvs, sampled_by_variant = set(), dict.fromkeys(LOAD_BALANCERS, 0)
    restarted_sampled = 0
    for (name, fmt, trace, span), (edge_out, mesh_out) in zip(expected, results):
        if fmt is None:
            _, _, sampled = expect.fresh_root(
                edge_out, T_EDGE, expect.TH_P4[EDGE_P], not_trace=[trace]
            )
            restarted_sampled += sampled
        else:
            _, rv, sampled = assert_adopted(edge_out, trace, span)
            rvs.add(rv)
            sampled_by_variant[name] += sampled
        # a trusted mesh continues the edge's decision: every format as the edge wrote it
        assert mesh_out.trace() == edge_out.trace(), (
            f"{name}: the mesh changed the edge's context:\n edge sent {edge_out.trace()}\n"
            f" mesh sent {mesh_out.trace()}"
        )
    assert len(rvs) == adopted_n, "the edge reused an rv"
    sampled = sum(sampled_by_variant.values())
    lo, hi = expect.binomial_band(EDGE_P, adopted_n)
    assert lo <= sampled <= hi, (
        f"{sampled} of {adopted_n} kept ids sampled at p={EDGE_P}: outside "
        f"[{lo:.0f}, {hi:.0f}]; by variant {sampled_by_variant}"
    )
    # no single forgery works: one that did would sample all of its 120 requests
    lo1, hi1 = expect.binomial_band(EDGE_P, PER_VARIANT)
    assert all(lo1 <= k <= hi1 for k in sampled_by_variant.values()), sampled_by_variant

    assert edge_delta.get("tracebridge.reason.adopted_trace_id") == adopted_n, edge_delta
    assert edge_delta.get("tracebridge.reason.untrusted_restart") == RESTARTS, edge_delta
    assert edge_delta.get("tracebridge.untrusted") == n, edge_delta
    assert edge_delta.get("tracebridge.extracted.xray") == 3 * PER_VARIANT, edge_delta
    assert edge_delta.get("tracebridge.extracted.cloudtrace") == 2 * PER_VARIANT, edge_delta
    assert edge_delta.get("tracebridge.decision.sampled", 0) == sampled + restarted_sampled
    assert edge_delta.get("tracebridge.trace_started") == RESTARTS, edge_delta
    assert "tracebridge.reason.parent" not in edge_delta, edge_delta
    assert mesh_delta.get("tracebridge.reason.parent") == n, mesh_delta
    assert not [k for k in mesh_delta if k.startswith("tracebridge.decision.")], mesh_delta

    # The same contexts at the mesh without X-Ray's decision (something between the hops
    # dropped Sampled), the edge's traceparent and tracestate beside: R is the edge's rv.
    # The edge's sampled ones are reproduced by their th; the others are decided at the
    # mesh's p = 0.5, so the mesh samples a superset, and exactly rv >= T(0.5).
    kept = [
        (trace, edge_out)
        for (_, fmt, trace, _), (edge_out, _) in zip(expected, results)
        if fmt is not None
    ]
    deferred = []
    for trace, edge_out in kept:
        _, span, _ = expect.traceparent_parts(edge_out)
        deferred.append(
            alb(trace, f";Parent={span}")
            + [("traceparent", edge_out.get("traceparent")), ("tracestate", edge_out.get("tracestate"))]
        )
    with counting(chain.mesh) as (redecided,):
        again = at_mesh(chain, deferred)
    edge_sampled = superset = 0
    for (trace, edge_out), got in zip(kept, again):
        rv = int(RV_STATE.match(edge_out.get("tracestate")).group(2), 16)
        was = edge_out.get("x-b3-sampled") == "1"
        now = got.get("x-b3-sampled") == "1"
        assert now == (rv >= T_MESH), f"{trace}: rv {rv:014x}, sampled {now} at p={MESH_P}"
        assert now or not was, f"{trace}: sampled at p={EDGE_P} but not at p={MESH_P}"
        assert f"rv:{rv:014x}" in got.get("tracestate"), got
        edge_sampled += was
        superset += now
    lo, hi = expect.binomial_band(MESH_P, adopted_n)
    assert lo <= superset <= hi and superset > edge_sampled, (superset, edge_sampled)
    assert redecided.get("tracebridge.reason.parent") == edge_sampled, redecided
    assert redecided.get("tracebridge.reason.probability") == adopted_n - edge_sampled, redecided

    # A hop that reads only X-Ray has no rv: it falls back to the id's low 56 bits, which
    # the caller chose (README: keep tracecontext in extract and inject on every hop).
    xray_only = at_mesh(chain, [alb(trace, ";Parent=00f067aa0ba902b7") for trace, _ in kept[:20]])
    assert all(got.get("x-b3-sampled") == "1" for got in xray_only), xray_only[:2]


def test_the_access_log_shows_adopted_trace_id(chain):
    """The reason is in Envoy filter state too (README "Seeing why"), for access logs."""
    path = f"/adopted/{time.time_ns()}"
    client = Client("127.0.0.1", chain.edge.envoy.listener_port)
    try:
        status, body = client.request_raw(alb(chosen_id(random.Random(7))), path=path)
    finally:
        client.close()
    assert status == 200, body[:300]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = [line for line in chain.edge.envoy.access_log_lines() if line.startswith(path)]
        if logged:
            assert logged == [f"{path} adopted_trace_id"], logged
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} not logged: {chain.edge.envoy.access_log_lines()[-5:]}")


# ---------------------------------------------------------------------------
# Force tokens at the untrusted edge
# ---------------------------------------------------------------------------

TRACE = "4bf92f3577b34da60000000000000001"  # R = 1: not sampled by any p < 1
SPAN = "00f067aa0ba902b7"


def token(expiry_in: int = 300, *, secret: str = SECRET) -> str:
    return expect.force_token("ops", secret, int(time.time()) + expiry_in)


def fresh_second() -> None:
    """Sleep until just after the next whole Unix second (the force budget's window)."""
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)


def test_a_valid_token_continues_the_callers_trace_and_span(chain):
    fresh_second()
    with counting(chain.edge) as (delta,):
        (edge_out, mesh_out), (alb_out, _) = through_edge(
            chain,
            [
                [("traceparent", f"00-{TRACE}-{SPAN}-00"), (FORCE_HEADER, token())],
                alb(TRACE) + [(FORCE_HEADER, token())],
            ],
        )
    # the caller's trace id and span id, sampled with th:0 (README, "Forcing a trace")
    expect.assert_injected(edge_out, TRACE, SPAN, True, random_flag=False)
    assert edge_out.all("tracestate") == ["ot=th:0"], edge_out
    assert mesh_out.trace() == edge_out.trace()
    # an ALB Root and a token: a trusted caller's context without span id, so a new span
    span = expect.generated_span(alb_out, TRACE, True)
    assert alb_out.all("tracestate") == ["ot=th:0"], alb_out
    for got in (edge_out, alb_out):
        assert got.all(FORCE_HEADER) == [], got
    assert delta.get("tracebridge.force.accepted") == 2, delta
    assert delta.get("tracebridge.reason.forced") == 2, delta
    assert delta.get("tracebridge.span_generated") == 1, delta
    assert "tracebridge.untrusted" not in delta, delta


@pytest.mark.parametrize("bad", ["wrongly-signed", "expired"])
def test_an_invalid_token_leaves_the_caller_untrusted(chain, bad):
    forged = {
        "wrongly-signed": token(secret="another-secret-0123456789"),
        "expired": token(expiry_in=-5),
    }[bad]
    with counting(chain.edge) as (delta,):
        [(w3c_out, _), (alb_out, _)] = through_edge(
            chain,
            [
                [("traceparent", f"00-{TRACE}-{SPAN}-01"), (FORCE_HEADER, forged)],
                alb(TRACE) + [(FORCE_HEADER, forged)],
            ],
        )
    expect.fresh_root(w3c_out, T_EDGE, expect.TH_P4[EDGE_P], not_trace=[TRACE])
    # the ALB's id is kept as from any untrusted caller, decided by fresh rv
    assert_adopted(alb_out, TRACE, "")
    assert delta.get("tracebridge.force.rejected") == 2, delta
    assert delta.get("tracebridge.untrusted") == 2, delta
    assert "tracebridge.reason.forced" not in delta, delta
    assert "tracebridge.force.accepted" not in delta, delta


def test_valid_tokens_over_the_limit_leave_the_caller_untrusted(chain):
    """3 x max_per_second valid tokens with the caller's traceparent in a burst: only
    max_per_second per second continue the caller's trace; the rest restart."""
    burst = 3 * MAX_FORCED_PER_SECOND
    requests = [
        [("traceparent", f"00-{TRACE[:-4]}{i:04x}-{SPAN}-00"), (FORCE_HEADER, token())]
        for i in range(1, burst + 1)
    ]
    fresh_second()
    with counting(chain.edge) as (delta,):
        start = time.time()
        results = [edge_out for edge_out, _ in through_edge(chain, requests)]
        end = time.time()
    seconds = math.floor(end) - math.floor(start) + 1
    continued = 0
    for request, got in zip(requests, results):
        caller_trace = request[0][1].split("-")[1]
        if got.get("traceparent") == f"00-{caller_trace}-{SPAN}-01":
            assert got.all("tracestate") == ["ot=th:0"], got
            continued += 1
        else:
            expect.fresh_root(got, T_EDGE, expect.TH_P4[EDGE_P], not_trace=[caller_trace])
        assert got.all(FORCE_HEADER) == [], got
    assert MAX_FORCED_PER_SECOND <= continued <= MAX_FORCED_PER_SECOND * seconds, (
        continued,
        seconds,
    )
    if seconds == 1:
        assert continued == MAX_FORCED_PER_SECOND
    assert delta.get("tracebridge.force.accepted") == continued, delta
    assert delta.get("tracebridge.force.over_limit") == burst - continued, delta
    assert delta.get("tracebridge.untrusted") == burst - continued, delta
    assert delta.get("tracebridge.reason.untrusted_restart") == burst - continued, delta
