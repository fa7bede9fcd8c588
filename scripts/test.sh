#!/usr/bin/env bash
# Runs every test of the project on a fresh machine; installs what it needs when missing.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# A persistent build folder outside the clone: the next run on this machine reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
JOBS="${JOBS:-2}"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== installing the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi

echo "== building pggan (release)"
cargo build --release -j"$JOBS" -p pggan-trainer

echo "== the model crate builds for the browser (wasm32)"
cargo check --release -j"$JOBS" -p pggan-model --target wasm32-unknown-unknown

echo "== unit, model and end-to-end tests"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
cargo test --release -j"$JOBS" --workspace --no-fail-fast 2>&1 | tee "$LOG" || status=$?
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
