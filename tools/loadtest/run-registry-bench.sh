#!/usr/bin/env bash
# Registry heartbeat benchmark (docs/benchmarks.md): builds in release mode,
# then for each backend starts a server on loopback, runs the load client
# against it at each concurrency level, and stops the server.
#
#   echo      the bare tonic echo server: the ceiling for one unary RPC
#   sqlite    agentmesh-registry on a fresh SQLite store under $OUT
#   postgres  agentmesh-registry on a freshly created PostgreSQL database
#   sqlite+metrics, postgres+metrics  the same with Prometheus metrics served
#             (and scraped every second): the instrumentation's cost
#
# Knobs (environment): WORKSPACES, CONCURRENCY (space separated), DURATION,
# WARMUP (seconds), RATE (optional: one more open-loop run per backend at
# this many heartbeats/s), BACKENDS, POSTGRES_URL (an existing database to
# connect to for creating $BENCH_DB), BENCH_DB, OUT (results directory),
# QUIET_CORES and QUIET_WAIT (before each run, wait up to QUIET_WAIT seconds
# for the rest of the machine to use less than QUIET_CORES cores).
#
# Each line also reports the CPU the server, the client and everything else
# on the machine used during the measured window: with two cores shared by
# client and server, anything else running skews the figures.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

WORKSPACES=${WORKSPACES:-10000}
CONCURRENCY=${CONCURRENCY:-"64 256"}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
RATE=${RATE:-}
BACKENDS=${BACKENDS:-"echo sqlite postgres"}
POSTGRES_URL=${POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
BENCH_DB=${BENCH_DB:-agentmesh_bench}
QUIET_CORES=${QUIET_CORES:-0.25}
QUIET_WAIT=${QUIET_WAIT:-600}
OUT=${OUT:-$(mktemp -d /tmp/agentmesh-bench.XXXXXX)}
mkdir -p "$OUT"

cargo build --release -p agentmesh-loadtest -p agentmesh-registry
release_binaries
cleanup_on_exit

wait_for_file() {
  for _ in $(seq 1 200); do
    [[ -s $1 ]] && return 0
    sleep 0.1
  done
  echo "$1 never appeared" >&2
  return 1
}

# measure NAME ARGS...: one measured run of the load client against the
# current server; also samples the server's CPU over the measured window.
measure() {
  local name=$1
  shift
  wait_for_quiet
  "$LOADTEST" heartbeats --label "$name" --workspaces "$WORKSPACES" \
    --warmup-secs "$WARMUP" --duration-secs "$DURATION" "$@" >"$OUT/$name.out" &
  local client=$!
  sleep "$WARMUP"
  local server0 client0 machine0 server1 client1 machine1
  server0=$(cpu_ticks "$server_pid") client0=$(cpu_ticks "$client") machine0=$(machine_ticks)
  sleep "$DURATION"
  server1=$(cpu_ticks "$server_pid") client1=$(cpu_ticks "$client") machine1=$(machine_ticks)
  wait "$client"
  local server_cores other_cores
  server_cores=$(cores $((server1 - server0)) "$DURATION")
  # Everything else: the kernel's own work, PostgreSQL's backends, other jobs.
  other_cores=$(cores $((machine1 - machine0 - (server1 - server0) - (client1 - client0))) "$DURATION")
  head -n -1 "$OUT/$name.out" | sed "s/)\$/, server CPU $server_cores cores, rest of machine $other_cores cores)/" |
    tee -a "$OUT/summary.txt"
  tail -n 1 "$OUT/$name.out" |
    sed "s/}\$/,\"server_cpu_cores\":$server_cores,\"other_cpu_cores\":$other_cores}/" >>"$OUT/results.jsonl"
}

# runs BACKEND ARGS...: every concurrency level, then the open-loop run.
runs() {
  local backend=$1
  shift
  for c in $CONCURRENCY; do
    measure "$backend-c$c" --concurrency "$c" "$@"
  done
  if [[ -n $RATE ]]; then
    local c=${CONCURRENCY##* }
    measure "$backend-rate$RATE" --concurrency "$c" --rate "$RATE" "$@"
  fi
}

# registry BACKEND PORT DATABASE_URL [METRICS_PORT]: starts the registry
# (serving metrics on METRICS_PORT, scraped every second, when given),
# creates the workspaces, runs.
registry() {
  local backend=$1 port=$2 url=$3 metrics=${4:-}
  local data=$OUT/$backend-data
  launch "$OUT/$backend.log" env AGENTMESH_METRICS_LISTEN="${metrics:+127.0.0.1:$metrics}" \
    "$REGISTRY" --listen "127.0.0.1:$port" --data-dir "$data" --database-url "$url"
  server_pid=$!
  if [[ -n $metrics ]]; then
    wait_for_port "$metrics"
    scrape_every_second "$metrics"
  fi
  wait_for_file "$data/operator.token"
  wait_for_port "$port"
  local common=(--target "http://127.0.0.1:$port" --token-file "$data/operator.token" --workspaces-file "$data/workspaces.txt")
  "$LOADTEST" heartbeats "${common[@]}" --workspaces "$WORKSPACES" --setup-only 2>&1 | tail -n 1 | tee -a "$OUT/summary.txt"
  runs "$backend" "${common[@]}"
  stop_all
}

echo "results in $OUT; $(nproc) CPU cores shared by client and server"
for backend in $BACKENDS; do
  case $backend in
    echo)
      launch "$OUT/echo.log" "$LOADTEST" echo-server --listen 127.0.0.1:50151
      server_pid=$!
      wait_for_port 50151
      runs echo --target http://127.0.0.1:50151 --no-setup
      stop_all
      ;;
    sqlite)
      registry sqlite 50152 "sqlite://$OUT/sqlite-data/registry.db"
      ;;
    sqlite+metrics)
      registry sqlite+metrics 50154 "sqlite://$OUT/sqlite+metrics-data/registry.db" 50164
      ;;
    postgres | postgres+metrics)
      psql -q "$POSTGRES_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"
      if [[ $backend == postgres ]]; then
        registry postgres 50153 "${POSTGRES_URL%/*}/$BENCH_DB"
      else
        registry postgres+metrics 50155 "${POSTGRES_URL%/*}/$BENCH_DB" 50165
      fi
      ;;
    *)
      echo "unknown backend $backend (echo, sqlite, postgres, sqlite+metrics, postgres+metrics)" >&2
      exit 2
      ;;
  esac
done
echo
echo "== summary ($OUT/summary.txt, JSON lines in $OUT/results.jsonl)"
cat "$OUT/summary.txt"
