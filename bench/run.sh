#!/usr/bin/env bash
# Training throughput of pggan and its PyTorch twin, side by side, on this machine's CPU.
#   bash bench/run.sh [--resolution 32 --fmap-base 1024 --fmap-max 256 --latent 256 --minibatch 16 --steps 5]
# Needs PyTorch: installed into $PGGAN_BENCH_VENV (default ~/.cache/pggan-bench-venv) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
ARGS=("$@")
source bench/venv.sh

cargo build --release -j"$THREADS" -p pggan-trainer >&2

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS cores"
echo "== pggan (Rust, Burn flex CPU backend)"
"$CARGO_TARGET_DIR/release/pggan" bench "${ARGS[@]}"
echo "== PyTorch twin (bench/pggan_twin.py), $THREADS threads"
"$VENV/bin/python" -W ignore bench/pggan_twin.py --threads "$THREADS" "${ARGS[@]}"
