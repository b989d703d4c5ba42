#!/usr/bin/env bash
# Provisioner benchmark (docs/benchmarks.md): builds in release mode and the
# echo agent image, creates a Docker bridge network, starts the registry on
# that network's gateway (so containers reach it) and the provisioner on
# loopback, each on a fresh SQLite store under $OUT, then runs the load
# client's `provision` subcommand:
#
#   create→online   CreateWorkspace on the provisioner, and `docker run -d` of
#                   the same image on the same network with the environment
#                   the agent needs to register (a record made with the
#                   registry's CreateWorkspace, issue_token), each timed until
#                   the registry's WatchEvents reports ONLINE; interleaved
#                   round by round. A third arm, docker-flags, adds to
#                   `docker run` what the provisioner's container gets (init,
#                   the default tier's limits, a volume).
#   reconciliation  `docker kill` of each provisioner workload once online
#                   (restart policy NEVER) until WatchEvents reports OFFLINE.
#
# Everything is removed at the end: containers, volumes, the network, the
# services.
#
# Knobs (environment): RUNS (measured rounds, 20), WARMUP (1), ARMS
# (provisioner,docker,docker-flags), PAUSE_MS (after each clean-up, 500),
# REGISTRY_PORT (50161), PROVISIONER_PORT (50162), SKIP_IMAGE_BUILD=1 (use
# the agentmesh/echo-agent:dev already on the engine), OUT (results
# directory), QUIET_CORES and QUIET_WAIT (before measuring, wait up to
# QUIET_WAIT seconds for the machine to use less than QUIET_CORES cores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-1}
ARMS=${ARMS:-provisioner,docker,docker-flags}
PAUSE_MS=${PAUSE_MS:-500}
REGISTRY_PORT=${REGISTRY_PORT:-50161}
PROVISIONER_PORT=${PROVISIONER_PORT:-50162}
QUIET_CORES=${QUIET_CORES:-0.3}
QUIET_WAIT=${QUIET_WAIT:-120}
OUT=${OUT:-$(mktemp -d /tmp/agentmesh-provisioner-bench.XXXXXX)}
mkdir -p "$OUT"
IMAGE=agentmesh/echo-agent:dev

cargo build --release -p agentmesh-loadtest -p agentmesh-registry -p agentmesh-provisioner
release_binaries
if [[ ${SKIP_IMAGE_BUILD:-} != 1 ]]; then
  deploy/images/build.sh >/dev/null
fi
docker image inspect "$IMAGE" >/dev/null

# One id names the network, the mesh (stamped on the provisioner's
# containers and volumes) and the label on the `docker run` containers, so
# clean-up touches nothing else on a shared engine.
run_id=$(random_hex 4)
network=agentmesh-bench-$run_id
mesh_id=bench-$run_id
bench_label=dev.agentmesh.bench

remove_docker_objects() {
  local containers volumes
  containers=$(docker ps -aq --filter "label=dev.agentmesh/mesh-id=$mesh_id"
    docker ps -aq --filter "label=$bench_label=$run_id")
  [[ -z $containers ]] || docker rm -f -v $containers >/dev/null || true
  volumes=$(docker volume ls -q --filter "label=dev.agentmesh/mesh-id=$mesh_id")
  [[ -z $volumes ]] || docker volume rm -f $volumes >/dev/null || true
  docker network rm "$network" >/dev/null 2>&1 || true
}
cleanup_on_exit remove_docker_objects

docker network create --label "$bench_label=$run_id" "$network" >/dev/null
gateway=$(docker network inspect "$network" --format '{{(index .IPAM.Config 0).Gateway}}')

# The engine's daemons, whose CPU the creates cost too.
engine_ticks() {
  local total=0 pid
  for pid in $(pgrep -x dockerd; pgrep -x containerd); do
    # Either may be gone by now.
    total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

new_tokens
mkdir -p "$OUT/provisioner"
cat >"$OUT/provisioner.toml" <<TOML
listen = "127.0.0.1:$PROVISIONER_PORT"
data_dir = "$OUT/provisioner"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[provisioner]
mesh_id = "$mesh_id"
registry_address = "http://$gateway:$REGISTRY_PORT"
registry_token = "$service_token"
workload_registry_address = "http://$gateway:$REGISTRY_PORT"
[[provisioner.runtimes]]
kind = "docker"
name = "docker:bench"
network = "$network"
TOML

start_registry "$gateway"
registry_pid=$!
wait_for_port "$REGISTRY_PORT" "$gateway"
launch "$OUT/provisioner.log" "$PROVISIONER" --config "$OUT/provisioner.toml"
provisioner_pid=$!
wait_for_port "$PROVISIONER_PORT"

echo "results in $OUT; $(nproc) CPU cores; $(docker version --format 'Docker {{.Server.Version}}')"
wait_for_quiet
start=$(date +%s.%N)
registry0=$(cpu_ticks "$registry_pid") provisioner0=$(cpu_ticks "$provisioner_pid")
engine0=$(engine_ticks) machine0=$(machine_ticks)
"$LOADTEST" provision --registry "http://$gateway:$REGISTRY_PORT" --provisioner "http://127.0.0.1:$PROVISIONER_PORT" \
  --token-file "$OUT/operator.token" --image "$IMAGE" --network "$network" --runs "$RUNS" --warmup "$WARMUP" \
  --arms "$ARMS" --pause-ms "$PAUSE_MS" --run-id "$run_id" --bench-label "$bench_label" \
  --runs-file "$OUT/runs.jsonl" >"$OUT/provision.out"
registry1=$(cpu_ticks "$registry_pid") provisioner1=$(cpu_ticks "$provisioner_pid")
engine1=$(engine_ticks) machine1=$(machine_ticks)
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

head -n -1 "$OUT/provision.out" >"$OUT/summary.txt"
echo "wall time ${elapsed} s; average CPU over it: registry $(cores $((registry1 - registry0)) "$elapsed")," \
  "provisioner $(cores $((provisioner1 - provisioner0)) "$elapsed"), dockerd+containerd" \
  "$(cores $((engine1 - engine0)) "$elapsed"), whole machine $(cores $((machine1 - machine0)) "$elapsed") cores" \
  >>"$OUT/summary.txt"
tail -n 1 "$OUT/provision.out" >"$OUT/results.json"
echo
echo "== summary ($OUT/summary.txt; every run in $OUT/runs.jsonl, JSON in $OUT/results.json)"
cat "$OUT/summary.txt"
