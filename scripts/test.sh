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

# One throwaway Redis for the cluster tests, on a free port, no persistence, stopped on exit
# (each test uses its own key and channel prefix in it, here and in the Redis Cluster below).
free_port() {
  local port
  for _ in $(seq 1 50); do
    # Below the kernel's ephemeral range (32768 and up here): a port an outgoing connection
    # holds there answers no connect, yet cannot be bound (a CI run failed so).
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}
REDIS_PORT="$(free_port)"
REDIS_DIR="$(mktemp -d)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
stop_redis() {
  for pidfile in "$REDIS_DIR"/redis.pid "$REDIS_DIR"/cluster-*/redis.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  rm -rf "$REDIS_DIR"
}
trap stop_redis EXIT
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null
export TETHER_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"

# And one throwaway Redis Cluster of three primaries (each with its cluster bus on a free port
# of its own), for the tests that run the store's scripts where every script must stay in one
# hash slot; stopped on exit with the Redis above.
CLUSTER_URLS=()
CLUSTER_NODES=()
USED_PORTS=" $REDIS_PORT "
# Sets PICKED to a free port none of these Redis servers took yet (not in a subshell, so
# USED_PORTS keeps what it took).
distinct_port() {
  for _ in $(seq 1 20); do
    PICKED="$(free_port)"
    if [[ "$USED_PORTS" != *" $PICKED "* ]]; then
      USED_PORTS+="$PICKED "
      return 0
    fi
  done
  return 1
}
cluster_ok() { [[ "$(redis-cli -p "$1" cluster info 2>/dev/null)" == *"cluster_state:ok"* ]]; }
cluster_logs() { tail -n 20 "$REDIS_DIR"/cluster-*/redis.log >&2 || true; }
for i in 1 2 3; do
  distinct_port
  port="$PICKED"
  distinct_port
  bus="$PICKED"
  mkdir -p "$REDIS_DIR/cluster-$i"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$REDIS_DIR/cluster-$i/nodes.conf" \
    --dir "$REDIS_DIR/cluster-$i" --daemonize yes --pidfile "$REDIS_DIR/cluster-$i/redis.pid" \
    --logfile "$REDIS_DIR/cluster-$i/redis.log"
  CLUSTER_NODES+=("127.0.0.1:$port")
  CLUSTER_URLS+=("redis://127.0.0.1:$port/")
done
for node in "${CLUSTER_NODES[@]}"; do
  for _ in $(seq 1 100); do
    redis-cli -p "${node##*:}" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "${node##*:}" ping >/dev/null 2>&1 || { echo "test Redis Cluster node $node did not start" >&2; cluster_logs; exit 1; }
done
if ! created="$(redis-cli --cluster create "${CLUSTER_NODES[@]}" --cluster-yes 2>&1)"; then
  echo "$created" >&2
  cluster_logs
  exit 1
fi
for node in "${CLUSTER_NODES[@]}"; do
  for _ in $(seq 1 100); do
    cluster_ok "${node##*:}" && break
    sleep 0.1
  done
  cluster_ok "${node##*:}" || { echo "the test Redis Cluster did not come up" >&2; cluster_logs; exit 1; }
done
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
