#!/usr/bin/env bash
# The page's convolution kernels in WebAssembly, im2col against Winograd, timed in Node (the V8
# engine of Chromium) at the 128×128 demo generator's shapes: bash bench/wasm-conv.sh [reps]
set -euo pipefail
cd "$(dirname "$0")/wasm_conv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}/wasm-conv"
source ../../scripts/setup-web.sh >/dev/null   # the wasm32 target and wasm-bindgen
cd bench/wasm_conv
command -v node >/dev/null || { echo "needs Node.js (apt-get install nodejs)" >&2; exit 1; }
RUSTFLAGS="-C target-feature=+simd128" cargo build -j"${JOBS:-2}" --release --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir "$CARGO_TARGET_DIR/pkg" \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pggan_wasm_conv_bench.wasm"
echo "== $(lscpu | sed -n 's/^Model name: *//p'), Node $(node --version), batch 1, ${1:-5} reps"
node -e "console.log(require('$CARGO_TARGET_DIR/pkg/pggan_wasm_conv_bench.js').run(${1:-5}))"
