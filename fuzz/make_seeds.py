#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the case tables: every ("header", "value") pair the native
tests and the e2e tests send (tests/*.rs, src/ unit tests, tests/e2e/*.py), grouped by target,
the configurations of the tests, benchmarks and examples, and a few serialised header maps.
Run it after changing the tables; the output is committed (small). Files named `issue-*` are
reproducers written by hand and are kept."""
import hashlib, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
FORMATS = {
    "tracecontext": ["traceparent", "tracestate"],
    "b3": ["b3"],
    "b3multi": ["x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"],
    "xray": ["x-amzn-trace-id"],
    "cloudtrace": ["x-cloud-trace-context"],
    "jaeger": ["uber-trace-id", "jaeger-debug-id"],
    "datadog": ["x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
                "x-datadog-tags", "x-datadog-origin"],
    "grpctracebin": ["grpc-trace-bin"],
}
PAIR = re.compile(r'\(\s*"([a-z0-9:-]+)"\s*,\s*b?"((?:[^"\\]|\\.)*)"\s*\)|"([a-z0-9-]+)"\s*:\s*"((?:[^"\\]|\\.)*)"')
MAX_PER_TARGET = 40


def sources():
    for base in ("tests", "src"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            if "node_modules" in dirpath:
                continue
            for f in sorted(files):
                if f.endswith((".rs", ".py")):
                    yield os.path.join(dirpath, f)


def unescape(value):
    return value.replace('\\"', '"').replace("\\\\", "\\")


def pairs():
    found = []
    for path in sources():
        text = open(path, encoding="utf-8").read()
        for m in PAIR.finditer(text):
            name, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            if "\\x" in value or "\\u" in value:
                continue
            found.append((name, unescape(value)))
    return sorted(set(found))


def write(target, seeds):
    """Replaces the generated seeds of `target` (named by hash); hand-written reproducers
    (named `issue-*`) stay."""
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if not old.startswith("issue-"):
            os.remove(os.path.join(folder, old))
    for seed in sorted(set(seeds))[:MAX_PER_TARGET]:
        name = hashlib.sha1(seed).hexdigest()[:16]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(seed)


def main():
    found = pairs()
    by_name = {}
    for name, value in found:
        by_name.setdefault(name, []).append(value)
    for fmt, headers in FORMATS.items():
        seeds = []
        # Line k is the value of the format's k-th header; the others take that header's
        # first table value, so every table value is tried in context.
        first = [by_name.get(h, [""])[0] for h in headers]
        for k, header in enumerate(headers):
            for value in by_name.get(header, []):
                lines = list(first)
                lines[k] = value
                seeds.append("\n".join(lines).encode())
        write("extract_" + fmt, seeds)
    write("tracestate", [v.encode() for v in by_name.get("tracestate", [])])
    baggage = [(n, v) for n, v in found if n == "baggage" or n.startswith(("uberctx-", "ot-baggage-"))]
    write("baggage", [f"{n}: {v}".encode() for n, v in baggage]
          + [("\n".join(f"{n}: {v}" for n, v in baggage)).encode()])
    # Issue 10, defect 4 (quadratic baggage), in the two shapes the issue measured: 256
    # `uberctx-*` headers of 200 bytes, and a 16 KB `baggage` of about 2,500 distinct keys.
    folder = os.path.join(OUT, "baggage")
    with open(os.path.join(folder, "issue-10-defect-4-prefixed-256x200"), "wb") as f:
        f.write(b"\n".join(b"uberctx-k%03d: " % i + b"v" * 186 for i in range(256)))
    with open(os.path.join(folder, "issue-10-defect-4-w3c-2500-keys"), "wb") as f:
        f.write(b"baggage: " + b",".join(b"k%d=1" % i for i in range(2500))[:16000])
    trace_headers = {h for hs in FORMATS.values() for h in hs}
    requests = [f"{n}: {v}".encode() for n, v in found if n in trace_headers]
    # Selector lines: every format injected with the default trust; all formats plus baggage,
    # untrusted, force tokens and kept trace ids.
    write("translate", [b"\xff\x00\x00\x00\n" + r for r in requests[:20]]
          + [b"\xff\x10\x1d\x07\n" + r for r in requests[20:40]])
    configs = []
    for path in sources():
        if path.endswith(".rs"):
            text = open(path, encoding="utf-8").read()
            configs += [m.group(1) for m in re.finditer(r'r#"(\{.*?\})"#', text, re.S)]
    for folder in ("benches/envoy", "examples"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".json"):
                    configs.append(open(os.path.join(dirpath, f), encoding="utf-8").read())
    write("config", [c.encode() for c in configs if "{{" not in c])
    write("force", [b"bench.1900000000.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    b"\x05k2secret-of-the-key"])
    # The header map: a few requests serialised as the host does.
    maps = []
    for chunk in (found[:5], found[5:12], found[12:30]):
        body = len(chunk).to_bytes(4, "little")
        for n, v in chunk:
            body += len(n.encode()).to_bytes(4, "little") + len(v.encode()).to_bytes(4, "little")
        for n, v in chunk:
            body += n.encode() + b"\0" + v.encode() + b"\0"
        maps.append(body)
    write("header_map", maps)


if __name__ == "__main__":
    sys.exit(main())
