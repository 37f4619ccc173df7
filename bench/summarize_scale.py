#!/usr/bin/env python3
"""Summarizes a bench/scale.sh results file: the subscriber processes' deliveries, losses and
latency histograms merged, RSS per stream per instance, the publisher's rate and Redis CPU
per publish, and the per-core and per-connection ratios against Centrifugo's published
figures (1 M WebSocket connections on 20 pods of about 2 CPUs, ~500 k messages/s, p99 200 ms,
~30 KB per connection). Usage: summarize_scale.py FILE"""
import json
import sys

CENTRIFUGO = {"connections": 1_000_000, "cores": 40, "messages_per_s": 500_000,
              "p99_ms": 200, "bytes_per_connection": 30_000}

header, subs, pub = None, [], None
for line in open(sys.argv[1]):
    record = json.loads(line)
    if "header" in record:
        header, subs, pub = record["header"], [], None
    elif record.get("role") == "subscribe":
        subs.append(record)
    elif record.get("role") == "publish":
        pub = record
if not subs or pub is None:
    sys.exit("no complete run in the file")

histogram = {}
for s in subs:
    for bucket, count in s["latency_ms_histogram"].items():
        histogram[int(bucket)] = histogram.get(int(bucket), 0) + count


def percentile(p):
    total = sum(histogram.values())
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= p * total:
            return bucket
    return None


connections = sum(s["connections"] for s in subs)
delivered = sum(s["delivered"] for s in subs)
expected = sum(s["expected"] for s in subs)
per_s = delivered / pub["seconds"]
rss = [s["server_rss_per_connection_bytes"] for s in subs]
cores = header["cpus"]
print(f"commit {header['commit']}, {header['date']}, {cores} CPUs, {len(subs)} instances")
print(f"streams                 {connections}")
print(f"deliveries/s            {per_s:,.0f} ({delivered} of {expected} expected)")
print(f"lost / duplicated / reordered  {sum(s['lost'] for s in subs)} / "
      f"{sum(s['duplicated'] for s in subs)} / {sum(s['out_of_order'] for s in subs)}"
      f"  (connect errors {sum(s['connect_errors'] for s in subs)})")
print(f"publish-to-receive      p50 {percentile(0.5)} ms, p99 {percentile(0.99)} ms, "
      f"max {max(histogram) if histogram else None} ms")
print("RSS per stream (bytes)  " + ", ".join(f"{r:,.0f}" for r in rss))
backplanes = [s.get("backplane") or {} for s in subs]
print("listener reconnects     " + ", ".join(str(b.get("reconnects")) for b in backplanes)
      + "; resyncs " + ", ".join(str(b.get("resyncs")) for b in backplanes))
print(f"publishes/s             {pub['publishes_per_sec']:.1f}; Redis CPU per publish "
      f"{pub['broker_cpu_us_per_publish']:.1f} µs ({pub['broker_scripts']} scripts)")
c = CENTRIFUGO
ours_conn_core = connections / cores
theirs_conn_core = c["connections"] / c["cores"]
ours_msg_core = per_s / cores
theirs_msg_core = c["messages_per_s"] / c["cores"]
mean_rss = sum(rss) / len(rss)
print(f"streams per core        {ours_conn_core:,.0f} vs Centrifugo {theirs_conn_core:,.0f} "
      f"({ours_conn_core / theirs_conn_core:.2f}x)")
print(f"deliveries/s per core   {ours_msg_core:,.0f} vs Centrifugo {theirs_msg_core:,.0f} "
      f"({ours_msg_core / theirs_msg_core:.2f}x; not at saturation here)")
print(f"memory per connection   {mean_rss:,.0f} B vs Centrifugo ~{c['bytes_per_connection']:,} B "
      f"({mean_rss / c['bytes_per_connection']:.3f}x)")
