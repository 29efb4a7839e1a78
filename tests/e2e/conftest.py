"""Fixtures for the tracebridge end-to-end tests.

Every test talks to a real Envoy running envoy/tracebridge.yaml (ports, wasm path
and plugin configuration rewritten) in front of an echo upstream.

* `proxies(config)` starts (once per test module) an Envoy whose plugin
  configuration is `config` (a dict, dumped as JSON, or a raw string) and returns
  a harness.Proxy; `proxies()` keeps the configuration written in the file.
* `proxy` is `proxies()`.

A missing wasm file or a missing Envoy binary is an error, never a skip.
"""

from __future__ import annotations

import json

import pytest

from harness import (
    EchoUpstream,
    Envoy,
    HarnessError,
    Proxy,
    envoy_command,
    require_wasm,
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
