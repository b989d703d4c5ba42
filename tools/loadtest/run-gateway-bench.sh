#!/usr/bin/env bash
# A2A gateway benchmark (docs/benchmarks.md): builds in release mode, then
# starts on loopback, each with a temp dir under $OUT: the registry and the
# gateway (SQLite stores, dev network mode), two echo agents, and nginx as a
# reverse proxy in front of the first agent. Then the load client's two parts:
#
#   throughput  `message/send` to one workspace (max_concurrent_tasks high,
#               agent with no concurrency limit answering after
#               AGENT_DELAY_MS, 0 by default: the proxy's worst case), closed loop
#               over C keep-alive connections, against the agent directly
#               (the nearest limit), through the gateway and through nginx,
#               each over every protocol in PROTOCOLS (both proxies speak
#               HTTP/1.1 to the agent whatever the caller speaks; a second
#               gateway serves TLS, on the same registry); interleaved:
#               every round runs every C against every target.
#   drain       per round: MESSAGES sent straight to the second agent (one at
#               a time, --max-concurrent 1), then as many queued through the
#               gateway while that agent answers busy, then the agent freed,
#               one heartbeat reporting room, and the time until the agent
#               has received them all (workspace max_concurrent_tasks 1).
#
# Everything started here is stopped at the end, on failure too.
#
# Knobs (environment): PARTS ("throughput drain"), CONCURRENCY ("1 16 64"),
# PROTOCOLS ("http1 http2 tls http2-tls": HTTP/1.1 and HTTP/2 in the clear,
# then each over TLS; the callers' side only),
# AGENT_DELAY_MS (0; the throughput agent's time per message), AGENT_HOST
# (127.0.0.1; the host the throughput agent is registered and called under,
# e.g. localhost for an agent known by name, which the gateway resolves),
# ROUNDS (3), DURATION (10 s measured), WARMUP (2 s), MESSAGES (10000),
# DRAIN_ROUNDS (2), FILL_CONCURRENCY (1: delivery order is checked exactly),
# GATEWAY_LOG (the gateway's RUST_LOG, default info as deployed), ports
# REGISTRY_PORT (50171), GATEWAY_GRPC_PORT (50173), GATEWAY_PORT (8173),
# NGINX_PORT (8174), AGENT_PORT (8175), DRAIN_AGENT_PORT (8176),
# GATEWAY_TLS_PORT (8177), GATEWAY_TLS_GRPC_PORT (50177), NGINX_H2C_PORT
# (8178), NGINX_TLS_PORT (8179), METRICS_PORT
# (unset: the gateway serves no metrics; set: it serves them there, scraped
# every second, to measure what the instrumentation costs), SKIP_BUILD=1,
# OUT (results directory), QUIET_CORES and QUIET_WAIT (before each part, wait
# up to QUIET_WAIT seconds for the machine to use less than QUIET_CORES cores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

PARTS=${PARTS:-"throughput drain"}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
PROTOCOLS=${PROTOCOLS:-"http1 http2 tls http2-tls"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
MESSAGES=${MESSAGES:-10000}
DRAIN_ROUNDS=${DRAIN_ROUNDS:-2}
FILL_CONCURRENCY=${FILL_CONCURRENCY:-1}
AGENT_DELAY_MS=${AGENT_DELAY_MS:-0}
AGENT_HOST=${AGENT_HOST:-127.0.0.1}
GATEWAY_LOG=${GATEWAY_LOG:-info}
REGISTRY_PORT=${REGISTRY_PORT:-50171}
GATEWAY_GRPC_PORT=${GATEWAY_GRPC_PORT:-50173}
GATEWAY_PORT=${GATEWAY_PORT:-8173}
NGINX_PORT=${NGINX_PORT:-8174}
AGENT_PORT=${AGENT_PORT:-8175}
DRAIN_AGENT_PORT=${DRAIN_AGENT_PORT:-8176}
GATEWAY_TLS_PORT=${GATEWAY_TLS_PORT:-8177}
GATEWAY_TLS_GRPC_PORT=${GATEWAY_TLS_GRPC_PORT:-50177}
NGINX_H2C_PORT=${NGINX_H2C_PORT:-8178}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-8179}
QUIET_CORES=${QUIET_CORES:-0.3}
QUIET_WAIT=${QUIET_WAIT:-300}
OUT=${OUT:-$(mktemp -d /tmp/agentmesh-gateway-bench.XXXXXX)}
mkdir -p "$OUT"

NGINX=$(command -v nginx || true)
[[ -x $NGINX ]] || NGINX=/usr/sbin/nginx
if [[ ! -x $NGINX ]]; then
  echo "nginx is needed (Debian: apt-get install -y nginx)" >&2
  exit 2
fi

if [[ ${SKIP_BUILD:-} != 1 ]]; then
  cargo build --release -p agentmesh-a2a-gateway -p agentmesh-registry -p agentmesh-echo-agent -p agentmesh-loadtest
fi
release_binaries
cleanup_on_exit

require_free_ports "$REGISTRY_PORT" "$GATEWAY_GRPC_PORT" "$GATEWAY_PORT" "$NGINX_PORT" "$AGENT_PORT" "$DRAIN_AGENT_PORT" \
  "$GATEWAY_TLS_PORT" "$GATEWAY_TLS_GRPC_PORT" "$NGINX_H2C_PORT" "$NGINX_TLS_PORT"

