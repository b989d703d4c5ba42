#!/usr/bin/env bash
# Builds the echo agent and the agent shim as static binaries, then the local
# images that carry them:
#   agentmesh/echo-agent:dev  FROM scratch: the shim wrapping the echo agent
#   agentmesh/agent-shim:dev  FROM scratch: the shim alone, to copy into other agents' images
# Idempotent: unchanged sources rebuild nothing and give the same image ids.
#
# Usage: deploy/images/build.sh [--binaries-only]
# Prints the echo agent image id on stdout (with --binaries-only, the
# directory holding the two binaries); everything else goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/deploy/images"
target=x86_64-unknown-linux-gnu
cd "$root"

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
RUSTFLAGS='-C target-feature=+crt-static' \
  "${CARGO:-cargo}" build --release --locked --target "$target" \
  -p agentmesh-echo-agent -p agentmesh-agent-shim >&2

bin_dir="${CARGO_TARGET_DIR:-$root/target}/$target/release"
case "$bin_dir" in /*) ;; *) bin_dir="$root/$bin_dir" ;; esac
if [ "${1:-}" = "--binaries-only" ]; then
  echo "$bin_dir"
  exit 0
fi

# The build context holds only the binaries and the Dockerfiles.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
for binary in agentmesh-echo-agent agentmesh-agent-shim; do
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$context/$binary" "$bin_dir/$binary"
  else
    cp "$bin_dir/$binary" "$context/$binary"
  fi
done
cp "$here/echo-agent.Dockerfile" "$here/agent-shim.Dockerfile" "$context/"

docker build --quiet -f "$context/agent-shim.Dockerfile" -t agentmesh/agent-shim:dev "$context" >&2
docker build --quiet -f "$context/echo-agent.Dockerfile" -t agentmesh/echo-agent:dev "$context" >&2
docker image inspect --format '{{.Id}}' agentmesh/echo-agent:dev
