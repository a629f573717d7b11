#!/usr/bin/env bash
# Runs every check and test Tether has: formatting, clippy (server and wasm frontend), the
# workspace's cargo tests, a release build of the site, and the Playwright suite against that
# release server (started on a free port by the suite's global setup, stopped after).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup.sh" --test
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$REPO_ROOT"

step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }
started=$SECONDS

step "cargo fmt --check"
cargo fmt --all --check

step "clippy: server (ssr)"
cargo clippy -p server -p protocol -p app -p client --all-targets --features app/ssr,client/native -- -D warnings

step "clippy: frontend (hydrate, wasm32)"
cargo clippy -p frontend -p app -p client --target wasm32-unknown-unknown -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --exclude frontend

step "release build of the site"
cargo leptos build --release

step "Playwright (Debian chromium, release server)"
(cd end2end && npx playwright test)

step "all checks passed in $((SECONDS - started)) s"