new_tokens
mkdir -p "$OUT/nginx"
make_test_certificate "$OUT/tls"
sed -e "s|@DIR@|$OUT/nginx|g" -e "s|@LISTEN@|127.0.0.1:$NGINX_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$AGENT_PORT|g" \
  -e "s|@LISTEN_H2C@|127.0.0.1:$NGINX_H2C_PORT|g" -e "s|@LISTEN_TLS@|127.0.0.1:$NGINX_TLS_PORT|g" \
  -e "s|@CERT@|$OUT/tls/cert.pem|g" -e "s|@KEY@|$OUT/tls/key.pem|g" \
  tools/loadtest/nginx/nginx.conf.template >"$OUT/nginx/nginx.conf"

start_registry 127.0.0.1
registry_pid=$!
start_echo_agent agent "$AGENT_PORT" 0 "$AGENT_DELAY_MS"
agent_pid=$!
start_echo_agent drain-agent "$DRAIN_AGENT_PORT" 1
drain_agent_pid=$!
wait_for_port "$REGISTRY_PORT"
RUST_LOG=$GATEWAY_LOG start_gateway gateway-tls "$GATEWAY_TLS_GRPC_PORT" "$GATEWAY_TLS_PORT" \
  "$OUT/tls/cert.pem" "$OUT/tls/key.pem"
tls_gateway_pid=$gateway_pid
RUST_LOG=$GATEWAY_LOG start_gateway
"$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
for port in "$AGENT_PORT" "$DRAIN_AGENT_PORT" "$GATEWAY_GRPC_PORT" "$GATEWAY_PORT" "$NGINX_PORT" "$GATEWAY_TLS_PORT"; do
  wait_for_port "$port"
done
# The master forks its workers after it binds the port.
for _ in $(seq 1 100); do
  nginx_workers=$(pgrep -P "$nginx_pid" | paste -sd, || true)
  [[ -n $nginx_workers ]] && break
  sleep 0.1
done
nginx_pids=$nginx_pid${nginx_workers:+,$nginx_workers}

mesh=(--registry "http://127.0.0.1:$REGISTRY_PORT" --token-file "$OUT/operator.token"
  --gateway "http://127.0.0.1:$GATEWAY_PORT" --cpu "gateway=$gateway_pid" --cpu "registry=$registry_pid"
  --results-file "$OUT/results.jsonl")

{
  echo "results in $OUT; $(nproc) CPU cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))" \
    "shared by the client and every server; $("$NGINX" -v 2>&1); Linux $(uname -r);" \
    "throughput agent at $AGENT_HOST answers after ${AGENT_DELAY_MS} ms"
} | tee "$OUT/summary.txt"
# The routes to each proxy for each protocol: the gateway's first (the
# plain HTTP/1.1 one is the load tool's own), then nginx's.
routes=()
for protocol in $PROTOCOLS; do
  case $protocol in
    http1) routes+=(--proxy "nginx=http://127.0.0.1:$NGINX_PORT/") ;;
    http2) routes+=(--gateway-route "gateway-h2=h2c://127.0.0.1:$GATEWAY_PORT"
      --proxy "nginx-h2=h2c://127.0.0.1:$NGINX_H2C_PORT/") ;;
    tls) routes+=(--gateway-route "gateway-tls=https://127.0.0.1:$GATEWAY_TLS_PORT"
      --proxy "nginx-tls=https://127.0.0.1:$NGINX_TLS_PORT/") ;;
    http2-tls) routes+=(--gateway-route "gateway-h2-tls=h2://127.0.0.1:$GATEWAY_TLS_PORT"
      --proxy "nginx-h2-tls=h2://127.0.0.1:$NGINX_TLS_PORT/") ;;
    *)
      echo "unknown protocol $protocol (http1, http2, tls, http2-tls)" >&2
      exit 2
      ;;
  esac
done

for part in $PARTS; do
  wait_for_quiet
  case $part in
    throughput)
      "$LOADTEST" gateway-throughput "${mesh[@]}" --agent "http://$AGENT_HOST:$AGENT_PORT/" \
        --cpu "agent=$agent_pid" --cpu "nginx=$nginx_pids" --cpu "gateway-tls=$tls_gateway_pid" \
        "${routes[@]}" --ca-file "$OUT/tls/ca.pem" \
        --concurrency "${CONCURRENCY// /,}" --rounds "$ROUNDS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" |
        tee "$OUT/throughput.out"
      ;;
    drain)
      "$LOADTEST" gateway-drain "${mesh[@]}" --agent "http://127.0.0.1:$DRAIN_AGENT_PORT/" \
        --cpu "agent=$drain_agent_pid" --gateway-grpc "http://127.0.0.1:$GATEWAY_GRPC_PORT" \
        --messages "$MESSAGES" --rounds "$DRAIN_ROUNDS" --fill-concurrency "$FILL_CONCURRENCY" |
        tee "$OUT/drain.out"
      ;;
    *)
      echo "unknown part $part (throughput, drain)" >&2
      exit 2
      ;;
  esac
  sed -n '/^== summary/,$p' "$OUT/$part.out" >>"$OUT/summary.txt"
done
echo
echo "== everything ($OUT/summary.txt; JSON lines in $OUT/results.jsonl; service logs beside)"
cat "$OUT/summary.txt"
