#!/usr/bin/env bash
# Runs the project's tests on a fresh machine; installs what it needs when missing.
#   bash scripts/test.sh          every test that needs no GPU: the CPU backend, the page in
#                                 headless Chromium; the GPU backends' code is linted, not built
#   bash scripts/test.sh --gpu    also builds pggan with its GPU backends and runs the GPU tests
#                                 (on Mesa's software driver, llvmpipe, where there is no GPU):
#                                 29.5 minutes on a new 2-core machine whose CPU build was done
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=0
for arg in "$@"; do
    case "$arg" in
    --gpu) GPU=1 ;;
    *) echo "test.sh: unknown option '$arg' (the one option is --gpu)" >&2; exit 2 ;;
    esac
done
# A persistent build folder outside the clone: the next run on this machine reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
JOBS="${JOBS:-2}"
# Without a login session Mesa's EGL prints "XDG_RUNTIME_DIR is invalid or not set" at every
# adapter probe of the GPU unit tests; give it a private folder (pggan itself does the same).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/pggan-runtime-$(id -u)"
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
fi

export WEB_DIST="${WEB_DIST:-$CARGO_TARGET_DIR/www-dist}"
# wasm32 target, wasm-bindgen-cli.
source scripts/setup-web.sh

# System packages, from Debian, installed when missing (the package lists refreshed first, so an
# old list never installs an old browser):
# - Chromium $CHROMIUM_MIN or newer, for the page's tests (the WebGPU flags of
#   tests/common/browser.rs were measured on 148 and 156);
# - with --gpu, the Vulkan loader, and Mesa's Vulkan and OpenGL (EGL) drivers: their software
#   renderer, llvmpipe, runs the GPU tests on a machine without a GPU.
CHROMIUM_MIN=148
chromium_major() { "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9.]+' | head -n1 | cut -d. -f1; }
CHROMIUM_BIN="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
PACKAGES=()
if [ -z "${CHROMIUM:-}" ] && { [ -z "$CHROMIUM_BIN" ] || [ "$(chromium_major "$CHROMIUM_BIN")" -lt "$CHROMIUM_MIN" ]; }; then
    PACKAGES+=(chromium)
fi
GPU_PACKAGES=()
[ "$GPU" = 0 ] || GPU_PACKAGES=(libvulkan1 mesa-vulkan-drivers libegl1 libegl-mesa0 libgl1-mesa-dri)
for pkg in "${GPU_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || PACKAGES+=("$pkg")
done
if [ "${#PACKAGES[@]}" -gt 0 ]; then
    echo "== installing ${PACKAGES[*]} (Debian)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}"
    [ -n "${CHROMIUM:-}" ] || CHROMIUM_BIN="$(command -v chromium || true)"
fi
got="$([ -n "$CHROMIUM_BIN" ] && chromium_major "$CHROMIUM_BIN" || true)"
if [ -z "$got" ] || [ "$got" -lt "$CHROMIUM_MIN" ]; then
    echo "error: the page's tests need Chromium $CHROMIUM_MIN or newer; ${CHROMIUM_BIN:-no chromium} reports '${got:-nothing}'" >&2
    exit 1
fi
echo "== $("$CHROMIUM_BIN" --version 2>/dev/null)"

# The GPU backends, Vulkan and wgpu (fusion, autotuning), and the GPU tests.
GPU_FEATURES="pggan-trainer/vulkan,pggan-trainer/wgpu,pggan-e2e/gpu"
# One feature set for the build and the tests below, so they share one build.
FEATURES=()
[ "$GPU" = 0 ] || FEATURES=(--features "$GPU_FEATURES")

echo "== format and lint (cargo fmt --check, cargo clippy -D warnings)"
cargo fmt --all --check
# Linting checks the code without generating any, so the GPU code is linted on every run and
# built only with --gpu.
cargo clippy --release -j"$JOBS" --workspace --all-targets --features "$GPU_FEATURES" -- -D warnings
# The CPU-only build the README gives first (`cargo build --release -p pggan-trainer`) compiles
# other code paths than the build with every backend: checked and linted on its own.
cargo clippy --release -j"$JOBS" -p pggan-trainer --all-targets -- -D warnings

# `pggan` and every test in one build: with the tests' dev-dependencies in the same feature
# resolution, the `cargo test` below reuses it instead of building Burn a second time.
echo "== building pggan ($([ "$GPU" = 0 ] && echo flex || echo flex, vulkan, wgpu)) and the tests (release)"
cargo build --release -j"$JOBS" --workspace --all-targets "${FEATURES[@]}"

# The page: the model crate and the worker crate for wasm32, with their JavaScript glue.
build_page
export PGGAN_WEB_DIST="$WEB_DIST"
export PGGAN_ARTIFACTS="${PGGAN_ARTIFACTS:-$CARGO_TARGET_DIR/test-artifacts}"

echo "== unit, model, end-to-end and browser tests (screenshots: $PGGAN_ARTIFACTS)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
cargo test --release -j"$JOBS" --workspace "${FEATURES[@]}" --no-fail-fast 2>&1 | tee "$LOG" || status=$?
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
