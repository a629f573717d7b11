#!/usr/bin/env bash
# Runs Tether's load generator against a release server on this machine and writes the results
# table to bench-results.md (copy the numbers into BENCHMARKS.md with the date and machine).
#   bash scripts/bench.sh [--users N] [--rates 2000,5000,...] [--step-secs S]
#
# Pinned mode (issue #26): the server on one CPU, the load generator on another (taskset), and
# the socket.io tutorial's Node server (end2end/bench/tutorial-server.js, in memory) measured in
# the same run with the same load generator, so every figure is a ratio taken side by side:
#   bash scripts/bench.sh --pinned [--rounds K] [--users N] [--rates R1,R2,...] [--step-secs S]
#   (or BENCH_PINNED=1 bash scripts/bench.sh ...)
# Defaults: 500 users, rates 200,2000,6000,15000, 5 s steps, 1 round (a round is one Node run
# and one Tether run; rounds alternate which goes first). The server runs on CPU
# ${BENCH_SERVER_CPU:-0}, tether-load on ${BENCH_LOAD_CPU:-1}. Each run is tether-load's
# connect storm and throughput steps, without the reconnect storm (Node forgets its sessions).
# It prints one table per round (server CPU per delivered message with the store writer's
# share, the ratio Tether / Node, p50 / p99, delivered msg/s, the load generator's CPU per
# message, the kernel (system) part of each side's CPU per message, and the Tether server's
# fsync + fdatasync calls per second with its store writer's
# share, counted by perf's syscall tracepoints when perf is installed and allowed to; tether-load
# --count-fsyncs) with the machine, date, commit and load average,
# and writes it to target/bench-pinned/results.md (each run's own table beside it).
# Other processes on the machine are not kept off those CPUs: read the load average it prints.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

pinned="${BENCH_PINNED:-0}"
rounds=1
users=500
rates=200,2000,6000,15000
step_secs=5
passthrough=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pinned) pinned=1; shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    --users) users="$2"; passthrough+=("$1" "$2"); shift 2 ;;
    --rates) rates="$2"; passthrough+=("$1" "$2"); shift 2 ;;
    --step-secs) step_secs="$2"; passthrough+=("$1" "$2"); shift 2 ;;
    *) passthrough+=("$1"); shift ;;
  esac
done
[[ "$pinned" == 1 ]] || [[ "$rounds" == 1 ]] || { echo "bench.sh: --rounds needs --pinned" >&2; exit 2; }
server_cpu="${BENCH_SERVER_CPU:-0}"
load_cpu="${BENCH_LOAD_CPU:-1}"
if [[ "$pinned" == 1 ]]; then
  command -v taskset >/dev/null || { echo "bench.sh --pinned: taskset is missing (util-linux)" >&2; exit 2; }
  # taskset refuses a CPU this process may not use; say so before building.
  taskset -c "$server_cpu" true && taskset -c "$load_cpu" true \
    || { echo "bench.sh --pinned: CPUs $server_cpu and $load_cpu must both be usable (BENCH_SERVER_CPU, BENCH_LOAD_CPU)" >&2; exit 2; }
  [[ "$server_cpu" != "$load_cpu" ]] || { echo "bench.sh --pinned: the server and the load generator need two different CPUs" >&2; exit 2; }
fi

# The release artifact exactly as deployed (a plain `cargo build` of the server would leave a
# binary without the site at target/release/tether), then the tools (bench/).
bash "$REPO_ROOT/scripts/setup.sh"
export PATH="$REPO_ROOT/end2end/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo leptos build --release --precompress
cargo build --release -p tether-bench --bin tether-load
ulimit -n 65536 2>/dev/null || true
if [[ "$pinned" != 1 ]]; then
  exec ./target/release/tether-load --server-bin target/release/tether --out bench-results.md "${passthrough[@]}"
fi

# --- pinned, side by side ---
[[ -d end2end/node_modules/socket.io ]] || (cd end2end && npm ci --no-audit --no-fund)
out_dir="$REPO_ROOT/target/bench-pinned"
mkdir -p "$out_dir"
results="$out_dir/results.md"
commit="$(git rev-parse --short HEAD)"
dirty="$(git status --porcelain --untracked-files=no | wc -l)"
[[ "$dirty" == 0 ]] || commit="$commit + uncommitted changes in $dirty files"
cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
machine="$(nproc) CPUs ($cpu_model), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
perf_note="fsync + fdatasync calls of the whole server (of its store writer thread in brackets), counted by perf stat's syscall tracepoints over each step's $step_secs s"
command -v perf >/dev/null || perf_note="not counted: perf is not installed"

