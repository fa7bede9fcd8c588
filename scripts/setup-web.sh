#!/usr/bin/env bash
# Installs what the page needs when it is missing: the wasm32 target, trunk 0.21.14 and the
# wasm-bindgen-cli that matches Cargo.lock. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== installing the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
# Tools are installed without their release profile's fat LTO and single codegen unit (trunk's): a
# quicker build of programs whose speed does not matter here. Outside the project's build folder.
install_tool() {
    env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install "$@"
}
if ! trunk --version 2>/dev/null | grep -q '0\.21\.14'; then
    echo "== installing trunk 0.21.14 (0.22 needs a newer rustc)"
    # Without the update check (it would ask the network at every start).
    install_tool --locked trunk --version 0.21.14 --no-default-features --features rustls
fi
# The CLI must be the exact version of the wasm-bindgen crate in Cargo.lock. Not --locked: its
# lockfile pins a crate the registry no longer has.
BINDGEN="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if ! wasm-bindgen --version 2>/dev/null | grep -q "$BINDGEN"; then
    echo "== installing wasm-bindgen-cli $BINDGEN"
    install_tool wasm-bindgen-cli --version "$BINDGEN"
fi

# Builds the page into $WEB_DIST (release, no wasm-opt: Debian's breaks Burn's module).
build_page() {
    echo "== building the page (trunk, release) into $WEB_DIST"
    (cd www && trunk build --release --dist "$WEB_DIST")
}
