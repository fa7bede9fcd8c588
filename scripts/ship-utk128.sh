#!/usr/bin/env bash
# Ships the 128×128 UTKFace run (issue 18) as www/models/utk128: the export with its evaluation and
# face-edit directions, two more evaluation draws and their reals-vs-reals floors, the pictures of
# its model card, and the figures held against the issue's targets.
#
#   bash scripts/ship-utk128.sh [--out DIR] [--eval-count N] [--pictures DIR]
#
# --out DIR         where the model goes (default www/models/utk128)
# --eval-count N    images per side of every evaluation (default 2000, the issue's); fewer for a
#                   quick rehearsal on a run that is not finished
# --pictures DIR    where the card's pictures go (default docs)
#
# The run must be stopped first (`bash scripts/train-utk128.sh stop`): it exports what the run
# holds now. Everything it measures is written to DIR/ship-report.json beside the model and
# printed as a table; the 64-face grid is then counted by eye (the issue allows at most 6
# smeared or malformed faces) and the card written from the report (www/models/utk64/README.md
# is the template).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
WORK="${PGGAN_WORK:-$HOME/.cache/pggan-work}"
RUN="$WORK/runs/utk128"
PACK="$WORK/utk128.pack"
OUT=www/models/utk128
PICTURES=docs
EVAL_COUNT=2000

die() { echo "ship-utk128.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --eval-count) EVAL_COUNT="${2:?--eval-count needs a count}"; shift 2 ;;
        --pictures) PICTURES="${2:?--pictures needs a folder}"; shift 2 ;;
        *) die "unknown option $1 (use --out DIR, --eval-count N, --pictures DIR)" ;;
    esac
done
case "$EVAL_COUNT" in '' | *[!0-9]* | 0) die "--eval-count $EVAL_COUNT: use a count of 1 or more" ;; esac
[ -d "$RUN" ] || die "no run at $RUN (restore it with: bash scripts/train-utk128.sh start, then stop)"
[ -f "$PACK" ] || die "no pack at $PACK (bash scripts/train-utk128.sh start makes it)"
if pgrep -f -- "train .*--run $RUN" > /dev/null; then
    die "the run is still training: bash scripts/train-utk128.sh stop first"
fi

cargo build --release -j"$(nproc)" -p pggan-trainer --target-dir "$CARGO_TARGET_DIR/cpu" >&2
PGGAN="$CARGO_TARGET_DIR/cpu/release/pggan"
mkdir -p "$OUT" "$PICTURES"
REPORT="$(mktemp -d)"
trap 'rm -rf "$REPORT"' EXIT

echo "== export (evaluation on $EVAL_COUNT images per side, face-edit directions)"
"$PGGAN" export --run "$RUN" --out "$OUT" --reference "$PACK" --eval-count "$EVAL_COUNT" \
    --attributes models/attributes-utk
# At the resolution the export evaluated at: the model's own (128 once the run is finished).
RESOLUTION="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["training"]["evaluation"]["resolution"])' "$OUT/manifest.json")"
for seed in 1000 2000; do
    echo "== evaluation draw at ${RESOLUTION}×${RESOLUTION}, seed $seed (model, then the floor)"
    "$PGGAN" eval --model "$OUT" --reference "$PACK" --count "$EVAL_COUNT" \
        --resolution "$RESOLUTION" --seed "$seed" --json | tail -n 1 > "$REPORT/model-$seed.json"
    "$PGGAN" eval --images "$PACK" --reference "$PACK" --count "$EVAL_COUNT" \
        --resolution "$RESOLUTION" --seed "$seed" --json | tail -n 1 > "$REPORT/floor-$seed.json"
done

echo "== pictures into $PICTURES/"
"$PGGAN" generate --model "$OUT" --seed 0 --count 64 --cell 128 --out "$PICTURES/utk128-samples.png"
"$PGGAN" generate --model "$OUT" --stages --seed 0 --count 8 --cell 128 --out "$PICTURES/utk128-stages.png"
for direction in age gender; do
    "$PGGAN" generate --model "$OUT" --seed 20 --count 8 --sweep "$direction" --cell 128 \
        --out "$PICTURES/utk128-edit-$direction.png"
done

python3 - "$OUT/manifest.json" "$REPORT" "$OUT/ship-report.json" <<'EOF'
import json, sys
manifest, folder, out = sys.argv[1:]
evaluation = json.load(open(manifest))["training"]["evaluation"]
draws = [("export, seed 0", evaluation["model"], evaluation["reals_floor"])]
for seed in (1000, 2000):
    draws.append((f"seed {seed}", json.load(open(f"{folder}/model-{seed}.json")),
                  json.load(open(f"{folder}/floor-{seed}.json"))))
rows = []
top = str(evaluation["resolution"])  # the finest level's SWD (128 px once finished)
print(f"{'draw':<16} {'SWD avg':>8} {'floor':>7} {'ratio':>6} {top + ' px':>7} {'floor':>7} {'ratio':>6}"
      f" {'MS-SSIM':>8} {'real pairs':>10} {'diff':>7}")
for name, model, floor in draws:
    avg, favg = model["swd"]["avg"], floor["swd"]["avg"]
    fine, ffine = model["swd"][top], floor["swd"][top]
    diff = model["ms_ssim"] - model["ms_ssim_reference"]
    rows.append({"draw": name, "model": model, "floor": floor, "swd_avg_ratio": avg / favg,
                 "swd_finest_ratio": fine / ffine, "ms_ssim_difference": diff})
    print(f"{name:<16} {avg:8.2f} {favg:7.2f} {avg / favg:6.2f} {fine:7.2f} {ffine:7.2f}"
          f" {fine / ffine:6.2f} {model['ms_ssim']:8.4f} {model['ms_ssim_reference']:10.4f} {diff:+7.4f}")
met = {
    "swd_avg_within_1.4x_floor": all(r["swd_avg_ratio"] <= 1.4 for r in rows),
    f"swd_{top}px_within_2x_floor": all(r["swd_finest_ratio"] <= 2.0 for r in rows),
    "ms_ssim_within_0.03": all(abs(r["ms_ssim_difference"]) <= 0.03 for r in rows),
}
for target, ok in met.items():
    print(f"{target}: {'met' if ok else 'NOT met'} on every draw")
json.dump({"draws": rows, "targets_met": met}, open(out, "w"), indent=1)
print(f"written {out}; now count the faces of the 64-face grid (at most 6 smeared or malformed)")
EOF
