#!/usr/bin/env bash
# Training throughput of pggan and its PyTorch twin, side by side, on this machine's CPU.
#   bash bench/run.sh [--isa native|avx2] [--repeat N] [--resolution 32 --fmap-base 1024 --fmap-max 256 --latent 256 --minibatch 16 --steps 5]
# --isa avx2: both sides on AVX2 kernels, also on an AVX-512 CPU — pggan built without its
#   `avx512` feature (into $CARGO_TARGET_DIR/avx2), the twin's oneDNN, MKL and ATen limited by
#   their environment variables. The first line of each side names the instruction set it used.
# --repeat N: N runs of each, alternating (pggan, twin, pggan, …), then the median img/s per
#   resolution of each side and their ratio.
# Needs PyTorch: installed into $PGGAN_BENCH_VENV (default ~/.cache/pggan-bench-venv) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
ISA=native
REPEAT=1
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --isa) ISA="${2:?--isa needs native or avx2}"; shift 2 ;;
        --repeat) REPEAT="${2:?--repeat needs a count}"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
case "$ISA" in native | avx2) ;; *) echo "error: --isa $ISA: use native or avx2" >&2; exit 2 ;; esac
case "$REPEAT" in '' | *[!0-9]* | 0) echo "error: --repeat $REPEAT: use a count of 1 or more" >&2; exit 2 ;; esac
source bench/venv.sh

if [ "$ISA" = avx2 ]; then
    PGGAN_TARGET="$CARGO_TARGET_DIR/avx2"
    cargo build --release -j"$THREADS" -p pggan-trainer --no-default-features --features flex \
        --target-dir "$PGGAN_TARGET" >&2
    export ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
else
    # The CPU build a user makes, in a folder of its own: the tests' `pggan` (with the GPU
    # backends) in $CARGO_TARGET_DIR/release stays as it is.
    PGGAN_TARGET="$CARGO_TARGET_DIR/cpu"
    cargo build --release -j"$THREADS" -p pggan-trainer --target-dir "$PGGAN_TARGET" >&2
fi
PGGAN="$PGGAN_TARGET/release/pggan"
TWIN=("$VENV/bin/python" -W ignore bench/pggan_twin.py --threads "$THREADS")

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS cores, --isa $ISA"
if [ "$REPEAT" -eq 1 ]; then
    echo "== pggan (Rust, Burn flex CPU backend)"
    "$PGGAN" bench "${ARGS[@]}"
    echo "== PyTorch twin (bench/pggan_twin.py), $THREADS threads"
    "${TWIN[@]}" "${ARGS[@]}"
    exit 0
fi

RUNS="$(mktemp -d)"
trap 'rm -rf "$RUNS"' EXIT
for i in $(seq 1 "$REPEAT"); do
    echo "== run $i of $REPEAT: pggan"
    "$PGGAN" bench "${ARGS[@]}" --json | tee "$RUNS/pggan.out"
    tail -n 1 "$RUNS/pggan.out" >> "$RUNS/pggan.jsonl"
    echo "== run $i of $REPEAT: PyTorch twin"
    "${TWIN[@]}" "${ARGS[@]}" --json | tee "$RUNS/twin.out"
    tail -n 1 "$RUNS/twin.out" >> "$RUNS/twin.jsonl"
done
"$VENV/bin/python" - "$RUNS/pggan.jsonl" "$RUNS/twin.jsonl" <<'EOF'
import json, statistics, sys

def medians(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    by_res = {}
    for rows in runs:
        for row in rows:
            by_res.setdefault(row["resolution"], []).append(row["img_per_s"])
    return len(runs), {r: (statistics.median(v), min(v), max(v)) for r, v in by_res.items()}

n, ours = medians(sys.argv[1])
_, twin = medians(sys.argv[2])
print(f"== median of {n} alternating runs, img/s (min–max)")
print("  res     pggan                     twin                      pggan/twin")
for r in sorted(ours):
    (a, a_lo, a_hi), (b, b_lo, b_hi) = ours[r], twin[r]
    print(f"{r:>5}  {a:8.2f} ({a_lo:7.2f}–{a_hi:7.2f})  {b:8.2f} ({b_lo:7.2f}–{b_hi:7.2f})  {a / b:6.2f}×")
EOF
