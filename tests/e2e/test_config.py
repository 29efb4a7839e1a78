"""Envoy configurations under envoy/, and plugin configurations the filter refuses."""

import json
import re
from pathlib import Path

import pytest

from harness import ENVOY_DIR, EnvoyExited, render_config, validate_config, wasm_filter_configs

ENVOY_CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))


def test_there_are_envoy_configs():
    assert any(p.name == "tracebridge.yaml" for p in ENVOY_CONFIGS)


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=[p.name for p in ENVOY_CONFIGS])
def test_envoy_config_validates(path: Path, wasm, envoy_cmd):
    # Run from the repository root, as users do: the wasm path in the file is relative.
    result = validate_config(path.relative_to(ENVOY_DIR.parent))
    assert result.returncode == 0, (
        f"envoy --mode validate -c {path.name} failed ({result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )


def test_shipped_config_spells_out_the_defaults():
    (plugin,) = wasm_filter_configs(render_config())
    assert plugin["root_id"] == "tracebridge"
    assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert plugin["vm_config"]["code"]["local"]["filename"] == (
        "target/wasm32-wasip1/release/tracebridge.wasm"
    )
    assert json.loads(plugin["configuration"]["value"]) == {
        "extract": ["tracecontext", "b3", "b3multi", "xray", "cloudtrace", "jaeger", "datadog", "grpctracebin"],
        "inject": ["tracecontext", "b3multi", "xray", "cloudtrace"],
        "sampling": {"probability": 0.01},
    }


@pytest.mark.parametrize(
    "config",
    [
        "",
        "{}",
        '{"sampling": {}}',
        '{"sampling": {"probability": 0}}',
        '{"sampling": {"probability": 1}}',
        '{"extract": ["b3"], "inject": ["b3"], "sampling": {"probability": 0.5}}',
        '{"extract": ["cloudtrace", "xray", "b3multi", "b3", "tracecontext"]}',
    ],
)
def test_valid_configuration_starts(start_envoy, config):
    envoy = start_envoy(config).start()
    assert envoy.proc.poll() is None


INVALID = {
    "unknown-key": ('{"foo": 1}', r"foo"),
    "unknown-sampling-key": ('{"sampling": {"rate": 0.5}}', r"sampling\.rate"),
    "unknown-format": ('{"extract": ["tracecontext", "zipkin"]}', r"extract\[1\]"),
    "unknown-inject-format": ('{"inject": ["b3", "w3c"]}', r"inject\[1\]"),
    "duplicate-extract": ('{"extract": ["b3", "xray", "b3"]}', r"extract(\[2\])?"),
    "duplicate-inject": ('{"inject": ["xray", "xray"]}', r"inject(\[1\])?"),
    "extract-not-a-list": ('{"extract": "b3"}', r"extract"),
    "format-not-a-string": ('{"inject": [1]}', r"inject\[0\]"),
    "probability-string": ('{"sampling": {"probability": "0.5"}}', r"sampling\.probability"),
    "probability-above-1": ('{"sampling": {"probability": 1.5}}', r"sampling\.probability"),
    "probability-negative": ('{"sampling": {"probability": -0.1}}', r"sampling\.probability"),
    "sampling-not-object": ('{"sampling": 0.5}', r"sampling"),
    "not-json": ("extract: [b3]", None),
    "truncated-json": ('{"extract": ["b3"', None),
    "not-an-object": ('["b3"]', None),
}


@pytest.mark.parametrize("config, path", INVALID.values(), ids=INVALID.keys())
def test_invalid_configuration_is_rejected(start_envoy, config, path):
    envoy = start_envoy(config)
    with pytest.raises(EnvoyExited) as exc:
        envoy.start()
    assert exc.value.returncode != 0
    lines = [
        line for line in exc.value.log.splitlines() if "tracebridge: invalid configuration:" in line
    ]
    assert lines, f"no 'tracebridge: invalid configuration:' in the log:\n{envoy.log_tail()}"
    assert any("[error]" in line or "[critical]" in line for line in lines), lines
    if path is not None:
        pattern = re.compile(r"tracebridge: invalid configuration: " + path + r": \S")
        assert any(pattern.search(line) for line in lines), (
            f"expected field path {path!r} in:\n" + "\n".join(lines)
        )
