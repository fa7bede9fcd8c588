#!/usr/bin/env bash
# Builds the page with the shipped model and serves it on http://127.0.0.1:8080 (Ctrl-C stops).
#   bash scripts/demo.sh            (PORT=9000 bash scripts/demo.sh for another port)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
WEB_DIST="${WEB_DIST:-$CARGO_TARGET_DIR/www-dist}"
source scripts/setup-web.sh
PORT="${PORT:-8080}"
echo "== building the page (first time: about half an hour) and serving it at http://127.0.0.1:$PORT/"
cd www && exec trunk serve --release --dist "$WEB_DIST" --address 127.0.0.1 --port "$PORT" --no-autoreload --disable-address-lookup
