"""Edge sampling policy in a real Envoy: trusted sources, per-route rules, and the
OpenTelemetry threshold `th` in tracestate (README "Configuration reference" and
"Sampling at the edge").

Expected values are worked out by hand: thresholds in expect.T_P4 / expect.TH_P4,
decisions by R >= T with R the low 56 bits of the trace id (or `rv`).
"""

from __future__ import annotations

import pytest

import expect
from harness import Proxy

ALL_COUNTERS = ("tracebridge.",)
SPAN = "00f067aa0ba902b7"
CLOUD_SPAN = str(int(SPAN, 16))


def reasons(delta: dict[str, int]) -> dict[str, int]:
    prefix = "tracebridge.reason."
    return {k[len(prefix) :]: v for k, v in delta.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------
# trusted_sources
# ---------------------------------------------------------------------------

PARENT_TRACE = "4bf92f3577b34da60000000000000001"  # R = 1: sampled only at p = 1
PARENT = [
    ("traceparent", f"00-{PARENT_TRACE}-{SPAN}-01"),
    ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("x-client-trace-id", "0ab1f3c2-79e0-4c4e-9f6b-0b3a53ee4d1c"),
]


def untrusted_edge(cidrs: list[str]) -> dict:
    return {
        "sampling": {
            "probability": 0,
            "trust_incoming": False,
            "trusted_sources": {"cidrs": cidrs},
        }
    }


def test_a_trusted_source_is_continued(proxies):
    """trust_incoming false, but 127.0.0.0/8 (the test client, 127.0.0.1) is trusted:
    its sampled context is continued at p = 0, tracestate unchanged."""
    proxy = proxies(untrusted_edge(["127.0.0.0/8"]))
    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send(PARENT)
    expect.assert_injected(got, PARENT_TRACE, SPAN, True, random_flag=False)
    assert got.all("traceparent") == [f"00-{PARENT_TRACE}-{SPAN}-01"]
    assert got.all("tracestate") == ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
    assert reasons(delta) == {"parent": 1}, delta
    assert "tracebridge.untrusted" not in delta, delta


def test_trust_is_decided_per_caller_address(proxies):
    """trust_incoming false and only 127.0.0.2 trusted: the same request is continued
    from 127.0.0.2, and from 127.0.0.1 (outside the CIDR) restarted as a new trace
    decided at p = 0, without the caller's tracestate and x-client-trace-id."""
    proxy = proxies(untrusted_edge(["127.0.0.2/32"]))
    from_trusted = Proxy(proxy.envoy, source_address="127.0.0.2")
    try:
        with proxy.counting(ALL_COUNTERS) as delta:
            got = from_trusted.send(PARENT)
        expect.assert_injected(got, PARENT_TRACE, SPAN, True, random_flag=False)
        assert got.all("tracestate") == ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
        assert reasons(delta) == {"parent": 1}, delta
        assert "tracebridge.untrusted" not in delta, delta
    finally:
        from_trusted.close()

    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send(PARENT)  # from 127.0.0.1
    expect.fresh_root(got, expect.T_P4[0], "", not_trace=[PARENT_TRACE])
    assert got.all("tracestate") == []
    assert got.all("x-client-trace-id") == []
    assert reasons(delta) == {"untrusted_restart": 1}, delta
    assert delta.get("tracebridge.untrusted") == 1, delta


# ---------------------------------------------------------------------------
# sampling.rules
# ---------------------------------------------------------------------------

RULES = {
    "sampling": {
        "probability": 0,
        "rules": [
            {"match": {"path_prefix": "/checkout/free"}, "probability": 0},
            {"match": {"path_prefix": "/checkout"}, "probability": 1},
            {"match": {"header": {"name": "X-Load-Test", "value": "yes"}}, "probability": 1},
            {"match": {"header": {"name": "x-debug-route"}}, "probability": 1},
            {"match": {"authority": "api.example.com", "method": "POST"}, "probability": 1},
            {"match": {"authority": "*.internal.example"}, "probability": 1},
        ],
    }
}

# (method, path, authority, extra headers, sampled, reason)
RULE_CASES = {
    "path-prefix": ("GET", "/checkout", None, [], True, "rule"),
    "path-prefix-longer": ("GET", "/checkout/cart?id=7", None, [], True, "rule"),
    "first-rule-wins": ("GET", "/checkout/free/x", None, [], False, "rule"),
    "path-not-a-prefix": ("GET", "/check", None, [], False, "probability"),
    "path-elsewhere": ("GET", "/api/checkout", None, [], False, "probability"),
    "header-value": ("GET", "/", None, [("x-load-test", "yes")], True, "rule"),
    "header-other-value": ("GET", "/", None, [("x-load-test", "no")], False, "probability"),
    "header-presence": ("GET", "/", None, [("X-Debug-Route", "")], True, "rule"),
    "header-presence-any-value": ("GET", "/", None, [("x-debug-route", "1")], True, "rule"),
    "authority-and-method": ("POST", "/", "api.example.com", [], True, "rule"),
    "authority-case-and-port": ("POST", "/", "API.Example.com:8443", [], True, "rule"),
    "authority-wrong-method": ("GET", "/", "api.example.com", [], False, "probability"),
    "authority-other-host": ("POST", "/", "www.example.com", [], False, "probability"),
    "authority-wildcard": ("GET", "/", "a.b.internal.example", [], True, "rule"),
    "authority-wildcard-not-apex": ("GET", "/", "internal.example", [], False, "probability"),
    "nothing": ("GET", "/", None, [], False, "probability"),
}


@pytest.mark.parametrize(
    "method, path, authority, headers, sampled, reason",
    RULE_CASES.values(),
    ids=RULE_CASES.keys(),
)
def test_rules_set_the_probability_of_root_decisions(
    proxies, method, path, authority, headers, sampled, reason
):
    proxy = proxies(RULES)
    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send(headers, method=method, path=path, authority=authority)
    # every rule here is p = 1 (T = 0, th "0") or p = 0 (never)
    t, th = (expect.T_P4[1], "0") if sampled else (expect.T_P4[0], "")
    expect.fresh_root(got, t, th)
    assert reasons(delta) == {reason: 1}, delta
    decision = "sampled" if sampled else "not_sampled"
    assert delta.get(f"tracebridge.decision.{decision}") == 1, delta


def test_rules_decide_a_context_without_decision_but_not_a_parents_decision(proxies):
    proxy = proxies(RULES)
    trace = "4bf92f3577b34da60000000000000001"
    with proxy.counting(ALL_COUNTERS) as delta:
        # no decision: the rule's p = 1 decides
        got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN)], path="/checkout")
        expect.assert_injected(got, trace, SPAN, True, random_flag=False)
        assert got.all("tracestate") == ["ot=th:0"]
        # the parent said no: kept, whatever the rule says
        got = proxy.send(
            [("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "0")],
            path="/checkout",
        )
        expect.assert_injected(got, trace, SPAN, False, random_flag=False)
        # no rule matches: the default p = 0
        got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN)], path="/")
        expect.assert_injected(got, trace, SPAN, False, random_flag=False)
    assert reasons(delta) == {"rule": 1, "parent": 1, "probability": 1}, delta


