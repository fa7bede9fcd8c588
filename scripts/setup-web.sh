#!/usr/bin/env bash
# Installs what the page needs when it is missing — the wasm32 target and the wasm-bindgen-cli that
# matches Cargo.lock — and defines build_page. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== installing the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
# The CLI must be the exact version of the wasm-bindgen crate in Cargo.lock. Not --locked: its
# lockfile pins a crate the registry no longer has. Installed outside the project's build folder,
# without its release profile's fat LTO (a quicker build of a program whose speed does not matter).
BINDGEN="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if ! wasm-bindgen --version 2>/dev/null | grep -q "$BINDGEN"; then
    echo "== installing wasm-bindgen-cli $BINDGEN"
    env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install wasm-bindgen-cli --version "$BINDGEN"
fi

# Builds the page into $WEB_DIST: the worker crate for wasm32 (profile wasm-release; no wasm-opt,
# Debian's breaks Burn's module), its JavaScript glue for a classic worker, and www/ as it is
# (www/engine-loader.js starts the worker).
build_page() {
    local target_dir="${CARGO_TARGET_DIR:-target}"
    echo "== building the page (wasm32, wasm-release) into $WEB_DIST"
    cargo build -j"${JOBS:-2}" -p pggan-web --target wasm32-unknown-unknown --profile wasm-release
    mkdir -p "$WEB_DIST"
    wasm-bindgen --target no-modules --no-typescript --out-dir "$WEB_DIST" --out-name pggan-web \
        "$target_dir/wasm32-unknown-unknown/wasm-release/pggan_web.wasm"
    rm -rf "$WEB_DIST/models"
    cp -r www/index.html www/app.js www/engine-loader.js www/style.css www/favicon.svg \
        www/og-image.jpg www/models "$WEB_DIST/"
    if [ -n "${PGGAN_PUBLIC_URL:-}" ]; then
        bash scripts/page-urls.sh "$WEB_DIST/index.html" public "$PGGAN_PUBLIC_URL"
    fi
    if [ -n "${PGGAN_SOURCE_URL:-}" ]; then
        bash scripts/page-urls.sh "$WEB_DIST/index.html" source "$PGGAN_SOURCE_URL"
    fi
    # The engine's version (a digest of its wasm): the page keeps the engine in the browser's
    # Cache Storage under it, so a second visit downloads nothing and a new build is never stale.
    # Its size too: a server that compresses sends fewer bytes than the page receives.
    local digest bytes
    digest="$(sha256sum "$WEB_DIST/pggan-web_bg.wasm" | cut -c1-16)"
    bytes="$(stat -c %s "$WEB_DIST/pggan-web_bg.wasm")"
    printf '{"wasm": "pggan-web_bg.wasm", "version": "%s", "bytes": %s}\n' "$digest" "$bytes" \
        > "$WEB_DIST/engine.json"
}

