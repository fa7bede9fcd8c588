#!/usr/bin/env bash
# Where the training-speed gap to PyTorch comes from: the same 3×3 convolutions, forward and
# forward + backward, in Burn flex and in PyTorch, on this machine's CPU.
#   bash bench/conv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
source bench/venv.sh
# In the CPU build's own folder (as bench/run.sh), away from the tests' build with GPU backends.
cargo build --release -j"$THREADS" -p pggan-trainer --example conv_speed \
    --target-dir "$CARGO_TARGET_DIR/cpu" >&2
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS cores"
echo "== Burn flex"
"$CARGO_TARGET_DIR/cpu/release/examples/conv_speed"
echo "== PyTorch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null), $THREADS threads"
"$VENV/bin/python" -W ignore bench/conv_twin.py --threads "$THREADS" 2>/dev/null
