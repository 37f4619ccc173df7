#!/usr/bin/env bash
# bench-server served by axum::serve (hyper) instead of sse_runtime::serve, for run.sh:
#   SERVERS="bench-server=target/release/bench-server axum=bench/bench-server-axum.sh ..."
exec env SERVE=axum "$(dirname "$0")/../target/release/bench-server"
