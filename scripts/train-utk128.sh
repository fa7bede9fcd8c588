#!/usr/bin/env bash
# The 128×128 UTKFace demo model's training run (issue 18), kept going across working periods and
# machines.
#
#   bash scripts/train-utk128.sh start [OPTION…]
#                                         resume it in the background, niced, with any options
#                                         `train --resume` may change (on a new machine: the
#                                         pack is made and the run restored from the copy in
#                                         training/utk128/ first)
#   bash scripts/train-utk128.sh stop     Ctrl-C the trainer: it writes its checkpoint and ends
#   bash scripts/train-utk128.sh save     stop, then write what resuming needs to
#                                         training/utk128/ (commit that folder)
#   bash scripts/train-utk128.sh status   where it stands
#
# The run lives outside the clone, in $PGGAN_WORK (default ~/.cache/pggan-work): runs/utk128, the
# pack utk128.pack made from ../shared/data/utkface-aligned-200.tar, train.log, and the binary it
# runs (a copy, so rebuilding the clone never changes a running trainer). A working period does
# not always get the machine of the one before; training/utk128/ holds the weights in f32, the
# stage snapshots, options and logs (`pggan compact`, no photographs), so a new machine goes on
# from there — with Adam restarting, as at every phase's start. How the run was begun and changed:
# training/utk128/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
WORK="${PGGAN_WORK:-$HOME/.cache/pggan-work}"
RUN="$WORK/runs/utk128"
PACK="$WORK/utk128.pack"
TAR="${UTKFACE_TAR:-$REPO/../shared/data/utkface-aligned-200.tar}"
CARRIED="$REPO/training/utk128"
BIN="$WORK/pggan-utk128"

die() { echo "train-utk128.sh: $*" >&2; exit 2; }
trainer_pid() { pgrep -f -- "$BIN train .*--run $RUN" | head -n 1 || true; }

stop() {
    local pid
    pid="$(trainer_pid)"
    [ -n "$pid" ] || { echo "not running"; return 0; }
    echo "stopping $pid (it finishes its step and writes its checkpoint)"
    kill -INT "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 2; done
    tail -n 2 "$WORK/train.log"
}

mode="${1:-}"
shift || true
case "$mode" in
start)
    [ -z "$(trainer_pid)" ] || die "already running: pid $(trainer_pid)"
    mkdir -p "$WORK"
    if [ ! -x "$BIN" ]; then
        # The CPU build, in its own folder (as bench/run.sh), away from the tests' build.
        cargo build --release -j"$(nproc)" -p pggan-trainer --target-dir "$CARGO_TARGET_DIR/cpu"
        cp "$CARGO_TARGET_DIR/cpu/release/pggan" "$BIN"
    fi
    if [ ! -f "$PACK" ]; then
        [ -f "$TAR" ] || die "no pack $PACK and no $TAR to make it from (set UTKFACE_TAR)"
        "$BIN" prepare "$TAR" --out "$PACK" --resolution 128 --holdout 2000 > "$WORK/prepare.json"
    fi
    if [ ! -f "$RUN/checkpoint.safetensors" ]; then
        ls "$CARRIED"/checkpoint-part*.safetensors > /dev/null 2>&1 ||
            die "no run in $RUN and no copy in $CARRIED: begin it as training/utk128/README.md says"
        echo "restoring the run from $CARRIED"
        mkdir -p "$RUN"
        cp -r "$CARRIED"/. "$RUN"/
        rm -f "$RUN/README.md"
    fi
    # setsid: its own session and scheduling group, so nice holds it back from this shell's work
    # only once the group is niced too (autogroup).
    setsid nohup nice -n 19 "$BIN" train --data "$PACK" --run "$RUN" --resume --backend flex "$@" \
        >> "$WORK/train.log" 2>&1 < /dev/null &
    sleep 1
    pid="$(trainer_pid)"
    [ -n "$pid" ] || { tail -n 5 "$WORK/train.log"; die "the trainer did not start"; }
    echo 19 > "/proc/$pid/autogroup" 2>/dev/null || true
    echo "training: pid $pid, log $WORK/train.log"
    ;;
stop)
    stop
    ;;
save)
    stop
    [ -x "$BIN" ] || die "no trainer binary $BIN"
    mkdir -p "$CARRIED"
    rm -rf "$CARRIED/stages" "$CARRIED/fades"
    "$BIN" compact --run "$RUN" --out "$CARRIED" --dtype f32
    du -sh "$CARRIED"
    ;;
status)
    pid="$(trainer_pid)"
    echo "trainer: ${pid:-not running}"
    [ -f "$WORK/train.log" ] && grep '^tick' "$WORK/train.log" | tail -n 1
    [ -f "$RUN/metrics.jsonl" ] && grep '"swd' "$RUN/metrics.jsonl" | tail -n 1 | cut -c1-300
    ;;
*)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
