#!/usr/bin/env bash
# Creates the installation's secrets in the `agentmesh` namespace, once: a
# second run leaves existing ones alone. Nothing is written to disk.
#   agentmesh-installation  operator.token, service.token and mesh-id, fresh
#                           random values (the services' data directory)
#   agentmesh-database      host, port, user, password of the PostgreSQL the
#                           services use: the dev overlay's own (a random
#                           password), or --database HOST PORT USER with the
#                           password in PGPASSWORD (the production overlay)
#
# Usage: deploy/kubernetes/secrets.sh [--database HOST PORT USER]
# Uses kubectl's current context (or KUBECONFIG); the namespace is created if needed.
set -euo pipefail

random() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
exists() { kubectl -n agentmesh get secret "$1" >/dev/null 2>&1; }

kubectl create namespace agentmesh --dry-run=client -o yaml | kubectl apply -f - >/dev/null

if exists agentmesh-installation; then
  echo "agentmesh-installation exists; kept"
else
  kubectl -n agentmesh create secret generic agentmesh-installation \
    --from-literal=operator.token="$(random 32)" \
    --from-literal=service.token="$(random 32)" \
    --from-literal=mesh-id="$(random 6)" >/dev/null
  echo "agentmesh-installation created"
fi

if exists agentmesh-database; then
  echo "agentmesh-database exists; kept"
elif [ "${1:-}" = --database ]; then
  [ $# -eq 4 ] || { echo "usage: $0 --database HOST PORT USER (password in PGPASSWORD)" >&2; exit 2; }
  kubectl -n agentmesh create secret generic agentmesh-database --from-literal=host="$2" \
    --from-literal=port="$3" --from-literal=user="$4" --from-literal=password="${PGPASSWORD:?set PGPASSWORD}" >/dev/null
  echo "agentmesh-database created for $4@$2:$3"
else
  kubectl -n agentmesh create secret generic agentmesh-database --from-literal=host=postgres \
    --from-literal=port=5432 --from-literal=user=agentmesh --from-literal=password="$(random 24)" >/dev/null
  echo "agentmesh-database created for the dev overlay's PostgreSQL"
fi
