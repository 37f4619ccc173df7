#!/usr/bin/env bash
# A Redis restart under load (issue 28, part 3): three bench-server instances on one Redis,
# 15 000 streams that behave as browsers do (spread over the instances and 16 loopback
# source addresses), a publisher at 100 confirmed events/s over 10 topics; Redis is killed
# and started again empty 2 s later. Runs each server binary given in SERVERS in turn, for
# ROUNDS rounds (order alternating), at the default caps, and appends one JSON line per run
# to bench/results/stampede-<date>-<commit>.jsonl (first line: a header record).
#
#   SERVERS="before=/path/to/old/bench-server after=target/release/bench-server" bash bench/stampede.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-15000}
PORT=${PORT:-$((20000 + RANDOM % 10000))}
SERVERS=${SERVERS:-"after=target/release/bench-server"}
cargo build --release -q -p bench-server -p loadgen
command -v redis-server >/dev/null || { echo "needs redis-server on the PATH" >&2; exit 1; }
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=${OUT:-bench/results/stampede-$(date -u +%Y%m%dT%H%M%SZ)-$COMMIT.jsonl}
mkdir -p "$(dirname "$OUT")"
printf '{"header":{"commit":"%s","date":"%s","host":"%s","cpus":%s,"kernel":"%s","rounds":%s,"servers":"%s"}}\n' \
  "$COMMIT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$(nproc)" "$(uname -r)" \
  "$ROUNDS" "$SERVERS" >>"$OUT"
ulimit -n "$(ulimit -Hn)"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

for round in $(seq 1 "$ROUNDS"); do
  order=$SERVERS
  if (( round % 2 == 0 )); then order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for entry in $order; do
    name=${entry%%=*}; binary=${entry#*=}
    PORT=$((PORT + 1)); redis_port=$PORT
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    pids=(); addrs=()
    for _ in 1 2 3; do
      PORT=$((PORT + 1))
      env PORT=$PORT BACKPLANE="redis://127.0.0.1:$redis_port" "$binary" >/dev/null 2>&1 &
      pids+=($!); addrs+=("127.0.0.1:$PORT")
    done
    for addr in "${addrs[@]}"; do wait_ready "${addr##*:}"; done
    line=$(target/release/loadgen --addr "$(IFS=,; echo "${addrs[*]}")" \
      --pid "$(IFS=,; echo "${pids[*]}")" --broker "127.0.0.1:$redis_port" \
      --redis-pid "$redis_pid" --outage 2 --connections "$CONNECTIONS" --topics 10 \
      --rate 100 --sources 16 --label stampede)
    kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    echo "{\"round\":$round,\"server\":\"$name\",\"scenario\":\"stampede\",\"result\":$line}" | tee -a "$OUT"
  done
done
