#!/usr/bin/env bash
# Carries a run to a GPU machine that has no Rust toolchain, no network and limits on file sizes,
# and brings it back.
#
#   bash scripts/carry-run.sh out  --run RUN --data PACK --to DIR [--features wgpu] [--quality 90]
#       DIR gets everything the other machine needs, each file under 16 MiB:
#         pggan.gz.NN       a stripped release build of this checkout with the GPU feature,
#                           gzipped and cut into parts of 15 MiB
#         train.tar.gz      the pack's training split as JPEGs (`pggan unpack`)
#         run/              the run's checkpoint in parts, bf16, Adam restarting (`pggan compact`),
#                           with its options and logs (its stage and fade snapshots stay at home)
#         train-here.sh     run on the GPU machine: bash DIR/train-here.sh MINUTES BACK_DIR [BACKEND]
#       train-here.sh packs the images again, resumes the run for MINUTES, and writes
#       BACK_DIR/run-back.tar.gz (the run, compacted again, with any new stage and fade snapshots).
#
#       (PGGAN_BIN=path carries that binary instead of building one.)
#
#   bash scripts/carry-run.sh back --from run-back.tar.gz --run RUN
#       Puts the returned run in place: RUN's own checkpoint is kept aside as
#       checkpoint-before-carry.safetensors, and the next `pggan train --resume` continues from the
#       returned one.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"

die() { echo "carry-run.sh: $*" >&2; exit 2; }
mode="${1:-}"; shift || true
RUN=""; DATA=""; TO=""; FROM=""; FEATURES="wgpu"; QUALITY=90
while [ $# -gt 0 ]; do
    case "$1" in
        --run) RUN="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --to) TO="$2"; shift 2 ;;
        --from) FROM="$2"; shift 2 ;;
        --features) FEATURES="$2"; shift 2 ;;
        --quality) QUALITY="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done

case "$mode" in
out)
    [ -n "$RUN" ] && [ -n "$DATA" ] && [ -n "$TO" ] || die "out needs --run RUN --data PACK --to DIR"
    [ -d "$RUN" ] || die "no run folder $RUN"
    [ -f "$DATA" ] || die "no pack $DATA"
    if [ -n "${PGGAN_BIN:-}" ]; then
        # A binary made elsewhere (the tests carry the one they built).
        PGGAN="$PGGAN_BIN"; carried="$PGGAN_BIN"
    else
        # A GPU build goes to a folder of its own, so the default (flex) build stays as it is.
        target="$CARGO_TARGET_DIR"; [ "$FEATURES" = flex ] || target="$CARGO_TARGET_DIR-$FEATURES"
        echo "== building pggan with --features $FEATURES (into $target)"
        CARGO_TARGET_DIR="$target" cargo build --release -j"$(nproc)" -p pggan-trainer --features "$FEATURES"
        carried="$target/release/pggan"
        PGGAN="$CARGO_TARGET_DIR/release/pggan"
        [ -x "$PGGAN" ] || cargo build --release -j"$(nproc)" -p pggan-trainer
    fi
    mkdir -p "$TO"
    strip -o "$TO/pggan" "$carried"
    gzip -f "$TO/pggan"
    rm -f "$TO"/pggan.gz.[0-9][0-9]
    split -b 15M -d "$TO/pggan.gz" "$TO/pggan.gz."
    rm "$TO/pggan.gz"
    echo "== training images"
    said="$("$PGGAN" unpack --data "$DATA" --out "$TO/train.tar.gz" --quality "$QUALITY")"
    echo "$said"
    # The pack's top level, from what unpack says ("… images at 64×64, …").
    resolution="$(sed -n 's/.* images at \([0-9]*\)×.*/\1/p' <<<"$said")"
    [ -n "$resolution" ] || die "could not read the resolution from: $said"
    echo "== the run"
    rm -rf "$TO/run"
    "$PGGAN" compact --run "$RUN" --out "$TO/run" --max-file-mib 15
    # Training does not read the stage and fade snapshots (the checkpoint says which are done):
    # they stay at home, and only their names travel, so that only new ones come back.
    for folder in stages fades; do
        ls "$TO/run/$folder" 2>/dev/null | sort > "$TO/run/$folder-at-home.txt" || true
        rm -rf "${TO:?}/run/$folder"
    done
    cat > "$TO/train-here.sh" <<EOF
#!/usr/bin/env bash
# Resumes the carried run here for MINUTES and leaves it in BACK_DIR/run-back.tar.gz.
#   bash train-here.sh MINUTES BACK_DIR [BACKEND (default wgpu)]
set -euo pipefail
here="\$(cd "\$(dirname "\$0")" && pwd)"
minutes="\${1:?minutes}"; back="\${2:?back folder}"; backend="\${3:-wgpu}"
work="\${TMPDIR:-/tmp}/pggan-carried"
mkdir -p "\$work" "\$back"
cat "\$here"/pggan.gz.[0-9][0-9] | gunzip -c > "\$work/pggan" && chmod +x "\$work/pggan"
[ -f "\$work/train.pack" ] || "\$work/pggan" prepare "\$here/train.tar.gz" --out "\$work/train.pack" --resolution $resolution --padded keep > "\$work/prepare.json"
[ -d "\$work/run" ] || cp -r "\$here/run" "\$work/run"
for folder in stages fades; do sort "\$here/run/\$folder-at-home.txt" > "\$work/\$folder-before" 2>/dev/null || true; done
"\$work/pggan" train --data "\$work/train.pack" --run "\$work/run" --resume --backend "\$backend" --max-minutes "\$minutes"
rm -rf "\$work/back" && "\$work/pggan" compact --run "\$work/run" --out "\$work/back" --max-file-mib 15
# Only the snapshots made here travel back (the rest are at home already).
for folder in stages fades; do
    [ -d "\$work/back/\$folder" ] || continue
    ( cd "\$work/back" && ls \$folder | sort | comm -12 - "\$work/\$folder-before" | sed "s#^#\$folder/#" | xargs -r rm -f )
done
tar czf "\$back/run-back.tar.gz" -C "\$work/back" .
ls -l "\$back/run-back.tar.gz"
EOF
    chmod +x "$TO/train-here.sh"
    echo "== $TO"
    find "$TO" -type f -printf '%10s  %p\n' | sort -k2
    over="$(find "$TO" -type f -size +16M)"
    [ -z "$over" ] || die "over 16 MiB: $over"
    ;;
back)
    [ -n "$FROM" ] && [ -n "$RUN" ] || die "back needs --from run-back.tar.gz --run RUN"
    [ -f "$FROM" ] || die "no file $FROM"
    mkdir -p "$RUN"
    listing="$(tar tzf "$FROM")" || die "$FROM is not a readable .tar.gz"
    grep -q 'checkpoint-part000.safetensors' <<<"$listing" || die "$FROM holds no checkpoint"
    if [ -f "$RUN/checkpoint.safetensors" ]; then
        mv "$RUN/checkpoint.safetensors" "$RUN/checkpoint-before-carry.safetensors"
    fi
    rm -f "$RUN"/checkpoint-part*.safetensors
    tar xzf "$FROM" -C "$RUN"
    echo "== $RUN now continues from the returned run:"
    tail -n 1 "$RUN/metrics.jsonl" | cut -c1-200
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
