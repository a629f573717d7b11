#!/usr/bin/env bash
# Runs tether-load against the socket.io tutorial's Node server (end2end/bench/tutorial-server.js,
# in memory): the reference issue #9 measures Tether against, on the same machine and with the
# same load generator. Its reconnect storm cannot finish (the restarted server has forgotten
# every session): that last line reports whoever was back when tether-load's 120 s bound ran out.
#   bash scripts/bench-node.sh [--users N] [--rates 2000,5000,...] [--step-secs S]
# `bash scripts/bench.sh --pinned` runs this reference and Tether in one run, each server pinned
# to one CPU and the load generator to the other, and prints the ratios (issue #26).
# As tether-load's --server-bin, this script is also called with the server's flags; it keeps
# the port of --listen and ignores the rest.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${TETHER_NODE_REFERENCE:-}" == 1 ]]; then
  port=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --listen) port="${2##*:}"; shift 2 ;;
      *) shift ;;
    esac
  done
  export NODE_PATH="$REPO_ROOT/end2end/node_modules"
  exec node "$REPO_ROOT/end2end/bench/tutorial-server.js" "$port"
fi
cd "$REPO_ROOT"
[[ -d end2end/node_modules/socket.io ]] || (cd end2end && npm ci --no-audit --no-fund)
cargo build --release -p tether-bench --bin tether-load
export TETHER_NODE_REFERENCE=1
exec ./target/release/tether-load --server-bin scripts/bench-node.sh --out bench-results-node.md "$@"
