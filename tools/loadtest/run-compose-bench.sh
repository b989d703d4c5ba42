#!/usr/bin/env bash
# The Compose stack's cold start and its recovery from a replica's SIGKILL,
# as measured by the end-to-end test that scales the stack and kills one
# replica of each scaled service under load (tests/scaled_mesh.rs): the time
# `up` takes (PostgreSQL initialised and healthy, containers started), the
# cold start to every replica SERVING, and per killed service the time from
# SIGKILL to the next message answered, call answered or run delivered.
#
# Usage: tools/loadtest/run-compose-bench.sh   (knob: RUNS, default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/images/build.sh >/dev/null
cargo test --locked -p agentmesh-e2e --test scaled_mesh --no-run >/dev/null 2>&1
for run in $(seq "${RUNS:-3}"); do
  echo "run $run"
  cargo test --locked -p agentmesh-e2e --test scaled_mesh -- --nocapture 2>&1 | grep -E '^e2e (figure|counts)'
done
