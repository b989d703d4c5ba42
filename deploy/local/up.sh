#!/usr/bin/env bash
# Builds and runs the agentmesh services on this machine, each with its
# embedded SQLite store under ./data, until Ctrl-C. Agent URLs on loopback
# and private networks are allowed (dev network mode). With a Docker engine,
# the echo agent image is built too, so a workspace can be created at once.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --bin agentmesh-registry --bin agentmesh-provisioner --bin agentmesh-a2a-gateway --bin agentmesh-scheduler
data="${AGENTMESH_DATA_DIR:-$PWD/data}"
mkdir -p "$data/registry" "$data/provisioner" "$data/gateway" "$data/scheduler"

# Containers reach the registry through the Docker bridge's gateway, so it
# listens on every interface; without Docker, loopback is enough.
registry_host=127.0.0.1
listen_host=127.0.0.1
if docker info >/dev/null 2>&1; then
  deploy/images/build.sh
  # Some engines leave the default bridge's gateway out of its IPAM config;
  # the host's docker0 address is the same thing.
  registry_host=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
  [ -n "$registry_host" ] || registry_host=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
  listen_host=0.0.0.0
fi

# One operator token for every service, and one token the services present
# to each other; generated once.
token() {
  [ -s "$1" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1")
  cat "$1"
}
operator_token=$(token "$data/operator.token")
service_token=$(token "$data/service.token")

cat >"$data/registry.toml" <<TOML
listen = "$listen_host:50051"
data_dir = "$data/registry"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[registry]
network_mode = "dev"
TOML
cat >"$data/provisioner.toml" <<TOML
listen = "127.0.0.1:50052"
data_dir = "$data/provisioner"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[provisioner]
registry_address = "http://127.0.0.1:50051"
registry_token = "$service_token"
workload_registry_address = "http://$registry_host:50051"
TOML

cat >"$data/gateway.toml" <<TOML
listen = "127.0.0.1:50053"
data_dir = "$data/gateway"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[gateway]
a2a_listen = "127.0.0.1:8053"
registry_address = "http://127.0.0.1:50051"
provisioner_address = "http://127.0.0.1:50052"
service_token = "$service_token"
network_mode = "dev"
TOML

cat >"$data/scheduler.toml" <<TOML
listen = "127.0.0.1:50054"
data_dir = "$data/scheduler"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[scheduler]
registry_address = "http://127.0.0.1:50051"
gateway_address = "http://127.0.0.1:50053"
service_token = "$service_token"
TOML

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
./target/release/agentmesh-registry --config "$data/registry.toml" &
pids+=($!)
./target/release/agentmesh-provisioner --config "$data/provisioner.toml" &
pids+=($!)
./target/release/agentmesh-a2a-gateway --config "$data/gateway.toml" &
pids+=($!)
./target/release/agentmesh-scheduler --config "$data/scheduler.toml" &
pids+=($!)

echo "registry on :50051, provisioner on 127.0.0.1:50052, gateway on 127.0.0.1:50053 (gRPC) and http://127.0.0.1:8053/a2a/<workspace> (A2A JSON-RPC), scheduler on 127.0.0.1:50054"
echo "operator token (authorization: Bearer …): $data/operator.token"
wait -n
