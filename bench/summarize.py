#!/usr/bin/env python3
"""Medians per scenario and server from a bench/run.sh results file, as a Markdown table,
with the framework's figures as ratios against the baseline of the same run."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = defaultdict(list)
for row in rows:
    by[(row["scenario"], row["server"])].append(row["result"])

def median(results, path):
    values = []
    for r in results:
        v = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None

METRICS = [
    ("deliveries/s", ("deliveries_per_sec",), "{:,.0f}", "higher"),
    ("CPU µs/delivery", ("server_cpu_us_per_delivery",), "{:.2f}", "lower"),
    ("p50 ms", ("latency_us", "p50"), "{:.1f}", "lower"),
    ("p99 ms", ("latency_us", "p99"), "{:.1f}", "lower"),
    ("RSS/conn KiB", ("server_rss_per_connection_bytes",), "{:.1f}", "lower"),
    ("lost", ("lost",), "{:.0f}", "lower"),
    ("pollers started/stopped", ("pollers",), "{}", None),
]
scenarios = sorted({s for s, _ in by}, key=lambda s: (s[:2], s))
print(f"rounds: {max(r['round'] for r in rows)}  (medians; ratio = framework / baseline)\n")
print("| scenario | metric | bench-server | baseline | ratio |")
print("|---|---|---:|---:|---:|")
for scenario in scenarios:
    ours, base = by.get((scenario, "bench-server"), []), by.get((scenario, "baseline-server"), [])
    for name, path, fmt, _ in METRICS:
        a, b = median(ours, path), median(base, path)
        if a is None and b is None:
            continue
        scale = 1000.0 if name.startswith("p") and "ms" in name else (1024.0 if "KiB" in name else 1.0)
        show = lambda v: "–" if v is None else (fmt.format(v / scale) if isinstance(v, (int, float)) else str(v))
        ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
        print(f"| {scenario} | {name} | {show(a)} | {show(b)} | {ratio} |")
