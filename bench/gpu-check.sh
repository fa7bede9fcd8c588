#!/usr/bin/env bash
# The GPU check, in two halves:
#   bash bench/gpu-check.sh prepare   here: builds what a GPU machine without toolchain or network
#                                     needs into bench/gpu-kit/ (under 64 MB)
#   bash bench/gpu-check.sh run       there (from the repository root, bench/gpu-kit/ beside it):
#                                     prints the adapter; `pggan bench` per resolution for the
#                                     paper's network and the demo's, each beside the PyTorch twin
#                                     of the same step; a two-minute training run; and the step's
#                                     agreement with the CPU. Within 8 minutes.
# `run` works unchanged on a machine whose only GPU drivers are Mesa's software ones (llvmpipe):
# GPU_CHECK_SCALE=tiny shrinks the networks and times so that it ends there too, and takes the wgpu
# backend on OpenGL (CubeCL's SPIR-V crashes llvmpipe's Vulkan: docs/design.md#backends).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=bench/gpu-kit

prepare() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
    # The build of `scripts/test.sh --gpu` (CPU, Vulkan and wgpu backends), so each reuses the other.
    cargo build --release -j"${JOBS:-2}" --workspace --all-targets \
        --features pggan-trainer/vulkan,pggan-trainer/wgpu,pggan-e2e/gpu
    rm -rf "$KIT" && mkdir -p "$KIT"
    # Stripped and gzipped: it travels within the 64 MiB a device call carries.
    strip -o "$KIT/pggan" "$CARGO_TARGET_DIR/release/pggan"
    local pggan="$KIT/pggan"
    # The Vulkan loader (the GPU machine's driver brings its own ICD, not always the loader).
    local lists=/tmp/pggan-apt-amd64
    mkdir -p "$lists/partial"
    local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
    apt-get "${o[@]}" update -q >/dev/null
    (cd "$KIT" && apt-get "${o[@]}" download -q libvulkan1 >/dev/null)
    # Training data: 512 faces drawn by the shipped 64×64 model (no photographs leave the machine).
    local faces
    faces="$(mktemp -d)"
    "$pggan" generate --model www/models/utk64 --seed 0 --count 512 --out "$faces" --backend flex >/dev/null
    "$pggan" prepare "$faces" --out "$KIT/faces.pack" --resolution 64 --holdout 64 >/dev/null
    rm -rf "$faces"
    gzip -f "$KIT/pggan"
    du -sh "$KIT"/*
    local mib
    mib=$(du -sm "$KIT" | cut -f1)
    echo "bench/gpu-kit: $mib MiB (limit 64)"
    [ "$mib" -lt 64 ]
}

run() {
    [ -f "$KIT/pggan.gz" ] || { echo "error: $KIT/pggan.gz is missing: run \`bash bench/gpu-check.sh prepare\` first" >&2; exit 1; }
    local scratch
    scratch="$(mktemp -d)"
    local pggan="$scratch/pggan"
    gunzip -c "$KIT/pggan.gz" > "$pggan" && chmod +x "$pggan"
    # The Vulkan loader, where the machine has none.
    if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
        for f in "$KIT"/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    # NVIDIA's ICD where the driver is mounted rather than installed.
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
    # The twin's Python: the one with PyTorch.
    local py="${PYTHON:-python3}"

    # Sizes: the paper's network (latent 512, up to 512 channels) and the demo's (utk128).
    local paper=(--latent 512 --fmap-base 8192 --fmap-max 512 --resolution 256 --minibatch 16 --steps 5)
    local demo=(--latent 128 --fmap-base 2048 --fmap-max 128 --resolution 128 --minibatch 32 --steps 5)
    local train_minutes=2 t_bench=150 t_twin=60 t_train=170 backend=vulkan
    local net=(--latent 128 --fmap-base 2048 --fmap-max 128 --minibatch-max 32)
    if [ "${GPU_CHECK_SCALE:-}" = tiny ]; then
        backend=wgpu
        net=(--latent 32 --fmap-base 256 --fmap-max 32 --minibatch-max 8)
        export PGGAN_WGPU_API=gl
        paper=(--latent 16 --fmap-base 256 --fmap-max 16 --resolution 8 --minibatch 8 --steps 1)
        demo=(--latent 32 --fmap-base 256 --fmap-max 32 --resolution 8 --minibatch 8 --steps 1)
        train_minutes=0.5 t_bench=240 t_twin=60 t_train=180
        export PGGAN_ALLOW_SOFTWARE_GPU=1
    fi

    echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    command -v nvidia-smi >/dev/null && nvidia-smi -L || true
    # Each part is bounded, so one slow part (autotuning a new shape) cannot eat the others' time.
    part() {
        local secs=$1
        shift
        timeout "$secs" "$@" || echo "(this part stopped: exit $? after at most ${secs} s)"
    }
    echo "== pggan bench, the paper's network, $backend (with the step's agreement with flex)"
    part "$t_bench" "$pggan" bench --backend "$backend" "${paper[@]}" --check
    echo "== PyTorch twin, the paper's network"
    part "$t_twin" "$py" -W ignore bench/pggan_twin.py --device auto "${paper[@]}"
    echo "== pggan bench, the demo's network, $backend"
    part "$t_bench" "$pggan" bench --backend "$backend" "${demo[@]}"
    echo "== PyTorch twin, the demo's network"
    part "$t_twin" "$py" -W ignore bench/pggan_twin.py --device auto "${demo[@]}"
    # Several GPUs: the demo's network data-parallel over all of them (`--devices`), for the
    # speed-up against the one-device figures above.
    local gpus
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    if [ "${gpus:-0}" -gt 1 ]; then
        echo "== pggan bench, the demo's network, $backend, data-parallel over $gpus GPUs"
        local wide=(--latent 128 --fmap-base 2048 --fmap-max 128 --resolution 128 --steps 5 --minibatch $((8 * gpus)))
        part "$t_bench" "$pggan" bench --backend "$backend" "${wide[@]}" --devices "$gpus"
        echo "== the same on one GPU"
        part "$t_bench" "$pggan" bench --backend "$backend" "${wide[@]}"
    fi
    echo "== training for $train_minutes minutes, the demo's network at 64×64 on generated faces, $backend"
    part "$t_train" "$pggan" train --backend "$backend" --data "$KIT/faces.pack" --run "$scratch/run" \
        "${net[@]}" \
        --stabilize-kimg 4 --fade-kimg 4 --tick-kimg 1 --metrics-kimg 0 --max-minutes "$train_minutes"
    rm -rf "$scratch"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash bench/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
