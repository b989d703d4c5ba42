#!/usr/bin/env bash
# Runs the whole mesh on this machine until Ctrl-C: the four services as
# local processes, sharing one data directory (./data, or AGENTMESH_DATA_DIR)
# that holds their embedded SQLite stores, the generated operator and service
# tokens and the installation's mesh id. Agent URLs on loopback and private
# networks are accepted (dev network mode). With a Docker engine, the agent
# images are built too, so a Docker workspace can be created at once.
#
# The binaries come from deploy/images/build.sh, the same static build the
# images use, so a first start compiles the dependency tree once; it honours
# CARGO_TARGET_DIR.
#
# Ports, each overridable by its variable:
#   AGENTMESH_REGISTRY_PORT (50051)  AGENTMESH_PROVISIONER_PORT (50052)
#   AGENTMESH_GATEWAY_PORT (50053)   AGENTMESH_SCHEDULER_PORT (50054)
#   AGENTMESH_A2A_PORT (8053)
set -euo pipefail
cd "$(dirname "$0")/../.."

registry_port="${AGENTMESH_REGISTRY_PORT:-50051}"
provisioner_port="${AGENTMESH_PROVISIONER_PORT:-50052}"
gateway_port="${AGENTMESH_GATEWAY_PORT:-50053}"
scheduler_port="${AGENTMESH_SCHEDULER_PORT:-50054}"
a2a_port="${AGENTMESH_A2A_PORT:-8053}"
data="${AGENTMESH_DATA_DIR:-$PWD/data}"

# A port another program holds is a setting to change, said in one line.
for setting in AGENTMESH_REGISTRY_PORT:$registry_port AGENTMESH_PROVISIONER_PORT:$provisioner_port \
  AGENTMESH_GATEWAY_PORT:$gateway_port AGENTMESH_SCHEDULER_PORT:$scheduler_port AGENTMESH_A2A_PORT:$a2a_port; do
  name="${setting%%:*}" port="${setting#*:}"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "up.sh: port $port is in use; set $name to a free port" >&2
    exit 1
  fi
done

# Containers reach the registry through the Docker bridge's gateway, so it
# listens on every interface; without Docker, loopback is enough.
registry_host=127.0.0.1
listen_host=127.0.0.1
if docker info >/dev/null 2>&1; then
  deploy/images/build.sh --agents-only >/dev/null
  # Some engines leave the default bridge's gateway out of its IPAM config;
  # the host's docker0 address is the same thing.
  registry_host=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
  [ -n "$registry_host" ] || registry_host=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
  listen_host=0.0.0.0
fi
bin="$(deploy/images/build.sh --binaries-only)"
mkdir -p "$data"

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
start() { # <binary> <port> <listen host> [VARIABLE=value...]
  local binary="$1" port="$2" host="$3"
  shift 3
  env "$@" "$bin/agentmesh-$binary" --listen "$host:$port" --data-dir "$data" &
  pids+=($!)
}
start registry "$registry_port" "$listen_host" AGENTMESH_REGISTRY__NETWORK_MODE=dev
start provisioner "$provisioner_port" 127.0.0.1 \
  AGENTMESH_PROVISIONER__REGISTRY_ADDRESS="http://127.0.0.1:$registry_port" \
  AGENTMESH_PROVISIONER__WORKLOAD_REGISTRY_ADDRESS="http://$registry_host:$registry_port"
start a2a-gateway "$gateway_port" 127.0.0.1 \
  AGENTMESH_GATEWAY__A2A_LISTEN="127.0.0.1:$a2a_port" \
  AGENTMESH_GATEWAY__REGISTRY_ADDRESS="http://127.0.0.1:$registry_port" \
  AGENTMESH_GATEWAY__PROVISIONER_ADDRESS="http://127.0.0.1:$provisioner_port" \
  AGENTMESH_GATEWAY__NETWORK_MODE=dev
start scheduler "$scheduler_port" 127.0.0.1 \
  AGENTMESH_SCHEDULER__REGISTRY_ADDRESS="http://127.0.0.1:$registry_port" \
  AGENTMESH_SCHEDULER__GATEWAY_ADDRESS="http://127.0.0.1:$gateway_port"

cat <<EOF
registry     127.0.0.1:$registry_port (gRPC)
provisioner  127.0.0.1:$provisioner_port (gRPC)
gateway      127.0.0.1:$gateway_port (gRPC), http://127.0.0.1:$a2a_port/a2a/<workspace id> (A2A)
scheduler    127.0.0.1:$scheduler_port (gRPC)
operator token (authorization: Bearer …): $data/operator.token
EOF
wait -n
