#!/usr/bin/env bash
# Runs Tether's load generator against a release server on this machine and writes the results
# table to bench-results.md (copy the numbers into BENCHMARKS.md with the date and machine).
#   bash scripts/bench.sh [--users N] [--rates 2000,5000,...] [--step-secs S]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# The server alone, as the release artifact builds it (the site not embedded: the benchmark
# does not load pages), then the tools (bench/).
cargo build --release -p server --bin tether
cargo build --release -p tether-bench --bin tether-load
ulimit -n 65536 2>/dev/null || true
exec ./target/release/tether-load --server-bin target/release/tether --out bench-results.md "$@"
