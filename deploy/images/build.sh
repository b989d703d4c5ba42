#!/usr/bin/env bash
# Builds every agentmesh binary statically (the services, the agents and the
# agentmesh command line), in one cargo build, then the local
# images that carry them (no image registry needed):
#   agentmesh/registry:dev, agentmesh/provisioner:dev,
#   agentmesh/scheduler:dev, agentmesh/a2a-gateway:dev   FROM scratch: one service each (service.Dockerfile)
#   agentmesh/echo-agent:dev  FROM scratch: the shim wrapping the echo agent
#   agentmesh/agent-shim:dev  FROM scratch: the shim alone, to copy into other agents' images
# and, where the Compose stack's PostgreSQL and load balancer images can be
# neither found on the engine nor pulled (a machine without a registry),
# stand-ins built from Debian's packages (debian/build.sh), recorded in
# deploy/compose/.env so that docker-compose picks them.
# Idempotent: unchanged sources rebuild nothing and give the same image ids.
# Honours CARGO_TARGET_DIR; deploy/local/up.sh runs the binaries it builds, so
# a first start compiles the dependency tree once.
#
# Usage: deploy/images/build.sh [--agents-only | --binaries-only]
#   --agents-only    the binaries and the two agent images (what the runtime tests need)
#   --binaries-only  the binaries only
# Prints the echo agent image id on stdout (with --binaries-only, the
# directory holding the binaries); everything else goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/deploy/images"
target=x86_64-unknown-linux-gnu
mode="${1:-all}"
case "$mode" in all | --agents-only | --binaries-only) ;; *)
  echo "usage: $0 [--agents-only | --binaries-only]" >&2
  exit 2
  ;;
esac
cd "$root"

services=(registry provisioner scheduler a2a-gateway)
binaries=(agentmesh-echo-agent agentmesh-agent-shim)
for service in "${services[@]}"; do binaries+=("agentmesh-$service"); done

# Run from a test, this inherits the variables cargo sets for the test
# process. Some build scripts track them (ring: CARGO_MANIFEST_DIR), so they
# would force a rebuild each time a different crate's tests call this;
# CARGO_ENCODED_RUSTFLAGS would also win over RUSTFLAGS.
for variable in $(compgen -e); do
  case "$variable" in
    CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | \
      CARGO_RUSTC_CURRENT_DIR | CARGO_ENCODED_RUSTFLAGS | CARGO_CFG_* | CARGO_FEATURE_* | CARGO_MAKEFLAGS | OUT_DIR)
      unset "$variable" ;;
  esac
done
# The command line (agentmesh) is built with them, for deploy/local/up.sh.
packages=(-p agentmesh-cli)
for binary in "${binaries[@]}"; do packages+=(-p "$binary"); done
RUSTFLAGS='-C target-feature=+crt-static' \
  "${CARGO:-cargo}" build --release --locked --target "$target" "${packages[@]}" >&2

bin_dir="${CARGO_TARGET_DIR:-$root/target}/$target/release"
case "$bin_dir" in /*) ;; *) bin_dir="$root/$bin_dir" ;; esac
if [ "$mode" = --binaries-only ]; then
  echo "$bin_dir"
  exit 0
fi

# The build context holds only what the images copy.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
for binary in "${binaries[@]}"; do
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$context/$binary" "$bin_dir/$binary"
  else
    cp "$bin_dir/$binary" "$context/$binary"
  fi
done
cp "$here"/*.Dockerfile "$context/"

docker build --quiet -f "$context/agent-shim.Dockerfile" -t agentmesh/agent-shim:dev "$context" >&2
docker build --quiet -f "$context/echo-agent.Dockerfile" -t agentmesh/echo-agent:dev "$context" >&2

if [ "$mode" = all ]; then
  mkdir "$context/data"
  # The system's authorities, when the host has a bundle; an empty file otherwise.
  cp /etc/ssl/certs/ca-certificates.crt "$context/" 2>/dev/null || : >"$context/ca-certificates.crt"
  port() {
    case "$1" in registry) echo 50051 ;; provisioner) echo 50052 ;; a2a-gateway) echo 50053 ;; scheduler) echo 50054 ;; esac
  }
  for service in "${services[@]}"; do
    docker build --quiet -f "$context/service.Dockerfile" --build-arg "SERVICE=$service" \
      --build-arg "PORT=$(port "$service")" -t "agentmesh/$service:dev" "$context" >&2
  done
  "$here/debian/build.sh" --if-needed >&2
fi
docker image inspect --format '{{.Id}}' agentmesh/echo-agent:dev
