"""Expectations that cannot be literal strings: fresh ids made by the filter.

Where a test knows every id in advance it writes the expected headers literally.
These helpers cover the rest (a new trace, a generated span id) and check that
the filter put the same ids into every injected format, in the encodings the
specification gives, with the decision given by the sampling formula.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from typing import Iterable

from harness import Received

DEFAULT_P = 0.01
MASK56 = 2**56 - 1

# OpenTelemetry threshold `th` that a sampled root decision writes into
# tracestate as `ot=th:<hex>`: T as 14 hex digits without trailing zeros,
# rounded to `sampling.precision` significant digits (default 4; leading f's do
# not count). Worked out by hand for the probabilities the tests use:
#   p = 0.01: T = 0xfd70a3d70a3d71 -> "fd70a"
#   p = 0.5:  T = 0x80000000000000 -> "8"
#   p = 0.25: T = 0xc0000000000000 -> "c"
#   p = 1:    T = 0                -> "0"
TH = {0.01: "fd70a", 0.5: "8", 0.25: "c", 1: "0"}

TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def threshold(p: float) -> int:
    """T = 2^56 - round(p * 2^56)."""
    return 2**56 - round(p * 2**56)


def decide(trace_hex: str, p: float) -> bool:
    """Sampled iff the low 56 bits of the trace id are >= T."""
    return (int(trace_hex, 16) & MASK56) >= threshold(p)


def root_tracestate(sampled: bool, p: float = DEFAULT_P, rest: str = "") -> list[str]:
    """tracestate after a root decision of the filter at probability p.

    Sampled: `ot=th:<th>` first, then the other members; not sampled: as it was.
    """
    if not sampled:
        return [rest] if rest else []
    return [f"ot=th:{TH[p]}" + (f",{rest}" if rest else "")]


def without(delta: dict[str, int], *names: str) -> dict[str, int]:
    return {k: v for k, v in delta.items() if k not in names}


def assert_epoch_trace_id(trace: str, slack: float = 600.0) -> None:
    """A trace id created by the filter starts with the Unix time in seconds."""
    now = time.time()
    ts = int(trace[:8], 16)
    assert abs(ts - now) <= slack, (
        f"new trace id {trace} does not start with the current Unix time "
        f"(0x{int(now):08x}): 0x{trace[:8]} is {ts - now:+.0f} s off"
    )


def assert_injected(
    got: Received,
    trace: str,
    span: str,
    sampled: bool,
    *,
    random_flag: bool,
    debug: bool = False,
    xray_tail: str = "",
) -> None:
    """The default injected formats carry (trace, span, decision) in the spec's encodings."""
    flags = (1 if sampled else 0) | (2 if random_flag else 0)
    d = "1" if sampled else "0"
    b3multi = {"x-b3-traceid": [trace], "x-b3-spanid": [span]}
    if debug:
        b3multi["x-b3-flags"] = ["1"]
    else:
        b3multi["x-b3-sampled"] = [d]
    expected = {
        "traceparent": [f"00-{trace}-{span}-{flags:02x}"],
        **b3multi,
        "x-amzn-trace-id": [f"Root=1-{trace[:8]}-{trace[8:]};Parent={span};Sampled={d}{xray_tail}"],
        "x-cloud-trace-context": [f"{trace}/{int(span, 16)};o={d}"],
    }
    trace_headers = got.trace()
    actual = {k: v for k, v in trace_headers.items() if k in expected or k.startswith("x-b3-")}
    assert actual == expected, f"\nexpected {expected}\n     got {trace_headers}"


def new_trace(
    got: Received,
    p: float = DEFAULT_P,
    *,
    decision: bool | None = None,
    debug_ok: bool = False,
    not_trace: str | tuple[str, ...] = (),
) -> tuple[str, str, bool]:
    """Check a request for which the filter started a new trace.

    decision: the sampling decision the new trace must carry (a B3 sampling-only
    value); None = the filter decides with the formula at probability p (a root
    decision: when sampled, tracestate is `ot=th:<th>`; otherwise no tracestate).
    not_trace: trace id(s) of the (invalid) input that the new trace must not reuse.
    Returns (trace id, span id, sampled).
    """
    tp = got.all("traceparent")
    assert len(tp) == 1, f"expected one new traceparent, got {tp}; {got}"
    m = TRACEPARENT_RE.match(tp[0])
    assert m, f"new traceparent malformed: {tp[0]!r}"
    trace, span, flags = m.groups()
    assert int(trace, 16) != 0 and int(span, 16) != 0, tp[0]
    if trace in ((not_trace,) if isinstance(not_trace, str) else not_trace):
        raise AssertionError(f"no new trace: the input's trace id was used: {tp[0]}\n{got}")
    assert_epoch_trace_id(trace)
    sampled = decide(trace, p) if decision is None else decision
    assert flags == ("03" if sampled else "02"), (
        f"new trace {trace}: flags {flags}, expected {'03' if sampled else '02'} "
        f"(random flag set; sampled={sampled} at p={p})"
    )
    debug = debug_ok and got.all("x-b3-flags") == ["1"]
    assert_injected(got, trace, span, sampled, random_flag=True, debug=debug)
    root = decision is None
    expected_state = root_tracestate(sampled, p) if root else []
    assert got.all("tracestate") == expected_state, (
        f"new trace {trace} (sampled={sampled}, root decision={root}): tracestate "
        f"{got.all('tracestate')}, expected {expected_state}"
    )
    return trace, span, sampled


