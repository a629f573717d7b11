#!/usr/bin/env bash
# Runs Tether's load generator against a release server on this machine and writes the results
# table to bench-results.md (copy the numbers into BENCHMARKS.md with the date and machine).
#   bash scripts/bench.sh [--users N] [--rates 2000,5000,...] [--step-secs S]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# The release artifact exactly as deployed (a plain `cargo build` of the server would leave a
# binary without the site at target/release/tether), then the tools (bench/).
bash "$REPO_ROOT/scripts/setup.sh"
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo leptos build --release --precompress
cargo build --release -p tether-bench --bin tether-load
ulimit -n 65536 2>/dev/null || true
exec ./target/release/tether-load --server-bin target/release/tether --out bench-results.md "$@"
