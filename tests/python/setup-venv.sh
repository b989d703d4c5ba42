#!/usr/bin/env bash
# Creates the Python 3.13 virtualenv holding the official A2A SDK (pinned in
# requirements.txt next to this script), in which the end-to-end tests run
# sdk_agent.py and sdk_client.py. Everything comes from PyPI.
#
#   tests/python/setup-venv.sh [VENV_DIR]     (default: <workspace>/target/a2a-venv)
#
# Idempotent: a venv already holding exactly these requirements is left as it
# is. The last line on stdout is the venv's python; pip's output goes to stderr.
#
# Python 3.13 (the SDK's server needs it) is looked up in this order: the
# AGENTMESH_PYTHON313 environment variable, python3.13 on PATH, pyenv's
# /root/.pyenv/versions/3.13*/bin/python3.13.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${1:-$root/target/a2a-venv}
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
requirements=$here/requirements.txt
# A copy of the requirements the venv was built from; it going stale is what
# makes a rerun install again.
stamp=$venv/.agentmesh-requirements.txt
python=$venv/bin/python

is_313() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else 1)' 2>/dev/null
}

find_python() {
  local candidate
  if [[ -n ${AGENTMESH_PYTHON313:-} ]]; then
    is_313 "$AGENTMESH_PYTHON313" || { echo "AGENTMESH_PYTHON313=$AGENTMESH_PYTHON313 is not Python >= 3.13" >&2; return 1; }
    echo "$AGENTMESH_PYTHON313"
    return
  fi
  if candidate=$(command -v python3.13) && is_313 "$candidate"; then
    echo "$candidate"
    return
  fi
  for candidate in /root/.pyenv/versions/3.13*/bin/python3.13; do
    if [[ -x $candidate ]] && is_313 "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  echo "no Python 3.13 found: set AGENTMESH_PYTHON313, or put python3.13 on PATH" >&2
  return 1
}

if [[ -x $python ]] && is_313 "$python" && cmp -s "$requirements" "$stamp"; then
  echo "$python"
  exit 0
fi

if ! { [[ -x $python ]] && is_313 "$python"; }; then
  base=$(find_python)
  echo "setup-venv: creating $venv with $base" >&2
  rm -rf "$venv"
  "$base" -m venv "$venv"
fi
echo "setup-venv: installing tests/python/requirements.txt into $venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements" >&2
"$python" -c 'import a2a.client, a2a.server.routes, a2a.server.request_handlers.grpc_handler, uvicorn'
cp "$requirements" "$stamp"
echo "$python"
