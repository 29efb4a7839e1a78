"""Sampling at the edge, proven with real Envoys (README "Sampling at the edge").

The chain: client -> edge (`trust_incoming: false`) -> tap -> mesh (default trust)
-> echo upstream, plus a second mesh proxy with the same configuration in front
of the upstream, reached directly. The tap (harness.Tap) records what the edge
sent, so every request shows what left the edge and what left the mesh.

Decisions are checked against the formula R >= T (R the low 56 bits of the trace
id) with the thresholds worked out by hand in expect.T_P4 / expect.TH_P4, and
sampled fractions against a 5-sigma binomial band. Random inputs use fixed seeds;
the edge makes its own random trace ids, which only the 5-sigma bands see.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import uuid
from pathlib import Path

import pytest

import expect
from harness import Envoy, HarnessError, Proxy, Received, Tap, send_in_parallel, through_tap

MASK56 = expect.MASK56
ALL_COUNTERS = ("tracebridge.",)
THREADS = 8


def plugin_config(p: float, *, trust: bool = True) -> str:
    sampling: dict = {"probability": p}
    if not trust:
        sampling["trust_incoming"] = False
    return json.dumps({"sampling": sampling})


class Chain:
    """edge -> tap -> mesh -> upstream, and a directly reached mesh, all at probability p."""

    def __init__(self, root: Path, upstream_port: int, p: float):
        self.p = p
        self.envoys: list[Envoy] = []
        self.tap: Tap | None = None
        try:
            self.mesh = self._start(root / "mesh", upstream_port, plugin_config(p))
            self.tap = Tap(self.mesh.envoy.listener_port).start()
            self.edge = self._start(root / "edge", self.tap.port, plugin_config(p, trust=False))
            self.direct = self._start(root / "direct", upstream_port, plugin_config(p))
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path, upstream_port: int, config: str) -> Proxy:
        envoy = Envoy(workdir, upstream_port=upstream_port, plugin_config=config)
        self.envoys.append(envoy)
        try:
            envoy.start()
        except HarnessError as e:
            pytest.fail(f"Envoy did not start with plugin configuration {config!r}: {e}")
        return Proxy(envoy)

    def stop(self) -> None:
        if self.tap is not None:
            self.tap.stop()
        for envoy in self.envoys:
            envoy.stop()


@pytest.fixture(scope="module")
def chains(tmp_path_factory, upstream, wasm, envoy_cmd):
    made: dict[float, Chain] = {}

    def get(p: float) -> Chain:
        if p not in made:
            made[p] = Chain(tmp_path_factory.mktemp(f"chain-{p}"), upstream.port, p)
        return made[p]

    yield get
    for chain in made.values():
        chain.stop()


def through_edge(chain: Chain, requests: list) -> list[tuple[Received, Received]]:
    """(what the mesh received from the edge, what the upstream received from the mesh)."""
    return through_tap(chain.edge.envoy.listener_port, requests, THREADS)


def direct(proxy: Proxy, requests: list) -> list[Received]:
    return send_in_parallel(
        proxy.envoy.listener_port, requests, lambda client, h: client.send(h), THREADS
    )


@contextlib.contextmanager
def counting(*proxies: Proxy):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(p.counting(ALL_COUNTERS)) for p in proxies]


def _b3multi_of(trace: str, span: str) -> list[tuple[str, str]]:
    """A B3 multi context without a decision."""
    return [("X-B3-TraceId", trace), ("X-B3-SpanId", span)]


def random_context(rng: random.Random) -> tuple[str, str]:
    return f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64) | 1:016x}"


# ---------------------------------------------------------------------------
# One decision per trace id, at every proxy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p, seed", [(0.1, 20251), (0.5, 20252)])
def test_every_proxy_gives_a_trace_id_the_same_decision(chains, p, seed):
    """2000 requests with random (untrusted) trace ids to the edge at probability p.

    The edge restarts each trace with a new id X and decides D = R(X) >= T; the
    mesh continues D byte for byte; a second mesh proxy that gets X without a
    decision decides D again.
    """
    n = 2000
    t, th = expect.T_P4[p], expect.TH_P4[p]
    chain = chains(p)
    rng = random.Random(seed)
    requests, incoming = [], []
    for _ in range(n):
        trace, span = random_context(rng)
        incoming.append(trace)
        requests.append([("traceparent", f"00-{trace}-{span}-{rng.choice(['00', '01'])}")])

    with counting(chain.edge, chain.mesh) as (edge_delta, mesh_delta):
        results = through_edge(chain, requests)

    roots = []
    for sent, (at_mesh, at_upstream) in zip(incoming, results):
        x, s, d = expect.fresh_root(at_mesh, t, th, not_trace=[sent])
        # the mesh continues the edge's context: every format exactly as the edge wrote it
        assert at_upstream.trace() == at_mesh.trace(), (
            f"the mesh changed the edge's context:\n edge sent {at_mesh.trace()}\n"
            f" mesh sent {at_upstream.trace()}"
        )
        roots.append((x, s, d))
    assert len({x for x, _, _ in roots}) == n, "the edge reused a trace id"
    sampled = sum(d for _, _, d in roots)
    lo, hi = expect.binomial_band(p, n)
    assert lo <= sampled <= hi, f"{sampled} of {n} sampled at p={p}: outside [{lo:.0f}, {hi:.0f}]"

    assert edge_delta.get("tracebridge.reason.untrusted_restart") == n, edge_delta
    assert edge_delta.get("tracebridge.untrusted") == n, edge_delta
    assert edge_delta.get("tracebridge.decision.sampled", 0) == sampled, edge_delta
    assert edge_delta.get("tracebridge.decision.not_sampled", 0) == n - sampled, edge_delta
    # the mesh made no decision of its own: every request continued its parent
    assert mesh_delta.get("tracebridge.reason.parent") == n, mesh_delta
    assert mesh_delta.get("tracebridge.extracted.tracecontext") == n, mesh_delta
    assert not [k for k in mesh_delta if k.startswith("tracebridge.decision.")], mesh_delta
    assert "tracebridge.trace_started" not in mesh_delta, mesh_delta

    # X alone (B3 multi without X-B3-Sampled) at another mesh proxy: the same decision.
    with counting(chain.direct) as (direct_delta,):
        again = direct(chain.direct, [_b3multi_of(x, s) for x, s, _ in roots])
    for (x, s, d), got in zip(roots, again):
        expect.assert_injected(got, x, s, d, random_flag=False)
        assert got.all("tracestate") == ([f"ot=th:{th}"] if d else []), (x, got)
    assert direct_delta.get("tracebridge.decision.sampled", 0) == sampled, direct_delta
    assert direct_delta.get("tracebridge.decision.not_sampled", 0) == n - sampled, direct_delta
    assert direct_delta.get("tracebridge.reason.probability") == n, direct_delta


def test_a_higher_probability_samples_a_superset(chains):
    """The same 1000 trace ids (no decision) at p = 0.1 and at p = 0.5."""
    low, high = chains(0.1).direct, chains(0.5).direct
    rng = random.Random(31337)
    contexts = [random_context(rng) for _ in range(1000)]
    # and R at the thresholds: T(0.1) (sampled), T(0.1) - 1 (only at 0.5), the full-precision
    # T(0.1) - 1 = 0xe6666666666665 (sampled: precision 4 rounds T down to 0xe6660000000000),
    # T(0.5) (only at 0.5), T(0.5) - 1 (neither)
    for r in (0xE6660000000000, 0xE665FFFFFFFFFF, 0xE6666666666665, 0x80000000000000,
              0x7FFFFFFFFFFFFF):  # fmt: skip
        contexts.append((f"5eed00000000000000{r:014x}", "00f067aa0ba902b7"))
    requests = [_b3multi_of(x, s) for x, s in contexts]

    decided = {}
    for p, proxy in ((0.1, low), (0.5, high)):
        got = direct(proxy, requests)
        decided[p] = {x for (x, _), g in zip(contexts, got) if g.get("x-b3-sampled") == "1"}
        want = {x for x, _ in contexts if expect.sampled_at(x, expect.T_P4[p])}
        assert decided[p] == want, (
            f"p={p}: sampled but not by the formula: {sorted(decided[p] - want)[:5]}; "
            f"by the formula but not sampled: {sorted(want - decided[p])[:5]}"
        )
    assert decided[0.1] <= decided[0.5], sorted(decided[0.1] - decided[0.5])[:5]
    # neither set is trivial, and 0.5 samples strictly more
    assert 0 < len(decided[0.1]) < len(decided[0.5]) < len(contexts)
    edge_ids = [x for x, _ in contexts[-5:]]
    assert [x in decided[0.1] for x in edge_ids] == [True, False, True, False, False]
    assert [x in decided[0.5] for x in edge_ids] == [True, True, True, True, False]


# ---------------------------------------------------------------------------
# Forged decisions at the untrusted edge
# ---------------------------------------------------------------------------


def _forged_id(rng: random.Random) -> str:
    """A trace id whose low 56 bits are all ones: sampled at every probability."""
    return f"{rng.getrandbits(72):018x}ffffffffffffff"


def _grpc_trace_bin(trace: str, span: str, options: int) -> str:
    # OpenCensus binary format: version 0; field 0 trace id, field 1 span id, field 2 options
    raw = b"\x00\x00" + bytes.fromhex(trace) + b"\x01" + bytes.fromhex(span) + bytes([2, options])
    return base64.b64encode(raw).decode().rstrip("=")


FORGERIES = {
    "traceparent-01": lambda f, s: [("traceparent", f"00-{f}-{s}-01")],
    "traceparent-03-tracestate-th0": lambda f, s: [
        ("traceparent", f"00-{f}-{s}-03"),
        ("tracestate", "ot=th:0;rv:ffffffffffffff,evil=forged"),
    ],
    "x-b3-sampled": lambda f, s: [("X-B3-TraceId", f), ("X-B3-SpanId", s), ("X-B3-Sampled", "1")],
    "x-b3-flags": lambda f, s: [("X-B3-TraceId", f), ("X-B3-SpanId", s), ("X-B3-Flags", "1")],
    "x-b3-sampled-only": lambda f, s: [("X-B3-Sampled", "1")],
    "x-b3-flags-only": lambda f, s: [("X-B3-Flags", "1")],
    "b3-d": lambda f, s: [("b3", f"{f}-{s}-d")],
    "b3-1": lambda f, s: [("b3", f"{f}-{s}-1")],
    "b3-sampling-only": lambda f, s: [("b3", "1")],
    "b3-debug-only": lambda f, s: [("b3", "d")],
    "xray": lambda f, s: [("X-Amzn-Trace-Id", f"Root=1-{f[:8]}-{f[8:]};Parent={s};Sampled=1")],
    "cloudtrace": lambda f, s: [("X-Cloud-Trace-Context", f"{f}/{int(s, 16)};o=1")],
    "jaeger": lambda f, s: [("uber-trace-id", f"{f}:{s}:0:3")],
    "jaeger-debug-id": lambda f, s: [("jaeger-debug-id", "forged-debug")],
    "datadog": lambda f, s: [
        ("x-datadog-trace-id", str(int(f[16:], 16))),
        ("x-datadog-parent-id", str(int(s, 16))),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-tags", f"_dd.p.tid={f[:16]}"),
    ],
    "grpc-trace-bin": lambda f, s: [("grpc-trace-bin", _grpc_trace_bin(f, s, 1))],
    "x-client-trace-id": lambda f, s: [("x-client-trace-id", str(uuid.UUID(f)))],
}
FORGERIES["everything"] = lambda f, s: [
    h for name, make in FORGERIES.items() if name != "everything" for h in make(f, s)
]

# Headers an untrusted caller must not get past the edge: formats that are not
# injected, B3 flags and parents, Envoy's x-client-trace-id.
MUST_NOT_PASS = {
    "b3",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-client-trace-id",
    "uber-trace-id",
    "jaeger-debug-id",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "x-datadog-origin",
    "grpc-trace-bin",
}


def _assert_nothing_forged(got: Received, forged: str, where: str) -> None:
    leaked = sorted({n for n, _ in got.pairs if n in MUST_NOT_PASS})
    assert not leaked, f"{where} received the caller's {leaked}:\n{got}"
    # no header carries the forged id (traceparent, B3, X-Ray and Cloud Trace forms all
    # contain its last 24 hex digits)
    tail = forged[-24:]
    carrying = [(n, v) for n, v in got.pairs if tail in v.lower()]
    assert not carrying, f"{where} received the forged trace id {forged}: {carrying}"


def test_forged_decisions_do_not_raise_the_sampled_fraction(chains):
    """1020 requests at p = 0.1, each with forged sampled flags in some or every format
    and a trace id ending in ffffffffffffff."""
    p, per_variant = 0.1, 60
    t, th = expect.T_P4[p], expect.TH_P4[p]
    chain = chains(p)
    rng = random.Random(4242)
    variants, forged, requests = [], [], []
    for _ in range(per_variant):
        for name, make in FORGERIES.items():
            f, s = _forged_id(rng), f"{rng.getrandbits(64) | 1:016x}"
            variants.append(name)
            forged.append(f)
            requests.append(make(f, s))
    n = len(requests)
    assert n >= 1000

    with counting(chain.edge) as (edge_delta,):
        results = through_edge(chain, requests)

    sampled_by_variant = dict.fromkeys(FORGERIES, 0)
    for name, f, (at_mesh, at_upstream) in zip(variants, forged, results):
        x, _, d = expect.fresh_root(at_mesh, t, th, not_trace=[f])
        assert int(x, 16) & MASK56 != int(f, 16) & MASK56, (name, x, f)
        _assert_nothing_forged(at_mesh, f, f"{name}: the mesh (behind the edge)")
        _assert_nothing_forged(at_upstream, f, f"{name}: the upstream")
        assert at_upstream.trace() == at_mesh.trace(), name
        sampled_by_variant[name] += d

    sampled = sum(sampled_by_variant.values())
    lo, hi = expect.binomial_band(p, n)
    assert lo <= sampled <= hi, f"{sampled} of {n} sampled at p={p}: {sampled_by_variant}"
    # no single forgery works either: one that did would sample all of its requests;
    # half of them is far out of reach of chance at p = 0.1 (P < 1e-11 per variant)
    assert all(k <= per_variant // 2 for k in sampled_by_variant.values()), (
        f"a forgery raised the sampled fraction: {sampled_by_variant}"
    )
    assert edge_delta.get("tracebridge.untrusted") == n, edge_delta
    assert edge_delta.get("tracebridge.decision.sampled", 0) == sampled, edge_delta
    assert edge_delta.get("tracebridge.decision.not_sampled", 0) == n - sampled, edge_delta
    assert "tracebridge.reason.parent" not in edge_delta, edge_delta
    # every request that carried a trace format restarted; x-client-trace-id is no format
    restarts = edge_delta.get("tracebridge.reason.untrusted_restart", 0)
    assert restarts + edge_delta.get("tracebridge.reason.probability", 0) == n, edge_delta
    assert restarts >= n - per_variant, edge_delta


# ---------------------------------------------------------------------------
# A trusted hop keeps the parent's decision
# ---------------------------------------------------------------------------

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
LOW_TRACE = "4bf92f3577b34da60000000000000001"  # R = 1: not sampled by any p < 1
HIGH_TRACE = "4bf92f3577b34da6ffffffffffffffff"  # R = 2^56 - 1: sampled by any p > 0

def _parent_b3multi(trace: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN), *extra]


def _xray(trace: str, sampled: str) -> list[tuple[str, str]]:
    return [("X-Amzn-Trace-Id", f"Root=1-{trace[:8]}-{trace[8:]};Parent={SPAN};Sampled={sampled}")]


def _cloud(trace: str, o: str) -> list[tuple[str, str]]:
    return [("X-Cloud-Trace-Context", f"{trace}/{int(SPAN, 16)};o={o}")]


# The parent's decision, and the mesh probability that would decide the other way:
# "not sampled" at p = 1 (trace HIGH_TRACE), "sampled" at p = 0 (trace LOW_TRACE).
# name: (p, headers, sampled, debug)
PARENT_DECISIONS = {
    "traceparent-00-at-p1": (1, [("traceparent", f"00-{HIGH_TRACE}-{SPAN}-00")], False, False),
    "traceparent-01-at-p0": (0, [("traceparent", f"00-{LOW_TRACE}-{SPAN}-01")], True, False),
    "x-b3-sampled-0-at-p1": (1, _parent_b3multi(HIGH_TRACE, ("X-B3-Sampled", "0")), False, False),
    "x-b3-sampled-1-at-p0": (0, _parent_b3multi(LOW_TRACE, ("X-B3-Sampled", "1")), True, False),
    "x-b3-flags-1-at-p0": (0, _parent_b3multi(LOW_TRACE, ("X-B3-Flags", "1")), True, True),
    "b3-0-at-p1": (1, [("b3", f"{HIGH_TRACE}-{SPAN}-0")], False, False),
    "b3-1-at-p0": (0, [("b3", f"{LOW_TRACE}-{SPAN}-1")], True, False),
    "b3-d-at-p0": (0, [("b3", f"{LOW_TRACE}-{SPAN}-d")], True, True),
    "xray-0-at-p1": (1, _xray(HIGH_TRACE, "0"), False, False),
    "xray-1-at-p0": (0, _xray(LOW_TRACE, "1"), True, False),
    "cloudtrace-0-at-p1": (1, _cloud(HIGH_TRACE, "0"), False, False),
    "cloudtrace-1-at-p0": (0, _cloud(LOW_TRACE, "1"), True, False),
}


@pytest.mark.parametrize(
    "p, headers, sampled, debug", PARENT_DECISIONS.values(), ids=PARENT_DECISIONS.keys()
)
def test_a_trusted_hop_keeps_the_parents_decision(proxies, p, headers, sampled, debug):
    trace = LOW_TRACE if sampled else HIGH_TRACE
    # the mesh's own probability would decide otherwise
    assert expect.sampled_at(trace, expect.T_P4[p]) != sampled
    mesh = proxies({"sampling": {"probability": p}})
    with mesh.counting(ALL_COUNTERS) as delta:
        got = mesh.send(headers)
    expect.assert_injected(got, trace, SPAN, sampled, random_flag=False, debug=debug)
    assert got.all("tracestate") == [], got  # the caller sent no th; the mesh adds none
    assert delta.get("tracebridge.reason.parent") == 1, delta
    assert not [k for k in delta if k.startswith("tracebridge.decision.")], delta
