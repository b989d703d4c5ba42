#!/usr/bin/env bash
# Runs the whole mesh on this machine until Ctrl-C: `agentmesh dev`, the four
# services in one process, each with its embedded SQLite store in one data
# directory (./data, or AGENTMESH_DATA_DIR) that also holds the generated
# operator and service tokens and the installation's mesh id. Agent URLs on
# loopback and private networks are accepted (dev network mode). With a
# Docker engine, the agent images are built too, so a Docker workspace can be
# created at once. It writes the command line's context `dev` and makes it
# current.
#
# The binaries come from deploy/images/build.sh, the same static build the
# images use, so a first start compiles the dependency tree once; it honours
# CARGO_TARGET_DIR.
#
# Ports, each overridable by its variable:
#   AGENTMESH_REGISTRY_PORT (50051)  AGENTMESH_PROVISIONER_PORT (50052)
#   AGENTMESH_GATEWAY_PORT (50053)   AGENTMESH_SCHEDULER_PORT (50054)
#   AGENTMESH_A2A_PORT (8053)
#   AGENTMESH_METRICS_PORT (9091: registry, then provisioner, gateway and
#   scheduler on the three ports after it)
set -euo pipefail
cd "$(dirname "$0")/../.."

registry_port="${AGENTMESH_REGISTRY_PORT:-50051}"
provisioner_port="${AGENTMESH_PROVISIONER_PORT:-50052}"
gateway_port="${AGENTMESH_GATEWAY_PORT:-50053}"
scheduler_port="${AGENTMESH_SCHEDULER_PORT:-50054}"
a2a_port="${AGENTMESH_A2A_PORT:-8053}"
metrics_port="${AGENTMESH_METRICS_PORT:-9091}"
data="${AGENTMESH_DATA_DIR:-$PWD/data}"

# A port another program holds is a setting to change, said in one line.
for setting in AGENTMESH_REGISTRY_PORT:$registry_port AGENTMESH_PROVISIONER_PORT:$provisioner_port \
  AGENTMESH_GATEWAY_PORT:$gateway_port AGENTMESH_SCHEDULER_PORT:$scheduler_port AGENTMESH_A2A_PORT:$a2a_port \
  AGENTMESH_METRICS_PORT:$metrics_port AGENTMESH_METRICS_PORT:$((metrics_port + 1)) \
  AGENTMESH_METRICS_PORT:$((metrics_port + 2)) AGENTMESH_METRICS_PORT:$((metrics_port + 3)); do
  name="${setting%%:*}" port="${setting#*:}"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "up.sh: port $port is in use; set $name to a free port" >&2
    exit 1
  fi
done

if docker info >/dev/null 2>&1; then
  deploy/images/build.sh --agents-only >/dev/null
fi
bin="$(deploy/images/build.sh --binaries-only)"
echo "the agentmesh command line is $bin/agentmesh; put it on your PATH:"
echo "  export PATH=\"$bin:\$PATH\""
exec "$bin/agentmesh" dev --data-dir "$data" \
  --registry-port "$registry_port" --provisioner-port "$provisioner_port" \
  --gateway-port "$gateway_port" --scheduler-port "$scheduler_port" --a2a-port "$a2a_port" \
  --metrics-port "$metrics_port"
