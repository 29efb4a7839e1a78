"""Security checks through a real Envoy (issue 10): nothing the force header carried reaches
the upstream under any configuration, the key material never appears in Envoy's log (at
debug and trace level), and metric names never carry what a caller sent.

Secrets come from Envoy's environment (`{"env": ...}`, as Istio's `vmConfig.env` delivers
them): at debug level Envoy itself prints the listener configuration, plugin configuration
included, so an inline secret is in Envoy's own log; the filter's lines never have it.

Tokens are made from the README's definition with Python's hmac (expect.force_token).
"""

from __future__ import annotations

import re
import time

import pytest

import expect
from formats_h2 import ALL_FORMATS
from harness import Envoy, EnvoyExited, Proxy

SECRET = "security-e2e-secret-9c41f07be2d3"  # at least 16 bytes
ENV_SECRET = "security-e2e-env-secret-51aa03c8"
ENV = "TRACEBRIDGE_SECURITY_KEY"
ENV_CI = "TRACEBRIDGE_SECURITY_KEY_CI"
HEADER = "x-tracebridge-force"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FORCE = {"header": HEADER, "keys": {"ops": {"env": ENV}, "ci": {"env": ENV_CI}}}
EVERY = ALL_FORMATS + ["baggage"]


def tokens() -> list[str]:
    """A valid token, one signed with another key's secret, an expired one, garbage."""
    now = int(time.time())
    return [
        expect.force_token("ops", SECRET, now + 300),
        expect.force_token("ci", ENV_SECRET, now + 300),
        expect.force_token("ops", "not-the-secret-at-all-0000", now + 300),
        expect.force_token("ops", SECRET, now - 10),
        "ops.garbage-" + "f" * 40,
    ]


# Configurations the force header meets: baggage in every spelling (whose prefixes once let
# a token travel on as baggage), an untrusted edge keeping a load balancer's trace id, a
# token that does not trust its caller, every format written with a rule reading the force
# header, and the response side.
CONFIGS = {
    "baggage-every-spelling": {
        "extract": EVERY,
        "inject": EVERY,
        "sampling": {"force": FORCE},
    },
    "untrusted-edge": {
        "extract": EVERY,
        "inject": EVERY,
        "sampling": {
            "trust_incoming": False,
            "keep_trace_id_from": ["xray"],
            "force": FORCE,
        },
    },
    "token-does-not-trust": {
        "extract": EVERY,
        "inject": ["tracecontext", "baggage"],
        "sampling": {"trust_incoming": False, "force": {**FORCE, "trust_context": False}},
    },
    "rule-on-the-force-header": {
        "extract": ALL_FORMATS,
        "inject": ALL_FORMATS,
        "sampling": {
            "probability": 0,
            "rules": [{"match": {"header": {"name": HEADER}}, "probability": 1}],
            "force": FORCE,
        },
    },
    "response": {
        "sampling": {"force": FORCE},
        "response": {
            "traceresponse": True,
            "when": "always",
            "link": {"header": "x-trace-link", "template": "https://t.example/{trace_id}"},
        },
    },
}


