#!/usr/bin/env bash
# The page's convolution kernels in WebAssembly, im2col against Winograd, timed in Node (the V8
# engine of Chromium) at the 128×128 demo generator's shapes, compiled as the page compiles them
# (profile wasm-release): bash bench/wasm-conv.sh [reps]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
source scripts/setup-web.sh >/dev/null   # the wasm32 target and wasm-bindgen
command -v node >/dev/null || { echo "needs Node.js (apt-get install nodejs)" >&2; exit 1; }
cargo build -j"${JOBS:-2}" -p pggan-wasm-conv-bench --target wasm32-unknown-unknown --profile wasm-release
OUT="$CARGO_TARGET_DIR/wasm-conv-bench"
wasm-bindgen --target nodejs --out-dir "$OUT" \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/pggan_wasm_conv_bench.wasm"
echo "== $(lscpu | sed -n 's/^Model name: *//p'), Node $(node --version), batch 1, ${1:-5} reps"
node -e "console.log(require('$OUT/pggan_wasm_conv_bench.js').run(${1:-5}))"
