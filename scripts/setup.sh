#!/usr/bin/env bash
# Installs what building and testing Tether needs, and nothing twice. Sourced by run.sh and
# test.sh; safe to run again at any time.
#
#   setup.sh            toolchain for building and running (wasm target, cargo-leptos,
#                       wasm-bindgen-cli matching Cargo.lock, wasm-opt from npm binaryen)
#   setup.sh --test     also Debian's chromium, redis-server (the cluster tests), what the
#                       tests link against, and cargo-machete (unused dependencies)
#
# Nothing here downloads from GitHub or a CDN: Rust tools come from the Rust package registry,
# wasm-opt from the npm registry, chromium from Debian. cargo-leptos finds them on PATH and so
# never tries to fetch its own.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_LEPTOS_VERSION="0.3.10"
CARGO_MACHETE_VERSION="0.9.2"
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_rust_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi

  if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
    log "installing cargo-leptos $CARGO_LEPTOS_VERSION (takes a while, once)"
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
  fi

  # wasm-bindgen-cli must be exactly the wasm-bindgen version the lock file resolved.
  local wb_version
  wb_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$REPO_ROOT/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
    log "installing wasm-bindgen-cli $wb_version"
    # Not --locked: its own lock names a crate version the registry no longer has.
    cargo install wasm-bindgen-cli --version "$wb_version"
  fi
}

install_npm_packages() {
  # end2end's lock pins Playwright, the official socket.io-client and binaryen (wasm-opt;
  # Debian's older binaryen breaks the release wasm). Reinstall only when the lock changed.
  local stamp="$REPO_ROOT/end2end/node_modules/.package-lock.sha256"
  local want
  want="$(sha256sum "$REPO_ROOT/end2end/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing npm packages (end2end)"
    (cd "$REPO_ROOT/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}

install_test_tools() {
  # cargo-machete: the test command's check for declared but unused dependencies.
  if [ "$(cargo machete --version 2>/dev/null)" != "$CARGO_MACHETE_VERSION" ]; then
    log "installing cargo-machete $CARGO_MACHETE_VERSION"
    cargo install cargo-machete --version "$CARGO_MACHETE_VERSION" --locked
  fi
}

main() {
  install_rust_tools
  install_npm_packages
  if [ "${1:-}" = "--test" ]; then
    # chromium for Playwright; redis-server for the cluster tests; libssl-dev + pkg-config for
    # the native Socket.IO test client; sqlite3 for the end-to-end tests that write a store
    # row directly (devices.spec.ts).
    apt_install chromium redis-server libssl-dev pkg-config sqlite3
    install_test_tools
  fi
}

main "$@"