def generated_span(
    got: Received,
    trace: str,
    sampled: bool,
    *,
    random_flag: bool = False,
    xray_tail: str = "",
) -> str:
    """Check a context with a known trace id whose span id the filter generated."""
    tp = got.all("traceparent")
    assert len(tp) == 1, tp
    m = TRACEPARENT_RE.match(tp[0])
    assert m and m.group(1) == trace, f"traceparent {tp[0]} does not carry trace {trace}"
    span = m.group(2)
    assert int(span, 16) != 0
    assert_injected(got, trace, span, sampled, random_flag=random_flag, xray_tail=xray_tail)
    return span


# ---------------------------------------------------------------------------
# Sampling at the edge: thresholds at the default precision, fresh roots,
# statistics and force tokens.
# ---------------------------------------------------------------------------

# T and th at the default `sampling.precision` 4, worked out by hand from the
# README / OpenTelemetry's precision rule (T = 2^56 - round(p * 2^56), rounded to
# 4 significant hex digits, leading f's not counted, then th = T as 14 hex digits
# without trailing zeros):
#   p = 1:      T = 0                                     -> th "0"
#   p = 0.5:    T = 0x80000000000000 (exact)              -> th "8"
#   p = 0.25:   T = 0xc0000000000000 (exact)              -> th "c"
#   p = 0.1:    2^56 - round(0.1 * 2^56) = 0xe6666666666666; 4 digits e666, the
#               next digit 6 rounds down: T = 0xe6660000000000 -> th "e666"
#   p = 0.01:   2^56 - round(0.01 * 2^56) = 0xfd70a3d70a3d71; the leading f does
#               not count, 4 digits d70a, the next digit 3 rounds down:
#               T = 0xfd70a000000000                       -> th "fd70a"
T_P4 = {
    1: 0,
    0.5: 0x80000000000000,
    0.25: 0xC0000000000000,
    0.1: 0xE6660000000000,
    0.01: 0xFD70A000000000,
    0: 2**56,  # never: no R in [0, 2^56) reaches it
}
TH_P4 = {1: "0", 0.5: "8", 0.25: "c", 0.1: "e666", 0.01: "fd70a"}


def sampled_at(trace_hex: str, t: int) -> bool:
    """R >= T, R the low 56 bits of the trace id."""
    return (int(trace_hex, 16) & MASK56) >= t


def traceparent_parts(got: Received) -> tuple[str, str, str]:
    """(trace id, span id, flags) of the single traceparent that arrived."""
    tp = got.all("traceparent")
    assert len(tp) == 1, f"expected one traceparent, got {tp}; {got}"
    m = TRACEPARENT_RE.match(tp[0])
    assert m, f"traceparent malformed: {tp[0]!r}"
    return m.group(1), m.group(2), m.group(3)


def fresh_root(
    got: Received, t: int, th: str, *, not_trace: Iterable[str] = ()
) -> tuple[str, str, bool]:
    """Check a new trace with a root decision at threshold t (th its encoding).

    The trace id is new (not one of not_trace, starts with the Unix time), the
    W3C random flag is set, the decision is R >= t in every injected format, and
    tracestate is exactly `ot=th:<th>` when sampled, absent otherwise.
    Returns (trace id, span id, sampled).
    """
    trace, span, flags = traceparent_parts(got)
    assert int(trace, 16) != 0 and int(span, 16) != 0, (trace, span)
    assert trace not in set(not_trace), f"the caller's trace id {trace} was continued\n{got}"
    assert_epoch_trace_id(trace)
    sampled = sampled_at(trace, t)
    assert flags == ("03" if sampled else "02"), (
        f"new trace {trace}: flags {flags}, expected {'03' if sampled else '02'} "
        f"(R = {int(trace, 16) & MASK56:014x}, T = {t:014x})"
    )
    assert_injected(got, trace, span, sampled, random_flag=True)
    expected_state = [f"ot=th:{th}"] if sampled else []
    assert got.all("tracestate") == expected_state, (
        f"new trace {trace} (sampled={sampled}): tracestate {got.all('tracestate')}, "
        f"expected {expected_state}"
    )
    return trace, span, sampled


def binomial_band(p: float, n: int, sigmas: float = 5.0) -> tuple[float, float]:
    """The count of successes expected from n Bernoulli(p) trials, +- sigmas."""
    half = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - half, n * p + half


def force_token(key_id: str, secret: str | bytes, expiry: int) -> str:
    """`<key id>.<unix expiry>.<hex HMAC-SHA256(secret, "<key id>.<unix expiry>")>` (README)."""
    if isinstance(secret, str):
        secret = secret.encode()
    signed = f"{key_id}.{expiry}"
    mac = hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()
    return f"{signed}.{mac}"
