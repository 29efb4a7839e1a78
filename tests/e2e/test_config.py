"""Envoy configurations under envoy/, and plugin configurations the filter refuses."""

import json
import re
from pathlib import Path

import pytest
import yaml

import topology
from harness import (
    ENVOY_DIR,
    OLDEST_SUPPORTED_ENVOY,
    EnvoyExited,
    apply_rule,
    config_versions,
    envoy_version,
    load_config,
    parse_version,
    render_config,
    validate_for_this_envoy,
    wasm_filter_configs,
)

ENVOY_CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))


def test_there_are_envoy_configs():
    assert any(p.name == "tracebridge.yaml" for p in ENVOY_CONFIGS)


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=[p.name for p in ENVOY_CONFIGS])
def test_envoy_config_validates(path: Path, wasm, envoy_cmd, tmp_path):
    """Accepted by this Envoy as it is, or on an Envoy older than its min-envoy line,
    as its before-envoy rules make it (and the file's lines held to their word:
    harness.validate_for_this_envoy)."""
    problems = validate_for_this_envoy(path, tmp_path)
    assert not problems, "\n".join(problems)


VERSIONED_CONFIGS = sorted(
    p for p in ENVOY_DIR.rglob("*.yaml") if "istio" not in p.relative_to(ENVOY_DIR).parts
)


@pytest.mark.parametrize(
    "path", VERSIONED_CONFIGS, ids=[str(p.relative_to(ENVOY_DIR)) for p in VERSIONED_CONFIGS]
)
def test_version_lines_are_well_formed(path: Path):
    """A version line names an Envoy newer than the oldest supported one (else it says
    nothing), and each before-envoy rule changes something in the file."""
    versions = config_versions(path)  # raises on a malformed or inconsistent line
    oldest = parse_version(OLDEST_SUPPORTED_ENVOY)
    if versions.min_envoy is not None:
        assert versions.min_envoy > oldest, versions.min_envoy
    for rule in versions.rules:
        assert rule.version > oldest, rule
        apply_rule(yaml.safe_load(path.read_text()), rule)  # raises when it changes nothing


def test_oldest_supported_envoy_is_the_one_ci_runs():
    makefile = (ENVOY_DIR.parent / "Makefile").read_text()
    assert f"\nENVOY_OLDEST := {OLDEST_SUPPORTED_ENVOY}\n" in makefile


def test_version_rules_are_applied_for_older_envoys():
    """load_config on an Envoy older than a rule's version applies it: the keys are gone
    and the extract list is the rule's (envoy/beside-zipkin.yaml has both kinds)."""
    path = ENVOY_DIR / "beside-zipkin.yaml"
    versions = config_versions(path)
    cfg = load_config(path)
    text = yaml.safe_dump(cfg)
    (plugin,) = topology.wasm_plugins(cfg)
    extract = json.loads(plugin["configuration"]["value"])["extract"]
    applied = versions.rules_for(envoy_version())
    assert {r.op for r in versions.rules} == {"delete", "extract"}
    for rule in versions.rules:
        if rule.op == "delete":
            assert all((f"{key}:" in text) != (rule in applied) for key in rule.args), rule
        else:
            assert (extract == list(rule.args)) == (rule in applied), (rule, extract)


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
