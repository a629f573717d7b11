#!/usr/bin/env bash
# The simulation behind docs/SCALING.md: a Redis Cluster of three primaries started here on free
# ports, and tether-scale, which starts the release server's nodes on it, fits the capacity
# model on a calibration run and checks it against the simulation (default: 10,000 users on 3
# nodes at 900 msg/s). Pinned: Redis and the nodes on CPU ${SCALE_SERVER_CPU:-0}, tether-scale
# (the users) on CPU ${SCALE_LOAD_CPU:-1}. Figures: target/scale/figures.json and the table it
# prints (also in target/scale/results.md).
#   bash scripts/scale.sh [--users N] [--rate R] [--secs S] [--calibration-users N] ...
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

server_cpu="${SCALE_SERVER_CPU:-0}"
load_cpu="${SCALE_LOAD_CPU:-1}"
command -v taskset >/dev/null || { echo "scale.sh: taskset is missing (util-linux)" >&2; exit 2; }
taskset -c "$server_cpu" true && taskset -c "$load_cpu" true \
  || { echo "scale.sh: CPUs $server_cpu and $load_cpu must both be usable (SCALE_SERVER_CPU, SCALE_LOAD_CPU)" >&2; exit 2; }
[[ "$server_cpu" != "$load_cpu" ]] || { echo "scale.sh: the nodes and the users need two different CPUs" >&2; exit 2; }

bash "$REPO_ROOT/scripts/setup.sh" --test
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo leptos build --release --precompress
cargo build --release -p tether-bench --bin tether-scale
# 10,000 users are 10,000 sockets in tether-scale and as many in the nodes.
ulimit -n "$(ulimit -Hn)"
fds="$(ulimit -n)"
[[ "$fds" == unlimited || "$fds" -ge 12000 ]] || echo "scale.sh: only $fds file descriptors; 10,000 users need more" >&2

REDIS_DIR="$(mktemp -d)"
REDIS_WRAP=(taskset -c "$server_cpu")
source "$REPO_ROOT/scripts/lib/redis.sh"
# The nodes tether-scale started (their key prefix is scale-<phase>-<pid>) go with Redis, should
# tether-scale itself be stopped before it stops them.
stop_all() { pkill -f -- '--redis-prefix scale-' 2>/dev/null || true; stop_redis; }
trap stop_all EXIT
start_redis_cluster 3

out_dir="$REPO_ROOT/target/scale"
mkdir -p "$out_dir"
{
  echo "# tether-scale, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
  echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  taskset -c "$load_cpu" ./target/release/tether-scale \
    --redis-url "${CLUSTER_URLS[0]}" \
    --server-bin taskset --server-arg -c --server-arg "$server_cpu" --server-arg target/release/tether \
    --out "$out_dir/figures.json" "$@"
} 2>&1 | tee "$out_dir/results.md"
