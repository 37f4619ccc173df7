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
servers = sorted({srv for _, srv in by if srv != "baseline-server"})
print("| scenario | metric | " + " | ".join(servers) + " | baseline | " + " | ".join(f"{s} / baseline" for s in servers) + " |")
print("|---|---|" + "---:|" * (2 * len(servers) + 1))
for scenario in scenarios:
    base = by.get((scenario, "baseline-server"), [])
    for name, path, fmt, _ in METRICS:
        ours = [median(by.get((scenario, srv), []), path) for srv in servers]
        b = median(base, path)
        if all(v is None for v in ours) and b is None:
            continue
        if name != "lost" and all(v in (0, None) for v in ours) and b in (0, None):
            continue
        scale = 1000.0 if name.startswith("p") and "ms" in name else (1024.0 if "KiB" in name else 1.0)
        show = lambda v: "–" if v is None else (fmt.format(v / scale) if isinstance(v, (int, float)) else str(v))
        ratio = lambda a: f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
        print(f"| {scenario} | {name} | " + " | ".join(show(a) for a in ours) + f" | {show(b)} | " + " | ".join(ratio(a) for a in ours) + " |")
