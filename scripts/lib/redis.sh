# Throwaway Redis servers on free ports, for scripts/test.sh and scripts/scale.sh (sourced, not
# run). Set REDIS_DIR (a directory of their own, removed by stop_redis) first; REDIS_WRAP, an
# array, goes before each redis-server (scale.sh pins them: REDIS_WRAP=(taskset -c 0)).
# Nothing is persisted: --save "" --appendonly no.

USED_PORTS=" "

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

stop_redis() {
  for pidfile in "$REDIS_DIR"/redis.pid "$REDIS_DIR"/cluster-*/redis.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  rm -rf "$REDIS_DIR"
}

wait_for_ping() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  redis-cli -p "$1" ping >/dev/null 2>&1
}

# One standalone Redis; sets REDIS_PORT.
start_redis() {
  distinct_port
  REDIS_PORT="$PICKED"
  ${REDIS_WRAP[@]+"${REDIS_WRAP[@]}"} redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
  wait_for_ping "$REDIS_PORT" || { echo "Redis on port $REDIS_PORT did not start" >&2; return 1; }
}

cluster_ok() { [[ "$(redis-cli -p "$1" cluster info 2>/dev/null)" == *"cluster_state:ok"* ]]; }
cluster_logs() { tail -n 20 "$REDIS_DIR"/cluster-*/redis.log >&2 || true; }

# A Redis Cluster of $1 primaries (each with its cluster bus on a free port of its own); sets
# CLUSTER_NODES (host:port) and CLUSTER_URLS (redis://host:port/).
start_redis_cluster() {
  CLUSTER_URLS=()
  CLUSTER_NODES=()
  local i port bus node created
  for i in $(seq 1 "$1"); do
    distinct_port
    port="$PICKED"
    distinct_port
    bus="$PICKED"
    mkdir -p "$REDIS_DIR/cluster-$i"
    ${REDIS_WRAP[@]+"${REDIS_WRAP[@]}"} redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$REDIS_DIR/cluster-$i/nodes.conf" \
      --dir "$REDIS_DIR/cluster-$i" --daemonize yes --pidfile "$REDIS_DIR/cluster-$i/redis.pid" \
      --logfile "$REDIS_DIR/cluster-$i/redis.log"
    CLUSTER_NODES+=("127.0.0.1:$port")
    CLUSTER_URLS+=("redis://127.0.0.1:$port/")
  done
  for node in "${CLUSTER_NODES[@]}"; do
    wait_for_ping "${node##*:}" || { echo "Redis Cluster node $node did not start" >&2; cluster_logs; return 1; }
  done
  if ! created="$(redis-cli --cluster create "${CLUSTER_NODES[@]}" --cluster-yes 2>&1)"; then
    echo "$created" >&2
    cluster_logs
    return 1
  fi
  for node in "${CLUSTER_NODES[@]}"; do
    for _ in $(seq 1 100); do
      cluster_ok "${node##*:}" && break
      sleep 0.1
    done
    cluster_ok "${node##*:}" || { echo "the Redis Cluster did not come up" >&2; cluster_logs; return 1; }
  done
}