# ---------------------------------------------------------------------------
# tracestate: th written by a root, kept or erased on a continuation
# ---------------------------------------------------------------------------


def trace_with_r(r: int) -> str:
    return f"a1b2c3d4e5f6071829{r:014x}"


def normalized(tracestate: list[str]) -> list[list[str]]:
    """tracestate lines as lists of members, the `ot` entry's sub-keys sorted (their
    order within `ot` is not specified; the order of members is)."""
    out = []
    for line in tracestate:
        members = []
        for member in line.split(","):
            key, _, value = member.strip().partition("=")
            if key == "ot":
                value = ";".join(sorted(value.split(";")))
            members.append(f"{key}={value}")
        out.append(members)
    return out


@pytest.mark.parametrize(
    "p, r, th",
    [
        (0.5, 0xC0000000000000, "8"),
        (0.5, 0x80000000000000, "8"),  # R = T samples
        (1, 0x00000000000000, "0"),
        (0.01, 0xFFFFFFFFFFFFFF, "fd70a"),
        # T rounded to 4 digits: 0xfd70a000000000 samples although it is below the
        # full-precision T = 0xfd70a3d70a3d71
        (0.01, 0xFD70A000000000, "fd70a"),
    ],
)
def test_a_sampled_root_writes_its_threshold(proxies, p, r, th):
    trace = trace_with_r(r)
    assert expect.sampled_at(trace, expect.T_P4[p]) and expect.TH_P4[p] == th
    proxy = proxies({"sampling": {"probability": p}})
    got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN)])
    expect.assert_injected(got, trace, SPAN, True, random_flag=False)
    assert got.all("tracestate") == [f"ot=th:{th}"]


@pytest.mark.parametrize(
    "p, r",
    [(0.5, 0x7FFFFFFFFFFFFF), (0.01, 0xFD709FFFFFFFFF)],
)
def test_a_negative_root_decision_writes_no_threshold(proxies, p, r):
    trace = trace_with_r(r)
    assert not expect.sampled_at(trace, expect.T_P4[p])
    proxy = proxies({"sampling": {"probability": p}})
    got = proxy.send([("X-B3-TraceId", trace), ("X-B3-SpanId", SPAN)])
    expect.assert_injected(got, trace, SPAN, False, random_flag=False)
    assert got.all("tracestate") == []


