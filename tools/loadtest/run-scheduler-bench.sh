#!/usr/bin/env bash
# Scheduler benchmark (docs/benchmarks.md): fire lag with 100,000 schedules
# loaded and 1,000 due in the same second, and memory per schedule. Builds
# in release mode, then starts on loopback, each with a temp dir under $OUT:
# the registry and the gateway (SQLite stores, dev network mode), one echo
# agent (no concurrency limit, no delay) and the scheduler, on SQLite in
# $OUT, or on PostgreSQL when DATABASE_URL=postgres://... names a server: a
# throwaway database is created there and dropped at the end. Then
# `agentmesh-loadtest schedule-lag`:
#
#   load    SCHEDULES - DUE schedules, once a year ("0 0 1 1 *"), spread
#           over WORKSPACES external workspaces of the echo agent (online,
#           heartbeating, max_concurrent_tasks 10000), CONCURRENCY in
#           flight; the scheduler's VmRSS before and after.
#   rounds  DUE schedules (overlap QUEUE) at one second T about LEAD seconds
#           ahead; after T, the run history until every run has an outcome:
#           fire lag (fired_at - scheduled_at), finish lag, send time. Then
#           the direct burst, the nearest limit: DUE SendMessage calls from
#           the client through the gateway's gRPC binding, released at one
#           instant, MAX_IN_FLIGHT at a time (the scheduler's own limit).
#           The round's schedules are deleted before the next.
#
# Everything started here is stopped at the end, on failure too.
#
# Knobs (environment): SCHEDULES (100000), DUE (1000), WORKSPACES (100),
# ROUNDS (3), CONCURRENCY (64), LEAD (30 s), MAX_IN_FLIGHT (512, the
# scheduler's max_in_flight and the direct burst's), CLAIM_BATCH (200),
# MAX_PER_WORKSPACE (200000, the scheduler's max_schedules_per_workspace),
# DATABASE_URL (empty: SQLite), SCHEDULER_LOG (info), ports REGISTRY_PORT
# (50181), GATEWAY_GRPC_PORT (50183), GATEWAY_PORT (8183), SCHEDULER_PORT
# (50184), AGENT_PORT (8185), SKIP_BUILD=1, OUT (results directory),
# QUIET_CORES and QUIET_WAIT (first wait up to QUIET_WAIT seconds for the
# machine to use less than QUIET_CORES cores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

SCHEDULES=${SCHEDULES:-100000}
DUE=${DUE:-1000}
WORKSPACES=${WORKSPACES:-100}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-64}
LEAD=${LEAD:-30}
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-512}
CLAIM_BATCH=${CLAIM_BATCH:-200}
MAX_PER_WORKSPACE=${MAX_PER_WORKSPACE:-200000}
DATABASE_URL=${DATABASE_URL:-}
SCHEDULER_LOG=${SCHEDULER_LOG:-info}
REGISTRY_PORT=${REGISTRY_PORT:-50181}
GATEWAY_GRPC_PORT=${GATEWAY_GRPC_PORT:-50183}
GATEWAY_PORT=${GATEWAY_PORT:-8183}
SCHEDULER_PORT=${SCHEDULER_PORT:-50184}
AGENT_PORT=${AGENT_PORT:-8185}
QUIET_CORES=${QUIET_CORES:-0.3}
QUIET_WAIT=${QUIET_WAIT:-300}
OUT=${OUT:-$(mktemp -d /tmp/agentmesh-scheduler-bench.XXXXXX)}
mkdir -p "$OUT"

case $DATABASE_URL in
  "") backend=sqlite ;;
  postgres://* | postgresql://*)
    backend=postgres
    if ! command -v psql >/dev/null; then
      echo "DATABASE_URL is PostgreSQL: psql is needed to create the throwaway database" >&2
      exit 2
    fi
    ;;
  *)
    echo "DATABASE_URL must be empty (SQLite) or postgres://..." >&2
    exit 2
    ;;
esac

if [[ ${SKIP_BUILD:-} != 1 ]]; then
  cargo build --release -p agentmesh-a2a-gateway -p agentmesh-registry -p agentmesh-echo-agent \
    -p agentmesh-scheduler -p agentmesh-loadtest
