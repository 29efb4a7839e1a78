"""The rate cap under sustained load (README "The cap"): p = 1 with
`max_sampled_per_second: 20`, one Envoy with two workers sharing the budget in
proxy-wasm shared data, driven by wrk on 127.0.0.1.

Only counts of sampled decisions are asserted (the filter's counters over the
measured duration), in generous bands around the cap: no latency or throughput
assertion.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from harness import Envoy, HarnessError, Proxy

CAP = 20
DURATION_S = 6
CONNECTIONS = 4
WRK = Path("/usr/bin/wrk")
REASON_LOG = "%FILTER_STATE(wasm.tracebridge.sampling_reason:PLAIN)%\n"


@pytest.fixture
def capped(tmp_path, upstream, wasm, envoy_cmd):
    envoy = Envoy(
        tmp_path / "capped",
        upstream_port=upstream.port,
        plugin_config=json.dumps(
            {
                "sampling": {"probability": 1, "max_sampled_per_second": CAP},
                # The access log below shows the reason.
                "filter_state": {"sampling_reason": True},
            }
        ),
        concurrency=2,
        access_log_format=REASON_LOG,
    )
    try:
        envoy.start()
    except HarnessError as e:
        pytest.fail(f"Envoy with the cap did not start: {e}")
    proxy = Proxy(envoy)
    yield proxy
    proxy.close()
    envoy.stop()


def test_sampled_roots_per_second_stay_near_the_cap(capped):
    assert WRK.is_file(), f"wrk is not installed ({WRK})"
    url = capped.envoy.url + "/"
    before = capped.counters()
    start = time.monotonic()
    wrk = subprocess.Popen(
        [str(WRK), "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "--timeout", "5s", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        time.sleep(DURATION_S / 2)
        middle, middle_time = capped.counters(), time.monotonic()
        out, _ = wrk.communicate(timeout=DURATION_S + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    after, end = capped.counters(), time.monotonic()
    assert wrk.returncode == 0, out
    assert "Non-2xx" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))

    def increase(name: str, since: dict) -> int:
        return after.get(name, 0) - since.get(name, 0)

    sampled = increase("tracebridge.decision.sampled", before)
    not_sampled = increase("tracebridge.decision.not_sampled", before)
    capped_count = increase("tracebridge.reason.capped", before)
    rate = sampled / (end - start)
    late_rate = increase("tracebridge.decision.sampled", middle) / (end - middle_time)
    report = (
        f"{requests} requests in {end - start:.1f} s: {sampled} sampled ({rate:.1f}/s; "
        f"{late_rate:.1f}/s in the second half), {capped_count} capped; cap {CAP}/s\n{out}"
    )
    # the load was far above the cap, so the cap had work to do
    assert requests >= 10 * CAP * DURATION_S, report
    # one decision per request (wrk does not count the requests it cut off at the end)
    decided = sampled + not_sampled
    assert requests <= decided <= requests + CONNECTIONS, report
    # the whole run, adaptation included: near the cap
    assert 0.5 * CAP <= rate <= 2.5 * CAP, report
    assert capped_count > 0, report
    # once adapted, the cap itself (not only its hard limit of 2 x the cap) holds the rate
    assert 0.5 * CAP <= late_rate <= 1.75 * CAP, report
    # p = 1: every root the cap did not take is sampled with reason "probability"
    assert capped_count == not_sampled, report
    assert increase("tracebridge.reason.probability", before) == sampled, report

    # the access log shows the same reasons, request by request. A request wrk cut off
    # at the end can still be decided after `after` was read: compare the log with the
    # counters once they no longer change.
    for _ in range(20):
        settled = capped.counters()
        reasons = {
            reason: settled.get(f"tracebridge.reason.{reason}", 0)
            - before.get(f"tracebridge.reason.{reason}", 0)
            for reason in ("probability", "capped")
        }
        lines = capped.envoy.wait_access_log(sum(reasons.values()))
        if capped.counters() == settled:
            break
    assert sum(reasons.values()) - decided <= CONNECTIONS, (reasons, report)
    assert Counter(lines) == reasons, Counter(lines)
