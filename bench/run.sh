#!/usr/bin/env bash
# Runs the load scenarios against bench-server and the hand-rolled baseline, alternately, for
# several rounds, and appends one JSON line per run to bench/results/<date>-<commit>.jsonl,
# whose first line is a header record (commit, date, host, CPUs, kernel); then prints the
# medians table (bench/summarize.py). Any server speaking the protocol can be added with
# SERVERS="name=/path/to/binary ...", and bench-server under other settings with
# SERVERS="name=env:VAR=value,VAR=value" (for instance `batch5=env:BATCH_MS=5`,
# `nometrics=env:METRICS=0`, `axum=env:SERVE=axum`).
#
#   bash bench/run.sh                  # all scenarios, 3 rounds
#   ROUNDS=5 SCENARIOS="S1 S2" bash bench/run.sh
#
# With SETUPS, it measures the Redis backplane instead: bench-server alone in-process
# (`inproc`), one instance on Redis (`redis1`) and three instances on one Redis (`redis3`,
# subscribers spread over the three, publisher on the first), each run on a fresh
# redis-server of its own, and the table compares every setup with `inproc`:
#
#   SETUPS="inproc redis1 redis3" SCENARIOS="S1 S1c L1k S3c U" bash bench/run.sh
#
# The setup `nginx` is bench-server alone behind nginx, configured from deploy/nginx.conf (the
# template the proxy tests run): the latency the proxy adds, against `inproc`:
#
#   SETUPS="inproc nginx" SCENARIOS="L1k" bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"S1 S2 S2rate S3 S4a S4b S5"}
PORT=${PORT:-$((10000 + RANDOM % 15000))}
cargo build --release -q -p bench-server -p baseline-server -p ceiling-server -p loadgen
# The load generator is one client address with up to 10 000 streams: bench-server's caps are
# raised so that they never refuse a scenario's clients (the baseline has none). Set them to
# see the caps at work.
export MAX_STREAMS=${MAX_STREAMS:-1000000} MAX_STREAMS_PER_IP=${MAX_STREAMS_PER_IP:-1000000}
# Refusals as plain statuses, which the load generator counts as failed connections.
export REFUSALS=${REFUSALS:-status}
export MAX_TOPICS=${MAX_TOPICS:-1000000} MAX_POLLERS=${MAX_POLLERS:-1000000}
export MAX_POLLERS_PER_IP=${MAX_POLLERS_PER_IP:-1000000}
SERVERS=${SERVERS:-"bench-server=target/release/bench-server axum=env:SERVE=axum baseline-server=target/release/baseline-server ceiling=target/release/ceiling-server"}
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then COMMIT="$COMMIT+dirty"; fi
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-${COMMIT%+dirty}.jsonl}
mkdir -p "$(dirname "$OUT")"
# Where the figures come from, as the file's first record.
printf '{"header":{"commit":"%s","date":"%s","host":"%s","cpus":%s,"kernel":"%s","rounds":%s,"scenarios":"%s","setups":"%s","servers":"%s"}}\n' \
  "$COMMIT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$(nproc)" "$(uname -r)" \
  "$ROUNDS" "$SCENARIOS" "${SETUPS:-}" "$SERVERS" >>"$OUT"
ulimit -n "$(ulimit -Hn)"

args_for() {
  case "$1" in
    S1)     echo "--connections 1000 --topics 1 --events 2000 --payload 64" ;;
    S2)     echo "--connections 10000 --topics 1 --events 200 --payload 64 --sources 4" ;;
    S2rate) echo "--connections 10000 --topics 1 --events 200 --payload 64 --sources 4 --rate 100" ;;
    S3)     echo "--connections 1000 --topics 1000 --events 200 --payload 64 --publishers 4" ;;
    S4a)    echo "--connections 10000 --topics 1 --events 0 --hold 20 --sources 4" ;;
    S4b)    echo "--connections 19000 --topics 1 --events 0 --hold 20 --sources 4" ;;
    S5)     echo "--connections 500 --topics 50 --churn 20 --sources 2" ;;
    # S1 and S3 with every publish confirmed: a publisher that waits for the broker.
    S1c)    echo "--connections 1000 --topics 1 --events 2000 --payload 64 --confirm" ;;
    S3c)    echo "--connections 1000 --topics 1000 --events 200 --payload 64 --publishers 4 --confirm" ;;
    # S1 with a heavier client: every subscriber parses each event as JSON (serde_json).
    S1j)    echo "--connections 1000 --topics 1 --events 2000 --payload 64 --parse-json" ;;
    # The latency curve: S2's 10 000 subscribers at 10, 25, 50 and 100 events/s (about 4 s of
    # events each, at least 60 events).
    C10)    echo "--connections 10000 --topics 1 --events 60 --payload 64 --sources 4 --rate 10" ;;
    C25)    echo "--connections 10000 --topics 1 --events 100 --payload 64 --sources 4 --rate 25" ;;
    C50)    echo "--connections 10000 --topics 1 --events 200 --payload 64 --sources 4 --rate 50" ;;
    C100)   echo "--connections 10000 --topics 1 --events 400 --payload 64 --sources 4 --rate 100" ;;
    # Latency below saturation: 1 000 events/s to 100 subscribers.
    L1k)    echo "--connections 100 --topics 1 --events 3000 --payload 64 --rate 1000" ;;
    # Publishes that reach no one: 1 000 topics nobody watches, 20 000 publishes.
    U)      echo "--connections 0 --topics 1000 --events 20 --payload 64 --publishers 4 --unwatched" ;;
  esac
}