fi
release_binaries

bench_db=
drop_bench_db() {
  if [[ -n $bench_db ]]; then
    psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $bench_db"
  fi
}
cleanup_on_exit drop_bench_db

require_free_ports "$REGISTRY_PORT" "$GATEWAY_GRPC_PORT" "$GATEWAY_PORT" "$SCHEDULER_PORT" "$AGENT_PORT"

new_tokens
mkdir -p "$OUT/scheduler"

scheduler_database=
if [[ $backend == postgres ]]; then
  bench_db=agentmesh_scheduler_bench_$(random_hex 4)
  psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $bench_db"
  # The same server and credentials, the new database in place of the
  # URL's own (and its query string kept).
  base=${DATABASE_URL%%\?*}
  query=${DATABASE_URL#"$base"}
  scheduler_database="database_url = \"${base%/*}/$bench_db$query\""
fi

cat >"$OUT/scheduler.toml" <<TOML
listen = "127.0.0.1:$SCHEDULER_PORT"
data_dir = "$OUT/scheduler"
$scheduler_database
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[scheduler]
registry_address = "http://127.0.0.1:$REGISTRY_PORT"
gateway_address = "http://127.0.0.1:$GATEWAY_GRPC_PORT"
service_token = "$service_token"
max_schedules_per_workspace = $MAX_PER_WORKSPACE
max_in_flight = $MAX_IN_FLIGHT
claim_batch = $CLAIM_BATCH
TOML

start_registry 127.0.0.1
registry_pid=$!
start_echo_agent agent "$AGENT_PORT" 0
agent_pid=$!
wait_for_port "$REGISTRY_PORT"
start_gateway
for port in "$AGENT_PORT" "$GATEWAY_GRPC_PORT" "$GATEWAY_PORT"; do
  wait_for_port "$port"
done
RUST_LOG=$SCHEDULER_LOG launch "$OUT/scheduler.log" "$SCHEDULER" --config "$OUT/scheduler.toml"
scheduler_pid=$!
wait_for_port "$SCHEDULER_PORT"

{
  echo "results in $OUT; scheduler on $backend; $(nproc) CPU cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo |
    head -n 1)) shared by the client and every server; Linux $(uname -r)"
} | tee "$OUT/summary.txt"
wait_for_quiet
"$LOADTEST" schedule-lag --registry "http://127.0.0.1:$REGISTRY_PORT" --token-file "$OUT/operator.token" \
  --scheduler "http://127.0.0.1:$SCHEDULER_PORT" --gateway-grpc "http://127.0.0.1:$GATEWAY_GRPC_PORT" \
  --agent "http://127.0.0.1:$AGENT_PORT/" --scheduler-pid "$scheduler_pid" \
  --cpu "gateway=$gateway_pid" --cpu "registry=$registry_pid" --cpu "agent=$agent_pid" \
  --schedules "$SCHEDULES" --due "$DUE" --workspaces "$WORKSPACES" --rounds "$ROUNDS" \
  --concurrency "$CONCURRENCY" --burst-concurrency "$MAX_IN_FLIGHT" --lead-secs "$LEAD" \
  --label "$backend" --results-file "$OUT/results.jsonl" | tee "$OUT/schedule-lag.out"
sed -n '/^== summary/,$p' "$OUT/schedule-lag.out" >>"$OUT/summary.txt"

# What the store holds once the rounds' schedules are deleted again.
if [[ $backend == postgres ]]; then
  size=$(psql "$DATABASE_URL" -At -c "SELECT pg_size_pretty(pg_database_size('$bench_db'))")
else
  size=$(du -ch "$OUT/scheduler"/scheduler.db* | tail -n 1 | cut -f 1)
fi
echo "scheduler database after the run ($((SCHEDULES - DUE)) schedules and no runs left): $size" |
  tee -a "$OUT/summary.txt"
echo
echo "== everything ($OUT/summary.txt; JSON lines in $OUT/results.jsonl; service logs beside)"
cat "$OUT/summary.txt"
