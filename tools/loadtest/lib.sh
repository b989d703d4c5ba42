# shellcheck shell=bash
# What the run-*-bench.sh scripts share, sourced by each: the release
# binaries, the processes a run starts and their clean-up, waiting for ports
# and for a quiet machine, CPU accounting, and the registry, the gateway and
# the echo agents as the benchmarks start them.
#
# Reads the caller's OUT (results directory), QUIET_CORES and QUIET_WAIT, and
# for the services REGISTRY_PORT, GATEWAY_GRPC_PORT and GATEWAY_PORT.

# Sets LOADTEST, REGISTRY, GATEWAY, ECHO_AGENT, SCHEDULER and PROVISIONER to
# the release binaries (built or not) in the workspace's target directory.
# shellcheck disable=SC2034 # each script uses the ones it built
release_binaries() {
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  LOADTEST=$target_dir/release/agentmesh-loadtest
  REGISTRY=$target_dir/release/agentmesh-registry
  GATEWAY=$target_dir/release/agentmesh-a2a-gateway
  ECHO_AGENT=$target_dir/release/agentmesh-echo-agent
  SCHEDULER=$target_dir/release/agentmesh-scheduler
  PROVISIONER=$target_dir/release/agentmesh-provisioner
}

# Every process the run started and has not stopped yet.
pids=()

# launch LOG COMMAND...: runs COMMAND in the background, its output in LOG,
# and adds it to pids; $! is its pid afterwards, as after `COMMAND &`. The
# start_* functions below leave $! the same way, except start_gateway, which
# sets gateway_pid.
launch() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  pids+=("$!")
}

# scrape_every_second PORT: fetches http://127.0.0.1:PORT/metrics once a
# second in the background, as a busy Prometheus would (most scrape every
# 15 s or more), until stop_all; the cost of the instrumentation is then
# measured with its reads included.
scrape_every_second() {
  local port=$1
  launch /dev/null bash -c "while sleep 1; do curl -fsS http://127.0.0.1:$port/metrics >/dev/null || true; done"
}

# Stops every process in pids and waits for each.
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

# cleanup_on_exit [COMMAND...]: at exit, on failure and on INT or TERM too,
# stops every process in pids, then runs each COMMAND; the exit status stays
# the script's.
# shellcheck disable=SC2120 # the commands are optional
cleanup_on_exit() {
  cleanup_commands=("$@")
  trap run_cleanup EXIT
  trap 'exit 130' INT TERM
}

run_cleanup() {
  local status=$? command
  stop_all
  for command in "${cleanup_commands[@]}"; do
    "$command" || true
  done
  exit "$status"
}

# wait_for_port PORT [HOST]: until something listens on HOST (127.0.0.1)
# at PORT, for up to 30 s.
wait_for_port() {
  local host=${2:-127.0.0.1}
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $host:$1" >&2
  return 1
}

# require_free_ports PORT...: another run (or anything else) on these ports
# would answer in place of what this run starts.
require_free_ports() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is already in use; set the *_PORT knobs" >&2
      exit 2
    fi
  done
}

# random_hex BYTES: that many random bytes, in hex.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Sets operator_token and service_token to new random tokens, the operator
# token also in $OUT/operator.token (readable by this user only) for the
# load client.
new_tokens() {
  local saved
  saved=$(umask)
  umask 077
  random_hex 32 >"$OUT/operator.token"
  umask "$saved"
  operator_token=$(cat "$OUT/operator.token")
  service_token=$(random_hex 32)
}

# CPU time (user + system) of a process, in clock ticks (100 per second).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# CPU time the whole machine has spent busy, in clock ticks.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# cores TICKS SECONDS: the average number of cores busy.
cores() { awk -v t="$1" -v d="$2" 'BEGIN { printf "%.2f", t / 100 / d }'; }

# Waits up to QUIET_WAIT seconds until the machine uses less than QUIET_CORES
# cores (the services this run started idle too).
wait_for_quiet() {
  local waited=0 before after
  while ((waited < QUIET_WAIT)); do
    before=$(machine_ticks)
    sleep 2
    after=$(machine_ticks)
    waited=$((waited + 2))
    if awk -v b="$(cores $((after - before)) 2)" -v q="$QUIET_CORES" 'BEGIN { exit !(b < q) }'; then
      return 0
    fi
  done
  echo "warning: the machine is still busy after ${QUIET_WAIT}s; measuring anyway" >&2
}

# start_registry HOST: the registry on HOST:$REGISTRY_PORT in dev network
# mode, on SQLite under $OUT/registry. Needs new_tokens first.
start_registry() {
  mkdir -p "$OUT/registry"
  cat >"$OUT/registry.toml" <<TOML
listen = "$1:$REGISTRY_PORT"
data_dir = "$OUT/registry"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[registry]
network_mode = "dev"
TOML
  launch "$OUT/registry.log" "$REGISTRY" --config "$OUT/registry.toml"
}

# start_gateway [NAME GRPC_PORT A2A_PORT [CERT KEY]]: a gateway (default:
# "gateway" with gRPC on 127.0.0.1:$GATEWAY_GRPC_PORT and A2A on
# 127.0.0.1:$GATEWAY_PORT) in dev network mode, on SQLite under $OUT/NAME,
# using the registry on 127.0.0.1:$REGISTRY_PORT; its A2A front over TLS
# when given a PEM certificate and key; with METRICS_PORT set, the first
# serves metrics there, scraped every second. Sets gateway_pid.
start_gateway() {
  local name=${1:-gateway} grpc_port=${2:-$GATEWAY_GRPC_PORT} a2a_port=${3:-$GATEWAY_PORT}
  local metrics_listen=""
  if [[ $name == gateway && -n ${METRICS_PORT:-} ]]; then metrics_listen="127.0.0.1:$METRICS_PORT"; fi
  mkdir -p "$OUT/$name"
  cat >"$OUT/$name.toml" <<TOML
listen = "127.0.0.1:$grpc_port"
data_dir = "$OUT/$name"
metrics_listen = "$metrics_listen"
[auth]
operator_tokens = ["$operator_token"]
service_tokens = ["$service_token"]
[gateway]
a2a_listen = "127.0.0.1:$a2a_port"
registry_address = "http://127.0.0.1:$REGISTRY_PORT"
service_token = "$service_token"
network_mode = "dev"
TOML
  if [[ -n ${4:-} ]]; then
    printf '[gateway.a2a_tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$4" "$5" >>"$OUT/$name.toml"
  fi
  launch "$OUT/$name.log" "$GATEWAY" --config "$OUT/$name.toml"
  gateway_pid=$!
  if [[ -n $metrics_listen ]]; then
    wait_for_port "$METRICS_PORT"
    scrape_every_second "$METRICS_PORT"
  fi
}

# make_test_certificate DIR: a throwaway authority (DIR/ca.pem) and a
# certificate for 127.0.0.1 it issued (DIR/cert.pem, DIR/key.pem).
make_test_certificate() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$dir/key.pem" -out "$dir/cert.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/ext.cnf" -out "$dir/cert.pem" 2>/dev/null
}

# start_echo_agent NAME PORT MAX_CONCURRENT [DELAY_MS]: an echo agent on
# 127.0.0.1:PORT (MAX_CONCURRENT 0: no limit) answering after DELAY_MS
# (default 0), logging to $OUT/NAME.log.
start_echo_agent() {
  launch "$OUT/$1.log" "$ECHO_AGENT" --listen "127.0.0.1:$2" --max-concurrent "$3" --delay-ms "${4:-0}"
}
