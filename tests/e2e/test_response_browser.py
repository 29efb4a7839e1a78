"""A real browser reads the trace from the response: Debian's Chromium, headless, loads a page
through Envoy with the filter and reports what `performance` gives its script.

* W3C Server Timing: `PerformanceResourceTiming.serverTiming` (and so the navigation entry's)
  lists the response's metrics with `name` and `description`; for a cross-origin resource
  the list stays empty unless the response's `Timing-Allow-Origin` admits the page's origin
  (W3C Resource Timing, "timing allow check").
* The expected description is the `traceparent` that reached the upstream, which the page's
  HTML carries (response_upstream.PAGE): W3C Trace Context editor's draft, "Trace Context
  Server Timing Metric Format".

The page is served from http://127.0.0.1:PORT and fetches http://localhost:PORT/api: the same
Envoy under another origin. Chromium missing fails the test (`make e2e` installs it as root).
"""

from __future__ import annotations

import json

import pytest

from harness import Envoy, HarnessError, free_port
from response_upstream import ResponseUpstream, chromium_binary, dump_dom, page_result

# W3C Server Timing, "Examples": the upstream's own metrics (name, description, duration).
UPSTREAM_METRICS = [
    {"name": "miss", "description": "", "duration": 0},
    {"name": "db", "description": "", "duration": 53},
    {"name": "app", "description": "", "duration": 47.2},
    {"name": "cache", "description": "Cache Read", "duration": 23.2},
]


@pytest.fixture(scope="module")
def chromium():
    try:
        return chromium_binary()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def upstream():
    with ResponseUpstream() as up:
        yield up


def start(tmp_path_factory, upstream, response: dict) -> Envoy:
    port = free_port()  # the page's origin is known before Envoy starts
    if "timing_allow_origin" in response:
        response = dict(response, timing_allow_origin=response["timing_allow_origin"] % port)
    config = {"sampling": {"probability": 1}, "response": response}
    envoy = Envoy(
        tmp_path_factory.mktemp("browser"),
        upstream_port=upstream.port,
        listener_port=port,
        plugin_config=json.dumps(config),
    )
    envoy.start()
    return envoy


def load_page(envoy: Envoy) -> dict:
    port = envoy.listener_port
    url = f"http://127.0.0.1:{port}/page?api=http://localhost:{port}/api"
    result = page_result(dump_dom(url))
    assert "error" not in result, result
    return result


def traceparent_sent(pairs) -> str:
    (value,) = [v for n, v in pairs if n == "traceparent"]
    return value


def test_page_and_cross_origin_fetch_read_the_trace(tmp_path_factory, upstream, wasm, envoy_cmd, chromium):
    envoy = start(tmp_path_factory, upstream, {"timing_allow_origin": "http://127.0.0.1:%d"})
    try:
        result = load_page(envoy)
    finally:
        envoy.stop()
    page_traceparent = result["upstream_traceparent"]
    assert page_traceparent.startswith("00-") and page_traceparent.endswith("-03"), result
    # The navigation: the upstream's metrics, and tracebridge's beside them.
    assert result["navigation"] == UPSTREAM_METRICS + [
        {"name": "trace", "description": page_traceparent, "duration": 0}
    ]
    # The fetch from another origin, admitted by Timing-Allow-Origin: its own trace.
    assert result["fetch_status"] == 200
    fetch_traceparent = traceparent_sent(result["fetch_upstream"])
    assert fetch_traceparent != page_traceparent
    assert result["fetch"] == UPSTREAM_METRICS + [
        {"name": "trace", "description": fetch_traceparent, "duration": 0}
    ]


def test_cross_origin_fetch_needs_timing_allow_origin(tmp_path_factory, upstream, wasm, envoy_cmd, chromium):
    """The control: the same page without `response.timing_allow_origin`. The page still
    reads its own (same-origin) metrics; the cross-origin fetch's list is empty."""
    envoy = start(tmp_path_factory, upstream, {})
    try:
        result = load_page(envoy)
    finally:
        envoy.stop()
    assert result["navigation"][-1] == {
        "name": "trace",
        "description": result["upstream_traceparent"],
        "duration": 0,
    }
    assert result["fetch_status"] == 200
    assert result["fetch"] == [], result["fetch"]
