#!/usr/bin/env bash
# Builds and runs every agentmesh service on this machine, each with its
# embedded SQLite store under ./data, until Ctrl-C. Agent URLs on loopback
# and private networks are allowed (dev network mode).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --bin agentmesh-registry
mkdir -p data
export AGENTMESH_DATA_DIR="${AGENTMESH_DATA_DIR:-$PWD/data}"
export AGENTMESH_REGISTRY__NETWORK_MODE="${AGENTMESH_REGISTRY__NETWORK_MODE:-dev}"

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
AGENTMESH_LISTEN="${AGENTMESH_REGISTRY_LISTEN:-127.0.0.1:50051}" ./target/release/agentmesh-registry &
pids+=($!)

echo "registry on ${AGENTMESH_REGISTRY_LISTEN:-127.0.0.1:50051}; operator token in $AGENTMESH_DATA_DIR/operator.token"
wait -n
