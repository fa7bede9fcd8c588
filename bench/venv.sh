# Sourced by bench/run.sh and bench/conv.sh: sets THREADS and VENV, a virtual environment with
# PyTorch ($PGGAN_BENCH_VENV, default ~/.cache/pggan-bench-venv), installed there when missing.
THREADS="$(nproc)"
VENV="${PGGAN_BENCH_VENV:-$HOME/.cache/pggan-bench-venv}"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "installing PyTorch into $VENV (large download)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch numpy safetensors >&2
fi