# B3 first: a B3 context without decision, with the traceparent and tracestate of the
# same trace behind it, gets a root decision that has the caller's tracestate to update.
B3_FIRST = {"extract": ["b3multi", "tracecontext"], "sampling": {"probability": 0.5}}
OTHERS = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


@pytest.mark.parametrize(
    "r, tracestate, sampled, expected",
    [
        # a root decision (no th came in): sampled adds ot=th:8 in front, others kept
        (0xC0000000000000, OTHERS, True, [f"ot=th:8,{OTHERS}"]),
        (0xC0000000000000, f"{OTHERS},ot=xy:abc", True, [f"ot=th:8;xy:abc,{OTHERS}"]),
        # ... not sampled leaves the list alone
        (0x40000000000000, OTHERS, False, [OTHERS]),
        # th survived without a flag: R >= th reproduces the root's decision (th c is
        # p = 0.25, stricter than this proxy's 0.5), th kept when sampled...
        (0xD0000000000000, f"ot=th:c,{OTHERS}", True, [f"ot=th:c,{OTHERS}"]),
        # ... removed when not
        (0x90000000000000, f"ot=th:c,{OTHERS}", False, [OTHERS]),
        # rv replaces the trace id's R
        (0x00000000000001, f"ot=rv:d0000000000000,{OTHERS}", True,
         [f"ot=th:8;rv:d0000000000000,{OTHERS}"]),
    ],
)  # fmt: skip
def test_a_root_decision_updates_the_callers_tracestate(proxies, r, tracestate, sampled, expected):
    trace = trace_with_r(r)
    proxy = proxies(B3_FIRST)
    got = proxy.send(
        [
            ("X-B3-TraceId", trace),
            ("X-B3-SpanId", SPAN),
            ("traceparent", f"00-{trace}-{SPAN}-00"),
            ("tracestate", tracestate),
        ]
    )
    expect.assert_injected(got, trace, SPAN, sampled, random_flag=False)
    assert normalized(got.all("tracestate")) == normalized(expected), got.all("tracestate")


# (R, flags, tracestate in, tracestate out, erased)
CONTINUATIONS = {
    "consistent-kept-byte-for-byte": (
        0xD0000000000000, "01", "congo=t61rcWkgMzE , ot=th:c", ["congo=t61rcWkgMzE , ot=th:c"],
        False,
    ),
    "consistent-with-rv": (
        0x00000000000001, "01", "ot=th:c;rv:d0000000000000", ["ot=th:c;rv:d0000000000000"], False,
    ),
    "sampled-but-r-below-th": (
        0x10000000000000, "01", "congo=t61rcWkgMzE,ot=th:c", ["congo=t61rcWkgMzE"], True,
    ),
    "sampled-but-rv-below-th": (
        0xFFFFFFFFFFFFFF, "01", "ot=th:c;rv:10000000000000,congo=t61rcWkgMzE",
        ["ot=rv:10000000000000,congo=t61rcWkgMzE"], True,
    ),
    "erased-entry-moves-to-front": (
        0x10000000000000, "01", "congo=t61rcWkgMzE,ot=th:c;xy:abc", ["ot=xy:abc,congo=t61rcWkgMzE"],
        True,
    ),
    "not-sampled-with-th": (0xD0000000000000, "00", "ot=th:c", [], True),
    "not-sampled-with-th-others-kept": (
        0xD0000000000000, "00", "rojo=00f067aa0ba902b7,ot=th:c", ["rojo=00f067aa0ba902b7"], True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("p", [0.01, 1])
@pytest.mark.parametrize(
    "r, flags, tracestate, expected, erased", CONTINUATIONS.values(), ids=CONTINUATIONS.keys()
)
def test_a_trusted_continuation_keeps_a_consistent_th_and_erases_an_inconsistent_one(
    proxies, p, r, flags, tracestate, expected, erased
):
    """The parent's flag decides at any local probability; th (c: T = 0xc0000000000000)
    is kept only when sampled and R >= th."""
    trace = trace_with_r(r)
    proxy = proxies({"sampling": {"probability": p}})
    with proxy.counting(ALL_COUNTERS) as delta:
        got = proxy.send(
            [("traceparent", f"00-{trace}-{SPAN}-{flags}"), ("tracestate", tracestate)]
        )
    expect.assert_injected(got, trace, SPAN, flags == "01", random_flag=False)
    assert got.all("traceparent") == [f"00-{trace}-{SPAN}-{flags}"]
    assert got.all("tracestate") == expected
    assert delta.get("tracebridge.threshold_erased", 0) == int(erased), delta
    assert reasons(delta) == {"parent": 1}, delta
