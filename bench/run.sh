#!/usr/bin/env bash
# Runs the load scenarios against bench-server and the hand-rolled baseline, alternately, for
# several rounds, and appends one JSON line per run to bench/results/<date>.jsonl; then prints
# the medians table (bench/summarize.py). Any server speaking the protocol can be added with
# SERVERS="name=/path/to/binary ...".
#
#   bash bench/run.sh                  # all scenarios, 3 rounds
#   ROUNDS=5 SCENARIOS="S1 S2" bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"S1 S2 S2rate S3 S4a S4b S5"}
PORT=${PORT:-$((10000 + RANDOM % 15000))}
cargo build --release -q -p bench-server -p baseline-server -p loadgen
SERVERS=${SERVERS:-"bench-server=target/release/bench-server axum=bench/bench-server-axum.sh baseline-server=target/release/baseline-server"}
OUT=${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
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
  esac
}

for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order each round so neither server always runs on a warmer machine.
  order=$SERVERS
  if (( round % 2 == 0 )); then order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for scenario in $SCENARIOS; do
    for entry in $order; do
      name=${entry%%=*}; binary=${entry#*=}
      # S5 needs polled routes, which only the framework's server has.
      if [[ $scenario == S5 && $name == baseline-server ]]; then continue; fi
      # A fresh port for every run: the 4-tuples of the previous run's connections may still be
      # in TIME_WAIT.
      PORT=$((PORT + 1))
      PORT=$PORT "$binary" >/dev/null 2>&1 &
      pid=$!
      # Never leave a server behind (it would hold its port) if the load generator fails.
      trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
      for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/stats" >/dev/null 2>&1 && break
        sleep 0.05
      done
      # shellcheck disable=SC2046
      line=$(target/release/loadgen --addr "127.0.0.1:$PORT" --pid "$pid" $(args_for "$scenario") --label "$scenario")
      kill -TERM "$pid"; wait "$pid" || true
      echo "{\"round\":$round,\"server\":\"$name\",\"scenario\":\"$scenario\",\"result\":$line}" | tee -a "$OUT"
    done
  done
done
python3 bench/summarize.py "$OUT"
