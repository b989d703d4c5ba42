#!/usr/bin/env bash
# Start-up of `agentmesh dev` (the four services in one process) against
# starting the four service binaries at once, each from an empty data
# directory to all four SERVING. One prober times both: `agentmesh status`,
# which exits 0 only when every service answers SERVING, run back to back
# from the moment the mesh is started. Both use the static release build
# deploy/images/build.sh makes and, with a Docker engine, the same runtimes
# (Docker, local processes, external agents).
#
# Ports 61051-61054 and 61080, above Linux's ephemeral range, so that no
# probe's own connection can hold one when the next run binds it.
#
# Usage: tools/loadtest/run-dev-startup-bench.sh   (knob: RUNS, default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(deploy/images/build.sh --binaries-only 2>/dev/null)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$work"' EXIT
export AGENTMESH_CONFIG="$work/config.toml"
"$bin/agentmesh" config set-context bench --registry http://127.0.0.1:61051 --provisioner http://127.0.0.1:61052 \
  --gateway http://127.0.0.1:61053 --scheduler http://127.0.0.1:61054 >/dev/null

now() { date +%s%N; }
# Seconds from $1 (ns) until `agentmesh status` first succeeds, then the
# time of one more `status` against the serving mesh: the prober's own
# resolution, the nearest limit of the figure. Fails if one of the
# processes $2… ends first.
until_serving() {
  local began=$1
  shift
  until "$bin/agentmesh" --context bench status >/dev/null 2>&1; do
    kill -0 "$@" 2>/dev/null || { echo "a service ended before serving" >&2; exit 1; }
  done
  local served probed
  served=$(now)
  "$bin/agentmesh" --context bench status >/dev/null 2>&1
  probed=$(now)
  echo "$(echo "scale=3; ($served - $began) / 1000000000" | bc) $(echo "scale=3; ($probed - $served) / 1000000000" | bc)"
}

dev() {
  local data="$work/dev-$1" began
  began=$(now)
  "$bin/agentmesh" dev --data-dir "$data" --context-name "dev-$1" \
    --registry-port 61051 --provisioner-port 61052 --gateway-port 61053 --scheduler-port 61054 \
    --a2a-port 61080 >/dev/null 2>&1 &
  local pid=$!
  until_serving "$began" "$pid"
  kill -INT "$pid"
  wait "$pid" || true
}

four() {
  local data="$work/four-$1" began pids=()
  began=$(now)
  mkdir -p "$data"
  "$bin/agentmesh-registry" --listen 127.0.0.1:61051 --data-dir "$data" >/dev/null 2>&1 &
  pids+=($!)
  AGENTMESH_PROVISIONER__REGISTRY_ADDRESS=http://127.0.0.1:61051 \
    "$bin/agentmesh-provisioner" --listen 127.0.0.1:61052 --data-dir "$data" >/dev/null 2>&1 &
  pids+=($!)
  AGENTMESH_GATEWAY__REGISTRY_ADDRESS=http://127.0.0.1:61051 \
    AGENTMESH_GATEWAY__PROVISIONER_ADDRESS=http://127.0.0.1:61052 AGENTMESH_GATEWAY__A2A_LISTEN=127.0.0.1:61080 \
    "$bin/agentmesh-a2a-gateway" --listen 127.0.0.1:61053 --data-dir "$data" >/dev/null 2>&1 &
  pids+=($!)
  AGENTMESH_SCHEDULER__REGISTRY_ADDRESS=http://127.0.0.1:61051 \
    AGENTMESH_SCHEDULER__GATEWAY_ADDRESS=http://127.0.0.1:61053 \
    "$bin/agentmesh-scheduler" --listen 127.0.0.1:61054 --data-dir "$data" >/dev/null 2>&1 &
  pids+=($!)
  until_serving "$began" "${pids[@]}"
  kill -TERM "${pids[@]}"
  wait "${pids[@]}" || true
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "run  agentmesh-dev (s)  four binaries (s)  one status probe (s)"
: >"$work/dev" && : >"$work/four" && : >"$work/probe"
for run in $(seq "${RUNS:-20}"); do
  read -r a probe_a < <(dev "$run") || exit 1
  read -r b probe_b < <(four "$run") || exit 1
  echo "$a" >>"$work/dev" && echo "$b" >>"$work/four" && printf '%s\n%s\n' "$probe_a" "$probe_b" >>"$work/probe"
  echo "$run  $a  $b  $probe_a $probe_b"
done
a=$(median <"$work/dev") b=$(median <"$work/four") p=$(median <"$work/probe")
echo "median: agentmesh dev $a s, four binaries $b s (ratio $(echo "scale=2; $a / $b" | bc)), one probe $p s"
