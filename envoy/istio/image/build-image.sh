#!/usr/bin/env bash
# Builds an OCI image of the filter that Istio's WasmPlugin pulls with `oci://`,
# without a container daemon: umoci writes an OCI image layout directory.
#
#   envoy/istio/image/build-image.sh            -> target/image (tag: the version in Cargo.toml)
#
# Format: Istio's "compat" variant (istio/istio pkg/wasm/imagefetcher.go,
# extractOCIStandardImage): an ordinary OCI image manifest whose one layer
# (application/vnd.oci.image.layer.v1.tar+gzip) is a tar holding plugin.wasm at
# its root. It is the format `docker build` of `FROM scratch` + `COPY plugin.wasm ./`
# gives, every registry stores it, and Istio reads it. The image config says
# os "wasip1", architecture "wasm" (the module's target, wasm32-wasip1); nothing
# runs it as a container.
#
# The build is reproducible: file times and the config's `created` come from
# SOURCE_DATE_EPOCH, else the last commit's time, so the same module gives the
# same manifest digest.
#
# Environment: WASM (module, default target/wasm32-wasip1/release/tracebridge.wasm),
# IMAGE_DIR (default target/image), IMAGE_TAG (default: Cargo.toml's version).
set -euo pipefail
cd "$(dirname "$0")/../../.."

WASM=${WASM:-target/wasm32-wasip1/release/tracebridge.wasm}
IMAGE_DIR=${IMAGE_DIR:-target/image}
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)}

for tool in umoci skopeo; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found (Debian: apt-get install -y skopeo umoci)" >&2
    exit 1
  fi
done
if [ ! -f "$WASM" ]; then
  echo "error: $WASM not found; run 'make build' first" >&2
  exit 1
fi
if [ -z "$IMAGE_TAG" ]; then
  echo "error: no image tag (IMAGE_TAG unset and no version in Cargo.toml)" >&2
  exit 1
fi

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# umoci needs --rootless to unpack without root.
rootless=()
[ "$(id -u)" = 0 ] || rootless=(--rootless)

mkdir -p target
work=$(mktemp -d target/image-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout="$work/layout"

umoci init --layout "$layout"
umoci new --image "$layout:$IMAGE_TAG"
umoci unpack "${rootless[@]}" --image "$layout:$IMAGE_TAG" "$work/bundle" >/dev/null
install -m 0644 "$WASM" "$work/bundle/rootfs/plugin.wasm"
touch -h -d "@$SOURCE_DATE_EPOCH" "$work/bundle/rootfs/plugin.wasm" "$work/bundle/rootfs"
umoci repack --image "$layout:$IMAGE_TAG" \
  --history.created "$created" \
  --history.created_by "make image: COPY $WASM /plugin.wasm" \
  "$work/bundle"
umoci config --image "$layout:$IMAGE_TAG" --no-history \
  --os wasip1 --architecture wasm --created "$created" \
  --manifest.annotation "org.opencontainers.image.title=tracebridge" \
  --manifest.annotation "org.opencontainers.image.version=$IMAGE_TAG" \
  --manifest.annotation "org.opencontainers.image.revision=$revision" \
  --manifest.annotation "org.opencontainers.image.created=$created"
umoci gc --layout "$layout"

# umoci 0.4.7 leaves out the manifest's own `mediaType`, which the OCI image
# spec (1.1) says SHOULD be there and some registries want; add it, store the
# manifest under its new digest and point the layout's index at it.
python3 - "$layout" "$IMAGE_TAG" <<'EOF'
import hashlib, json, os, sys

layout, tag = sys.argv[1:3]
index_path = os.path.join(layout, "index.json")
with open(index_path) as f:
    index = json.load(f)
for desc in index["manifests"]:
    if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag:
        continue
    old_path = os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1])
    with open(old_path) as f:
        manifest = json.load(f)
    if "mediaType" in manifest:
        continue
    fixed = {"schemaVersion": manifest.pop("schemaVersion"), "mediaType": desc["mediaType"]}
    fixed.update(manifest)
    data = json.dumps(fixed, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    os.remove(old_path)
    desc["digest"], desc["size"] = "sha256:" + digest, len(data)
with open(index_path, "w") as f:
    json.dump(index, f, separators=(",", ":"))
EOF

rm -rf "$IMAGE_DIR"
mkdir -p "$(dirname "$IMAGE_DIR")"
mv "$layout" "$IMAGE_DIR"

digest=$(skopeo inspect --format '{{.Digest}}' "oci:$IMAGE_DIR:$IMAGE_TAG")
echo "==> image: oci:$IMAGE_DIR:$IMAGE_TAG"
echo "==> image: plugin.wasm sha256:$(sha256sum "$WASM" | cut -d' ' -f1) ($(wc -c < "$WASM") bytes)"
echo "==> image: manifest digest $digest"
