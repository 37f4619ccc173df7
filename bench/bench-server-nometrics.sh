#!/usr/bin/env bash
# bench-server without a metrics recorder (METRICS=0), for run.sh: what the metrics cost on the
# hot path, against the default (which installs the Prometheus recorder):
#   SERVERS="bench-server=target/release/bench-server nometrics=bench/bench-server-nometrics.sh"
exec env METRICS=0 "$(dirname "$0")/../target/release/bench-server"
