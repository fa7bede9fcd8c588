#!/usr/bin/env bash
# Runs every test of the project on a fresh machine; installs what it needs when missing.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# A persistent build folder outside the clone: the next run on this machine reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
JOBS="${JOBS:-2}"

export WEB_DIST="${WEB_DIST:-$CARGO_TARGET_DIR/www-dist}"
# wasm32 target, trunk, wasm-bindgen-cli.
source scripts/setup-web.sh
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ -z "${CHROMIUM:-}" ]; then
    echo "== installing Debian's chromium (for the page's tests)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get install -y chromium || { $SUDO apt-get update && $SUDO apt-get install -y chromium; }
fi

echo "== building pggan (release)"
cargo build --release -j"$JOBS" -p pggan-trainer

# The page: the model crate and the worker crate for wasm32, bundled by trunk.
build_page
export PGGAN_WEB_DIST="$WEB_DIST"
export PGGAN_ARTIFACTS="${PGGAN_ARTIFACTS:-$CARGO_TARGET_DIR/test-artifacts}"

echo "== unit, model, end-to-end and browser tests (screenshots: $PGGAN_ARTIFACTS)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
cargo test --release -j"$JOBS" --workspace --no-fail-fast 2>&1 | tee "$LOG" || status=$?
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
