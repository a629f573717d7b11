#!/usr/bin/env bash
# Runs every check and test Tether has: formatting, clippy (server and wasm frontend), the
# workspace's cargo tests (the cluster ones on a redis-server and a Redis Cluster of three
# started here on free ports and stopped on exit), the vendored engineioxide's unit tests, the release artifact (one binary,
# the site precompressed inside it), and the Playwright suite against that artifact (started
# on a free port by the suite's global setup, from a directory of its own, stopped after).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup.sh" --test
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$REPO_ROOT"

step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }
started=$SECONDS

# A one-shot run (CI: a fresh clone, built once) gains nothing from incremental state, which
# more than doubled target/ (a CI run ran out of disk in rustc at 291 s). Developers keep it.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# The whole run writes about 10 GiB under target/; say so up front rather than as an LLVM I/O error.
avail_kib="$(df -Pk "$REPO_ROOT" | awk 'NR==2 {print $4}')"
if [ -n "$avail_kib" ] && [ "$avail_kib" -lt $((12 * 1024 * 1024)) ]; then
  echo "warning: $((avail_kib / 1024 / 1024)) GiB free under $REPO_ROOT; a cold run writes about 10 GiB to target/" >&2
fi

# One throwaway Redis for the cluster tests, and one Redis Cluster of three primaries for the
# tests that run the store's scripts where every script must stay in one hash slot; on free
# ports, no persistence, stopped on exit (each test uses its own key and channel prefix).
REDIS_DIR="$(mktemp -d)"
source "$REPO_ROOT/scripts/lib/redis.sh"
trap stop_redis EXIT
start_redis
export TETHER_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
start_redis_cluster 3
export TETHER_TEST_REDIS_CLUSTER="$(IFS=,; echo "${CLUSTER_URLS[*]}")"

step "vendored crates: published source + patches"
bash scripts/check-vendor.sh

step "cargo fmt --check"
cargo fmt --all --check

step "unused dependencies (cargo-machete)"
# The workspace's members (and the crates inside them), not vendor/: published crates as they are.
cargo machete --skip-target-dir $(sed -n 's/^members = \[\(.*\)\]$/\1/p' Cargo.toml | tr -d '",')

step "clippy: server (ssr)"
cargo clippy -p server -p protocol -p app -p client -p tether-bench --all-targets --features app/ssr,client/native -- -D warnings

step "clippy: frontend (hydrate, wasm32)"
cargo clippy -p frontend -p app -p client --target wasm32-unknown-unknown -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --exclude frontend

step "cargo test (vendored engineioxide: its queue and heartbeat are Tether's)"
CARGO_TARGET_DIR="$REPO_ROOT/target/vendor-engineioxide" cargo test --locked \
  --manifest-path vendor/engineioxide/Cargo.toml --lib \
  --features tokio/macros,tokio/rt-multi-thread,tokio/test-util

step "release build: the site, precompressed, embedded in target/release/tether"
cargo leptos build --release --precompress
target/release/tether --version

step "Playwright (Debian chromium, release server)"
(cd end2end && npx playwright test)

step "all checks passed in $((SECONDS - started)) s"