# shellcheck source=bench/lib.sh
source bench/lib.sh

if [[ -n ${SETUPS:-} ]]; then
  if [[ $SETUPS == *redis* ]]; then
    command -v redis-server >/dev/null || { echo "SETUPS needs redis-server on the PATH" >&2; exit 1; }
  fi
  NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
  pids=()
  # Never leave a server or a Redis behind (they would hold their ports) if something fails.
  trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT
  for round in $(seq 1 "$ROUNDS"); do
    order=$SETUPS
    if (( round % 2 == 0 )); then order=$(echo "$SETUPS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for scenario in $SCENARIOS; do
      for setup in $order; do
        case $setup in
          inproc) instances=1; broker=; proxy= ;;
          redis1) instances=1; broker=yes; proxy= ;;
          redis3) instances=3; broker=yes; proxy= ;;
          nginx) instances=1; broker=; proxy=nginx ;;
          *) echo "unknown setup $setup (inproc, redis1, redis3, nginx)" >&2; exit 1 ;;
        esac
        pids=(); addrs=(); server_pids=(); broker_args=()
        env_backplane=()
        if [[ -n $broker ]]; then
          PORT=$((PORT + 1)); redis_port=$PORT
          redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no >/dev/null 2>&1 &
          pids+=($!)
          for _ in $(seq 1 100); do
            redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
            sleep 0.05
          done
          env_backplane=(BACKPLANE="redis://127.0.0.1:$redis_port")
          broker_args=(--broker "127.0.0.1:$redis_port")
        fi
        for _ in $(seq 1 "$instances"); do
          PORT=$((PORT + 1))
          env PORT=$PORT "${env_backplane[@]}" target/release/bench-server >/dev/null 2>&1 &
          pids+=($!); server_pids+=($!); addrs+=("127.0.0.1:$PORT")
        done
        for addr in "${addrs[@]}"; do wait_ready "${addr##*:}"; done
        targets=("${addrs[@]}")
        if [[ $proxy == nginx ]]; then
          # The template, plain HTTP (its `tls` section left out), in front of the instance.
          PORT=$((PORT + 1)); proxy_dir=$(mktemp -d)
          awk '/# begin: tls/{skip=1} !skip{print} /# end: tls/{skip=0}' deploy/nginx.conf |
            sed -e "s|{{DIR}}|$proxy_dir|g" -e "s|{{PORT}}|$PORT|g" \
              -e "s|{{UPSTREAM}}|${addrs[0]}|g" -e "s|{{READ_TIMEOUT}}|60s|g" >"$proxy_dir/nginx.conf"
          "$NGINX" -p "$proxy_dir" -c "$proxy_dir/nginx.conf" 2>"$proxy_dir/stderr" &
          pids+=($!)
          wait_ready "$PORT"
          targets=("127.0.0.1:$PORT")
        fi
        # shellcheck disable=SC2046
        line=$(target/release/loadgen --addr "$(IFS=,; echo "${targets[*]}")" \
          --pid "$(IFS=,; echo "${server_pids[*]}")" "${broker_args[@]}" \
          $(args_for "$scenario") --label "$scenario")
        kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
        echo "{\"round\":$round,\"server\":\"$setup\",\"scenario\":\"$scenario\",\"result\":$line}" | tee -a "$OUT"
      done
    done
  done
  python3 bench/summarize.py "$OUT" inproc
  exit 0
fi

for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order each round so neither server always runs on a warmer machine.
  order=$SERVERS
  if (( round % 2 == 0 )); then order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for scenario in $SCENARIOS; do
    for entry in $order; do
      name=${entry%%=*}; binary=${entry#*=}
      # `env:VAR=value,...`: bench-server under those settings.
      run_env=()
      if [[ $binary == env:* ]]; then
        IFS=, read -r -a run_env <<<"${binary#env:}"
        binary=target/release/bench-server
      fi
      # S5 needs polled routes, which only the framework's server has.
      if [[ $scenario == S5 && ( $name == baseline-server || $name == ceiling ) ]]; then continue; fi
      # A fresh port for every run: the 4-tuples of the previous run's connections may still be
      # in TIME_WAIT.
      PORT=$((PORT + 1))
      env PORT=$PORT "${run_env[@]}" "$binary" >/dev/null 2>&1 &
      pid=$!
      # Never leave a server behind (it would hold its port) if the load generator fails.
      trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
      wait_ready "$PORT"
      # shellcheck disable=SC2046
      line=$(target/release/loadgen --addr "127.0.0.1:$PORT" --pid "$pid" $(args_for "$scenario") --label "$scenario")
      kill -TERM "$pid"; wait "$pid" || true
      echo "{\"round\":$round,\"server\":\"$name\",\"scenario\":\"$scenario\",\"result\":$line}" | tee -a "$OUT"
    done
  done
done
python3 bench/summarize.py "$OUT"
