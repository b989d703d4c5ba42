#!/usr/bin/env bash
# Builds, from Debian's packages only, stand-ins for the two third-party
# images the Compose stack runs, for machines that reach no image registry:
#   agentmesh/debian:bookworm  a minimal Debian (debootstrap --variant=minbase, docker import)
#   agentmesh/postgres:15      PostgreSQL 15, configured like the official postgres image
#                              (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA)
#   agentmesh/haproxy:2.6      HAProxy, run like the official haproxy image
# and records them in deploy/compose/.env (AGENTMESH_POSTGRES_IMAGE,
# AGENTMESH_BALANCER_IMAGE), which docker-compose reads. Needs root and
# debootstrap (apt-get install debootstrap); containers built from the base
# reach Debian's mirror for apt-get. Idempotent.
#
# Usage: deploy/images/debian/build.sh [--if-needed]
#   --if-needed  do nothing when the official images the Compose file names
#                by default are on the engine or can be pulled
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="$here/../../compose/.env"
official_postgres=postgres:16-bookworm
official_balancer=haproxy:2.8

available() { docker image inspect "$1" >/dev/null 2>&1 || docker pull --quiet "$1" >/dev/null 2>&1; }

if [ "${1:-}" = --if-needed ] && available "$official_postgres" && available "$official_balancer"; then
  exit 0
fi

# The mirror this machine's apt uses, else Debian's own.
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror="${mirror:-http://deb.debian.org/debian}"

if ! docker image inspect agentmesh/debian:bookworm >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    echo "debootstrap is needed to build the Debian base image: apt-get install debootstrap" >&2
    exit 1
  }
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "building agentmesh/debian:bookworm with debootstrap from $mirror (a few minutes)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - agentmesh/debian:bookworm >&2
fi

docker build --quiet -t agentmesh/postgres:15 -f "$here/postgres.Dockerfile" "$here" >&2
docker build --quiet -t agentmesh/haproxy:2.6 -f "$here/haproxy.Dockerfile" "$here" >&2

touch "$env_file"
sed -i '/^AGENTMESH_POSTGRES_IMAGE=/d; /^AGENTMESH_BALANCER_IMAGE=/d' "$env_file"
cat >>"$env_file" <<ENV
AGENTMESH_POSTGRES_IMAGE=agentmesh/postgres:15
AGENTMESH_BALANCER_IMAGE=agentmesh/haproxy:2.6
ENV
echo "deploy/compose/.env now names agentmesh/postgres:15 and agentmesh/haproxy:2.6" >&2
