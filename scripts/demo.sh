#!/usr/bin/env bash
# Builds the page with the shipped model and serves it on http://127.0.0.1:8080 (Ctrl-C stops).
#   bash scripts/demo.sh            (PORT=9000 bash scripts/demo.sh for another port)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pggan-target}"
WEB_DIST="${WEB_DIST:-$CARGO_TARGET_DIR/www-dist}"
PORT="${PORT:-8080}"
# The server: Python's standard one with gzip (scripts/serve.py; a static folder is all the page
# needs).
if ! command -v python3 >/dev/null; then
    echo "== installing python3 (to serve the page)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3
fi
source scripts/setup-web.sh
echo "== building the page (the first time: about 8 minutes on 2 cores)"
build_page
exec python3 scripts/serve.py --port "$PORT" --dir "$WEB_DIST"