# One tether-load run, pinned; $1 = node|tether, $2 = the run's table.
run() {
  local which="$1" table="$2" server=target/release/tether
  local -a env=()
  if [[ "$which" == node ]]; then
    server=scripts/bench-node.sh
    env=(TETHER_NODE_REFERENCE=1)
  fi
  env "${env[@]}" taskset -c "$load_cpu" ./target/release/tether-load \
    --server-bin taskset --server-arg -c --server-arg "$server_cpu" --server-arg "$server" \
    --users "$users" --rates "$rates" --step-secs "$step_secs" \
    --count-fsyncs --no-reconnect --out "$table" >/dev/null
}

# The throughput rows of a run's table, as
# "rate delivered p50 p99 server writer load fsyncs writer-fsyncs server-kernel load-kernel"
# (n/a where not counted).
rows() {
  awk -F'|' '$2 ~ /^ *[0-9]+ *$/ {
    split($7, cpu, /[()\/ ]+/)   # " 206 (27) / 35 " -> "", 206, 27, 35
    split($8, fs, /[() ]+/)      # " 224 (190) " -> "", 224, 190; " n/a " -> "", n/a
    if (fs[3] == "") fs[3] = "n/a"
    split($9, k, /[\/ ]+/)       # " 80 / 25 " -> "", 80, 25
    printf "%d %d %s %s %s %s %s %s %s %s %s\n", $2, $3, $4, $5, cpu[2], cpu[3], cpu[4], fs[2], fs[3], k[2], k[3]
  }' "$1"
}

{
  echo "# Pinned, side by side: Tether against the Node tutorial server"
  echo
  echo "- machine: $machine"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $commit"
  echo "- $users users (half send to the other half, one message in flight each), ${step_secs} s per step;"
  echo "  server on CPU $server_cpu, load generator (tether-load) on CPU $load_cpu"
  echo "- server CPU per delivered message (µs, from /proc over the step and its grace period; Tether's"
  echo "  store writer thread in brackets); ratio = Tether / Node; kernel: the system part of that CPU"
  echo "  (/proc stat field 15: system calls, and interrupts and softirqs taken while the process ran"
  echo "  unless the kernel accounts IRQ time apart; a block device's kernel threads are not in it);"
  echo "  latency from send to arrival;"
  echo "  fsyncs/s: $perf_note"
} >"$results"

for ((round = 1; round <= rounds; round++)); do
  node_table="$out_dir/node-$round.md"
  tether_table="$out_dir/tether-$round.md"
  load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
  if ((round % 2 == 1)); then order=(node tether); else order=(tether node); fi
  for which in "${order[@]}"; do
    echo "bench.sh: round $round/$rounds, $which ($users users, rates $rates)" >&2
    run "$which" "$out_dir/$which-$round.md"
  done
  load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
  storm() { sed -n 's/^| connect storm .* | \(.*\) |$/\1/p' "$1"; }
  rss() { sed -n 's/^| server RSS per idle connection | \(.*\) |$/\1/p' "$1"; }
  {
    echo
    echo "## Round $round (${order[0]} first; load average $load_before before, $load_after after)"
    echo
    echo "Connect storm: Node $(storm "$node_table"), Tether $(storm "$tether_table"). RSS per idle connection: Node $(rss "$node_table"), Tether $(rss "$tether_table")."
    echo
    echo "| offered msg/s | server µs/msg: Node | Tether (writer) | ratio | server kernel µs/msg: Node / Tether | p50 / p99 ms: Node | Tether | delivered msg/s: Node / Tether | load generator µs/msg (kernel): Node / Tether | Tether fsyncs/s (writer) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    # join: $1 rate; Node $2-$11, Tether $12-$21, each in rows' order.
    join <(rows "$node_table" | sort -k1,1) <(rows "$tether_table" | sort -k1,1) | sort -n -k1,1 |
      awk '{
        ratio = ($5 > 0) ? sprintf("%.2f", $15 / $5) : "n/a"
        printf "| %d | %s | %s (%s) | %s | %s / %s | %s / %s | %s / %s | %d / %d | %s (%s) / %s (%s) | %s (%s) |\n",
          $1, $5, $15, $16, ratio, $10, $20, $3, $4, $13, $14, $2, $12, $7, $11, $17, $21, $18, $19
      }'
  } >>"$results"
done
cat "$results"
echo
echo "written to ${results#"$REPO_ROOT/"} (each run's own table beside it)"
