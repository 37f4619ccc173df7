#!/usr/bin/env bash
# bench-server with a 5 ms write-batching window (Manager::builder().write_batch), for run.sh:
#   SERVERS="bench-server=target/release/bench-server batch5=bench/bench-server-batch5.sh ..."
exec env BATCH_MS=5 "$(dirname "$0")/../target/release/bench-server"
