#!/usr/bin/env bash
# 100 000 streams on one machine (issue 28, part 4): a Redis Cluster of 3 masters, 6
# bench-server instances on it (BACKPLANE_CLUSTER; each under 20 000 descriptors), one load
# generator process per instance subscribing CONNECTIONS/6 streams from 32 loopback source
# addresses (under the default cap of 1 000 streams per client address; half on the broadcast topic t0, half over 1 000 small topics), and one publisher
# process: 1 event/s on t0 and 100 events/s over the small topics, for DURATION seconds.
# Appends the processes' JSON lines to bench/results/scale-<date>-<commit>.jsonl (first line:
# a header) and prints the summary (bench/summarize_scale.py).
#
#   bash bench/scale.sh                       # 100 000 streams, 60 s
#   CONNECTIONS=12000 DURATION=20 bash bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-100000}
DURATION=${DURATION:-60}
INSTANCES=6
PORT=${PORT:-$((10000 + RANDOM % 10000))}
cargo build --release -q -p bench-server -p loadgen
command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  { echo "needs redis-server and redis-cli on the PATH" >&2; exit 1; }
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=${OUT:-bench/results/scale-$(date -u +%Y%m%dT%H%M%SZ)-$COMMIT.jsonl}
mkdir -p "$(dirname "$OUT")"
printf '{"header":{"commit":"%s","date":"%s","host":"%s","cpus":%s,"kernel":"%s","connections":%s,"instances":%s,"duration_s":%s}}\n' \
  "$COMMIT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$(nproc)" "$(uname -r)" \
  "$CONNECTIONS" "$INSTANCES" "$DURATION" >>"$OUT"
ulimit -n "$(ulimit -Hn)"
pids=(); dirs=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; rm -rf "${dirs[@]}"' EXIT

# The cluster: three masters, no replicas, each in a directory of its own.
nodes=(); seeds=(); brokers=()
for _ in 1 2 3; do
  PORT=$((PORT + 1)); dir=$(mktemp -d); dirs+=("$dir")
  (cd "$dir" && exec redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --cluster-enabled yes --cluster-config-file nodes.conf >/dev/null 2>&1) &
  pids+=($!); nodes+=("127.0.0.1:$PORT"); seeds+=("redis://127.0.0.1:$PORT"); brokers+=("127.0.0.1:$PORT")
done
for node in "${nodes[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "${node##*:}" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for node in "${nodes[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -p "${node##*:}" cluster info | grep -q cluster_state:ok && break; sleep 0.05
  done
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
addrs=(); server_pids=()
for _ in $(seq 1 "$INSTANCES"); do
  PORT=$((PORT + 1))
  env PORT=$PORT BACKPLANE_CLUSTER="$(IFS=,; echo "${seeds[*]}")" \
    MAX_STREAMS=$((CONNECTIONS / INSTANCES + 1000)) target/release/bench-server >/dev/null 2>&1 &
  pids+=($!); server_pids+=($!); addrs+=("127.0.0.1:$PORT")
done
for addr in "${addrs[@]}"; do wait_ready "${addr##*:}"; done
all=$(IFS=,; echo "${addrs[*]}")

per=$((CONNECTIONS / INSTANCES))
events=$DURATION; events_small=$((DURATION / 10))
common=(--topics 1001 --events "$events" --events-small "$events_small" --total $((per * INSTANCES)) --label scale)
loadgens=()
for i in $(seq 0 $((INSTANCES - 1))); do
  target/release/loadgen --scale subscribe --addr "${addrs[$i]}" --pid "${server_pids[$i]}" \
    --all "$all" --connections "$per" --sources 32 --broadcast-share 0.5 "${common[@]}" \
    >"${dirs[0]}/sub$i.json" &
  loadgens+=($!)
done
target/release/loadgen --scale publish --addr "$all" --brokers "$(IFS=,; echo "${brokers[*]}")" \
  --rate-broadcast 1 --rate 100 "${common[@]}" >"${dirs[0]}/pub.json"
wait "${loadgens[@]}"
for f in "${dirs[0]}"/sub*.json "${dirs[0]}/pub.json"; do cat "$f" >>"$OUT"; done
python3 bench/summarize_scale.py "$OUT"
