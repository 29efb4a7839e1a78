#!/usr/bin/env bash
# Checks the OCI image `make image` built, with standard OCI tools (skopeo, umoci),
# against what Istio's WasmPlugin needs to pull it with `oci://`
# (istio/istio pkg/wasm/imagefetcher.go, "compat" variant):
#   - an OCI image manifest (not an index: Istio asks the registry for an image),
#     OCI image config with os wasip1 / architecture wasm, exactly one layer;
#   - the layer is application/vnd.oci.image.layer.v1.tar+gzip, a complete tar
#     whose only file is plugin.wasm at the root;
#   - plugin.wasm is byte for byte the built module (same sha256), starts with the
#     wasm magic, and the config's diff_id is the uncompressed layer's sha256;
#   - `skopeo copy` (what a push does) reads every blob, verifies the digests and
#     keeps the manifest digest that a WasmPlugin pins;
#   - a second build gives the same digest.
set -euo pipefail
cd "$(dirname "$0")/../.."

WASM=${WASM:-target/wasm32-wasip1/release/tracebridge.wasm}
IMAGE_DIR=${IMAGE_DIR:-target/image}
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)}
ref="oci:$IMAGE_DIR:$IMAGE_TAG"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "==> image-check: skopeo inspect $ref"
skopeo inspect "$ref" | tee "$tmp/inspect.json"
skopeo inspect --raw "$ref" > "$tmp/manifest.json"
skopeo inspect --config "$ref" > "$tmp/config.json"
echo "==> image-check: umoci stat --image $IMAGE_DIR:$IMAGE_TAG"
umoci stat --image "$IMAGE_DIR:$IMAGE_TAG" | tee "$tmp/stat.txt"
umoci ls --layout "$IMAGE_DIR" > "$tmp/tags.txt"

check "umoci ls lists the tag $IMAGE_TAG" grep -qx "$IMAGE_TAG" "$tmp/tags.txt"
check "umoci stat shows the one layer's history entry" grep -q "make image: COPY" "$tmp/stat.txt"

# The manifest, config and layer, checked with python3's json, tarfile and hashlib.
python3 - "$tmp" "$IMAGE_DIR" "$WASM" <<'EOF' > "$tmp/py.txt" || true
import gzip, hashlib, io, json, sys, tarfile

tmp, image_dir, wasm_path = sys.argv[1:4]
manifest_bytes = open(f"{tmp}/manifest.json", "rb").read()
manifest = json.loads(manifest_bytes)
config = json.load(open(f"{tmp}/config.json"))
inspect = json.load(open(f"{tmp}/inspect.json"))
wasm = open(wasm_path, "rb").read()
wasm_sha = hashlib.sha256(wasm).hexdigest()

def result(ok, what):
    print(("ok   " if ok else "FAIL ") + what)

def blob(digest):
    algo, hexdigest = digest.split(":", 1)
    return open(f"{image_dir}/blobs/{algo}/{hexdigest}", "rb").read()

result(manifest.get("mediaType") == "application/vnd.oci.image.manifest.v1+json"
       and manifest.get("schemaVersion") == 2,
       f"manifest is an OCI image manifest ({manifest.get('mediaType')})")
result("sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == inspect["Digest"],
       f"manifest digest {inspect['Digest']} is the sha256 of the manifest skopeo read")
result(manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json",
       f"config media type {manifest['config']['mediaType']}")
result(config.get("os") == "wasip1" and config.get("architecture") == "wasm",
       f"config platform {config.get('os')}/{config.get('architecture')} (skopeo: {inspect.get('Os')}/{inspect.get('Architecture')})")
layers = manifest.get("layers", [])
result(len(layers) == 1, f"exactly one layer (got {len(layers)})")
layer = layers[-1]
result(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
       f"layer media type {layer['mediaType']} (Istio's compat variant)")
compressed = blob(layer["digest"])
result("sha256:" + hashlib.sha256(compressed).hexdigest() == layer["digest"]
       and len(compressed) == layer["size"], "layer blob matches its digest and size")
tar_bytes = gzip.decompress(compressed)
result(config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()],
       "config diff_id is the sha256 of the uncompressed layer")
# Complete archive: tarfile raises on a truncated one (no end-of-archive blocks).
members = []
try:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else None
            members.append((member.name, member.isfile(), data))
    complete = True
except tarfile.TarError as error:
    complete = False
    print(f"     tar: {error}")
result(complete, "layer is a complete tar archive")
files = [(name, data) for name, isfile, data in members if isfile]
result([name for name, _ in files] == ["plugin.wasm"],
       f"the layer's only file is plugin.wasm at the root (files: {[n for n, _ in files]})")
plugin = files[0][1] if files else b""
result(plugin[:4] == b"\0asm", "plugin.wasm starts with the wasm magic \\0asm")
result(hashlib.sha256(plugin).hexdigest() == wasm_sha,
       f"plugin.wasm sha256 {hashlib.sha256(plugin).hexdigest()[:16]}... equals {wasm_path} sha256 {wasm_sha[:16]}...")
EOF
while IFS= read -r line; do
  echo "$line"
  case "$line" in
    "ok   "*) passed=$((passed + 1)) ;;
    "FAIL "*) failed=$((failed + 1)) ;;
  esac
done < "$tmp/py.txt"
if ! grep -q "plugin.wasm sha256" "$tmp/py.txt"; then
  bad "the python checks did not all run"
fi

# A push is a copy: skopeo reads every blob, checks each digest, writes them out.
digest=$(skopeo inspect --format '{{.Digest}}' "$ref")
if skopeo copy --quiet "$ref" "dir:$tmp/copy"; then
  copied="sha256:$(sha256sum "$tmp/copy/manifest.json" | cut -d' ' -f1)"
  check "skopeo copy keeps the manifest digest ($copied)" test "$copied" = "$digest"
else
  bad "skopeo copy $ref dir:..."
fi

# Reproducible: the same module and commit give the same digest to pin.
rebuilt=$(IMAGE_DIR="$tmp/rebuild" WASM="$WASM" IMAGE_TAG="$IMAGE_TAG" envoy/istio/image/build-image.sh \
  | sed -n 's/^==> image: manifest digest //p')
check "a second build gives the same manifest digest ($rebuilt)" test "$rebuilt" = "$digest"

echo "==> image-check: $ref manifest digest $digest"
echo "image-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
