"""`make demo-multicloud`: one trace from an AWS load balancer, through the EKS ingress
gateway (the untrusted edge), a proxy on EKS (Envoy's X-Ray tracer) and a proxy on GKE
(Envoy's Zipkin tracer, B3), to an application.

    python tests/e2e/multicloud_demo.py           send one request, show every hop, stop
    python tests/e2e/multicloud_demo.py --serve   keep the chain up for your own requests

Four Envoys on 127.0.0.1 with the configurations in envoy/multicloud/ (ports chosen
automatically), and an echo application:

    client --> alb     (AWS ALB stand-in: passes X-Amzn-Trace-Id through)
           --> gateway (EKS ingress gateway: tracebridge owns propagation; callers are
                        untrusted, the ALB's trace id is kept: keep_trace_id_from)
           --> eks     (X-Ray tracer; tracebridge as the upstream filter towards gke)
           --> gke     (Zipkin/B3 tracer; tracebridge as the upstream filter towards the app)
           --> application (echoes the headers it received)

The request enters with only `X-Amzn-Trace-Id: Root=...`, as an ALB stamps it. To show
what travels between the hops, each hop gets a small Lua probe as the last filter of its
upstream chain (after tracebridge): it returns the trace headers that left the hop as
`x-probe-<hop>-<header>` response headers. The probes are added here, not in the files.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import TRACE_HEADERS, EchoUpstream, HarnessError, require_wasm  # noqa: E402

import topology  # noqa: E402
from topology import RenderedEnvoy  # noqa: E402

# (hop, configuration, the cluster that leads to the next hop)
HOPS = (
    ("alb", "envoy/multicloud/alb.yaml", "gateway"),
    ("gateway", "envoy/multicloud/eks-gateway.yaml", "eks"),
    ("eks", "envoy/multicloud/eks.yaml", "gke"),
    ("gke", "envoy/multicloud/gke.yaml", "app"),
)
LABELS = {
    "alb": "ALB -> gateway",
    "gateway": "gateway -> EKS",
    "eks": "EKS -> GKE",
    "gke": "GKE -> app",
}


def alb_root() -> str:
    """A new X-Ray Root as an ALB makes it: 1-<Unix time, 8 hex>-<96 random bits>."""
    return f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"


class Multicloud:
    """The four hops and the application, started last hop first (each hop's
    cluster needs the next hop's port).

    mutate: {hop: function(cfg)} applied after rendering (tests use it to remove the
    filter from a hop, or to point a tracer at a recorder).
    """

    def __init__(self, workdir: Path, *, mutate=None, app_on_request=None):
        self.workdir = Path(workdir)
        self.mutate = dict(mutate or {})
        self.app = EchoUpstream(on_request=app_on_request)
        self.envoys: dict[str, RenderedEnvoy] = {}

    def start(self) -> "Multicloud":
        try:
            self.app.start()
            next_port = self.app.port
            for hop, config, next_cluster in reversed(HOPS):

                def mutate(cfg, hop=hop, next_cluster=next_cluster):
                    topology.add_upstream_probe(cfg, next_cluster, hop)
                    if hop in self.mutate:
                        self.mutate[hop](cfg)

                cfg = topology.render(config, clusters={next_cluster: next_port}, mutate=mutate)
                envoy = RenderedEnvoy(self.workdir / hop, cfg)
                self.envoys[hop] = envoy
                envoy.start()
                next_port = envoy.listener_port
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.app.stop()

    def __enter__(self) -> "Multicloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def entry_port(self) -> int:
        return self.envoys["alb"].listener_port

    def send(self, headers) -> "Trip":
        reply = topology.send(self.entry_port, headers)
        if reply.status != 200:
            raise HarnessError(f"the chain answered {reply.status}: {reply.body[:300]!r}")
        return Trip(headers, reply)


class Trip:
    """One request through the chain: what left each hop, what the application got."""

    def __init__(self, sent, reply: topology.Reply):
        self.sent = list(sent)
        self.reply = reply
        self.app = reply.upstream
        self.hops = {hop: reply.probe(hop) for hop, _, _ in HOPS}

    def show(self, out=sys.stdout) -> None:
        width = max(len(h) for h in TRACE_HEADERS)
        label = max(len(x) for x in LABELS.values())
        print("sent by the client:", file=out)
        for name, value in self.sent:
            print(f"  {name.lower():<{width}}  {value}", file=out)
        print("\nthe trace headers after each hop:", file=out)
        for name in TRACE_HEADERS:
            if not any(name in seen for seen in self.hops.values()):
                continue
            print(f"  {name}", file=out)
            for hop, _, _ in HOPS:
                print(f"    {LABELS[hop]:<{label}}  {self.hops[hop].get(name, '-')}", file=out)


def trace_ids(headers: dict[str, str]) -> dict[str, str]:
    """The trace id each format carries, as 32 lower-case hex digits."""
    out = {}
    if "traceparent" in headers:
        out["traceparent"] = headers["traceparent"].split("-")[1]
    if "b3" in headers:
        out["b3"] = headers["b3"].split("-")[0]
    if "x-b3-traceid" in headers:
        out["x-b3-traceid"] = headers["x-b3-traceid"]
    if "x-amzn-trace-id" in headers:
        fields = dict(f.split("=", 1) for f in headers["x-amzn-trace-id"].split(";"))
        out["x-amzn-trace-id"] = fields["Root"][2:].replace("-", "")
    if "x-cloud-trace-context" in headers:
        out["x-cloud-trace-context"] = headers["x-cloud-trace-context"].split("/")[0]
    return out


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="stay up until Ctrl-C")
    parser.add_argument("--root", help="the ALB's Root (default: a new one, 1-<time>-<random>)")
    args = parser.parse_args()
    try:
        require_wasm()
    except HarnessError as e:
        sys.exit(f"error: {e}")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="tracebridge-multicloud-"))
    chain = Multicloud(workdir)
    try:
        chain.start()
        print("the chain (every process on 127.0.0.1):")
        for hop, config, _ in HOPS:
            envoy = chain.envoys[hop]
            print(
                f"  {hop:<7}  Envoy pid {envoy.pid:<7} :{envoy.listener_port:<5}  "
                f"admin :{envoy.admin_port:<5}  {config}"
            )
        print(f"  {'app':<7}  echo application  :{chain.app.port}")

        root = args.root or alb_root()
        trip = chain.send([("X-Amzn-Trace-Id", f"Root={root}")])
        print()
        trip.show()

        alb_trace = root[2:].replace("-", "")
        at_app = trace_ids(trip.hops["gke"])
        print()
        if set(at_app.values()) != {alb_trace} or len(at_app) != 5:
            print(f"NOT one trace: the ALB's trace id is {alb_trace}; the application got {at_app}")
            return 1
        gateway_span = trip.hops["gateway"]["traceparent"].split("-")[2]
        eks_span = trip.hops["eks"]["x-b3-spanid"]
        gke_span = trip.hops["gke"]["x-b3-spanid"]
        print(f"the application got ONE trace id in all five formats: {alb_trace} (the ALB's Root)")
        print(
            f"parent chain: the gateway's span {gateway_span} <- EKS's X-Ray segment {eks_span} "
            f"<- GKE's Zipkin span {gke_span} <- the application's span (parent {gke_span} "
            f"in every format)"
        )
        print(
            f"sampled at the gateway with its own randomness, which every hop after it "
            f"reads: tracestate {trip.hops['gke'].get('tracestate', '-')}"
        )

        if args.serve:
            print(
                f"\nrunning; Ctrl-C stops everything. Try:\n"
                f"  curl -s -H 'X-Amzn-Trace-Id: Root={alb_root()}' "
                f"http://127.0.0.1:{chain.entry_port}/ -D - -o /dev/null | grep x-probe\n",
                flush=True,
            )
            while all(e.proc.poll() is None for e in chain.envoys.values()):
                time.sleep(0.2)
            print("error: an Envoy exited", file=sys.stderr)
            return 1
        return 0
    except _Stop as stop:
        print(f"\n{stop}: stopping", file=sys.stderr)
        return 0 if args.serve else 130
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        chain.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped: Envoys and the application", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