class VerboseEnvoy(Envoy):
    """Envoy with every component at debug and the Wasm VM (the filter's log) at trace."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--log-level") + 1] = "debug"
        cmd[cmd.index("--component-log-level") + 1] = "wasm:trace"
        return cmd


def start(tmp_path, upstream, config, **kw) -> Proxy:
    from conftest import config_text

    envoy = VerboseEnvoy(
        tmp_path / "envoy",
        upstream_port=upstream.port,
        plugin_config=config_text(config),
        env={ENV: SECRET, ENV_CI: ENV_SECRET},
        host_env_keys=[ENV, ENV_CI],
        **kw,
    )
    envoy.start()
    return Proxy(envoy)


def mac_of(token: str) -> str:
    return token.rpartition(".")[2]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_nothing_the_force_header_carried_reaches_the_upstream(
    tmp_path, upstream, wasm, envoy_cmd, name
):
    proxy = start(tmp_path, upstream, CONFIGS[name])
    try:
        for token in tokens():
            for sent in (
                [(HEADER, token)],
                [(HEADER, token), (HEADER, token)],  # two lines
                [("traceparent", TRACEPARENT), ("baggage", "k=v"), (HEADER, token)],
                [("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793"), (HEADER, token)],
            ):
                got = proxy.send(sent)
                assert got.all(HEADER) == [], (name, token)
                for header, value in got.pairs:
                    assert token not in value and mac_of(token) not in value, (header, value)
                    assert mac_of(token) not in header, header
        log = proxy.envoy.log()
        assert SECRET not in log and ENV_SECRET not in log
    finally:
        proxy.close()
        proxy.envoy.stop()


def test_key_material_never_appears_in_the_log(tmp_path, upstream, wasm, envoy_cmd):
    # Both ways of giving a secret, every kind of token, at Envoy's debug level and the
    # Wasm VM's trace level: the log has the configuration summary and per-request lines,
    # never the secrets.
    proxy = start(tmp_path, upstream, CONFIGS["baggage-every-spelling"])
    try:
        for token in tokens():
            proxy.send([(HEADER, token), ("traceparent", TRACEPARENT)])
        log = proxy.envoy.log()
        assert "tracebridge: configured:" in log and "force=on" in log
        assert re.search(r"tracebridge: trace=[0-9a-f]{32}", log), proxy.envoy.log_tail()
        for secret in (SECRET, ENV_SECRET):
            assert secret not in log
            assert secret.encode().hex() not in log
    finally:
        proxy.close()
        proxy.envoy.stop()


def filter_lines(log: str) -> str:
    """The lines the filter logged (Envoy prefixes them with `wasm log`)."""
    return "\n".join(line for line in log.splitlines() if "wasm log" in line)


@pytest.mark.parametrize("given", ["env", "inline"])
def test_a_refused_secret_is_not_logged_either(tmp_path, upstream, wasm, envoy_cmd, given):
    short = "short-secret-15"  # 15 bytes: refused, and the error names only the field
    secret = {"env": ENV} if given == "env" else short
    config = {"sampling": {"force": {"header": HEADER, "keys": {"ops": secret}}}}
    from conftest import config_text

    envoy = VerboseEnvoy(
        tmp_path / "envoy",
        upstream_port=upstream.port,
        plugin_config=config_text(config),
        env={ENV: short},
        host_env_keys=[ENV],
    )
    try:
        with pytest.raises(EnvoyExited) as exc:
            envoy.start()
        ours = filter_lines(exc.value.log)
        assert "sampling.force.keys.ops" in ours and "at least 16 bytes" in ours, ours
        assert short not in ours
        if given == "env":
            assert short not in exc.value.log, envoy.log_tail()
    finally:
        envoy.stop()


def test_an_inline_secret_is_not_in_the_filters_log(tmp_path, upstream, wasm, envoy_cmd):
    inline = {"sampling": {"force": {"header": HEADER, "keys": {"ops": SECRET}}}}
    proxy = start(tmp_path, upstream, inline)
    try:
        for token in tokens():
            proxy.send([(HEADER, token), ("traceparent", TRACEPARENT)])
        ours = filter_lines(proxy.envoy.log())
        assert "tracebridge: configured:" in ours
        assert SECRET not in ours and SECRET.encode().hex() not in ours
    finally:
        proxy.close()
        proxy.envoy.stop()


@pytest.mark.parametrize(
    "header",
    ["uberctx-force", "ot-baggage-force", "baggage", "traceparent", "server-timing"],
)
def test_a_force_header_another_format_carries_is_refused(start_envoy, header):
    config = {"extract": EVERY, "inject": EVERY, "sampling": {"force": {**FORCE, "header": header}}}
    envoy = start_envoy(config)
    with pytest.raises(EnvoyExited) as exc:
        envoy.start()
    pattern = re.compile(r"tracebridge: invalid configuration: sampling\.force\.header: \S")
    assert pattern.search(exc.value.log), envoy.log_tail()


MARKER = "zqxmarker"


def hostile_requests() -> list[list[tuple[str, str]]]:
    """Every header the filter reads, with values (and baggage keys) that carry MARKER."""
    m = MARKER
    return [
        [("traceparent", f"00-{m}-{m}-01"), ("tracestate", f"{m}={m}")],
        [("b3", f"{m}-{m}-1"), ("x-b3-traceid", m), ("x-b3-spanid", m), ("x-b3-sampled", m)],
        [("x-amzn-trace-id", f"Root={m};{m}={m}"), ("x-cloud-trace-context", f"{m}/1;o=1")],
        [("uber-trace-id", f"{m}:{m}:0:1"), ("jaeger-debug-id", m)],
        [("x-datadog-trace-id", m), ("x-datadog-tags", f"_dd.p.{m}={m}"), ("x-datadog-origin", m)],
        [("grpc-trace-bin", m)],
        [("baggage", f"{m}={m}"), (f"uberctx-{m}", m), (f"ot-baggage-{m}", m)],
        [(HEADER, f"{m}.1.{m}"), (f"x-{m}", m)],
        [("traceparent", TRACEPARENT), ("tracestate", f"ot=th:{m};rv:{m}"), ("baggage", f"k={m}")],
    ]


def test_metric_names_never_carry_header_values(tmp_path, upstream, wasm, envoy_cmd):
    proxy = start(tmp_path, upstream, CONFIGS["baggage-every-spelling"])
    try:
        before = set(proxy.envoy.stats("tracebridge"))
        for sent in hostile_requests():
            proxy.send(sent)
        # Names are defined when the plugin starts: hostile requests add none.
        # (the counts reach Envoy on the filter's next metrics flush)
        after = proxy.envoy.wait_metrics_flush("tracebridge")
        assert set(after) == before
        assert any(v > 0 for n, v in after.items() if "invalid" in n)
        for path in ("/stats", "/stats/prometheus", "/stats?format=json"):
            status, body = proxy.envoy.admin_get(path)
            assert status == 200
            assert MARKER not in body.lower(), path
    finally:
        proxy.close()
        proxy.envoy.stop()
