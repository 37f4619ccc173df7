#!/usr/bin/env python3
"""Medians per scenario and server from a bench/run.sh results file, as a Markdown table,
with the framework's figures as ratios against the baseline of the same run.

    python3 bench/summarize.py RESULTS.jsonl [REFERENCE]

REFERENCE names the server the others are compared with (default `baseline-server`; the
backplane runs use `inproc`). When the run has a `ceiling` server (bench/ceiling-server), every
other server is also compared with it, in columns of its own."""
import json
import statistics
import sys
from collections import defaultdict

records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
# The first record of a file run.sh wrote says where it comes from (commit, date, host).
for record in records:
    if "header" in record:
        h = record["header"]
        print(f"<!-- {sys.argv[1]}: commit {h.get('commit')}, {h.get('date')}, "
              f"host {h.get('host')}, {h.get('cpus')} CPUs, kernel {h.get('kernel')} -->")
rows = [record for record in records if "header" not in record]
REFERENCE = sys.argv[2] if len(sys.argv) > 2 else "baseline-server"
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
    ("load generator CPU µs/delivery", ("client_cpu_us_per_delivery",), "{:.2f}", "lower"),
    ("p50 ms", ("latency_us", "p50"), "{:.1f}", "lower"),
    ("p99 ms", ("latency_us", "p99"), "{:.1f}", "lower"),
    ("RSS/conn KiB", ("server_rss_per_connection_bytes",), "{:.1f}", "lower"),
    ("p50 ms, same instance", ("latency_same_instance_us", "p50"), "{:.2f}", "lower"),
    ("p50 ms, cross instance", ("latency_cross_instance_us", "p50"), "{:.2f}", "lower"),
    ("p99 ms, cross instance", ("latency_cross_instance_us", "p99"), "{:.2f}", "lower"),
    ("publishes/s (HTTP)", ("publishes_per_sec",), "{:,.0f}", "higher"),
    ("publishes/s through Redis", ("broker", "publishes_per_sec"), "{:,.0f}", "higher"),
    ("server CPU µs/publish", ("server_cpu_us_per_publish",), "{:.1f}", "lower"),
    ("Redis scripts/publish", ("broker", "scripts_per_publish"), "{:.2f}", "lower"),
    ("Redis commands/publish", ("broker", "calls_per_publish"), "{:.2f}", "lower"),
    ("Redis CPU µs/publish", ("broker", "cpu_us_per_publish"), "{:.1f}", "lower"),
    ("lost", ("lost",), "{:.0f}", "lower"),
    ("duplicated", ("duplicated",), "{:.0f}", "lower"),
    ("out of order", ("out_of_order",), "{:.0f}", "lower"),
    ("pollers started/stopped", ("pollers",), "{}", None),
]
scenarios = sorted({s for s, _ in by}, key=lambda s: (s[:2], s))
CEILING = "ceiling"
servers = sorted({srv for _, srv in by if srv not in (REFERENCE, CEILING)})
if any(srv == CEILING for _, srv in by):
    servers.append(CEILING)
under_ceiling = [s for s in servers if s != CEILING] if CEILING in servers else []
# Figures that only some servers report (the backplane's) are shown for those alone; figures
# only meaningful for the backplane runs are left out of the others' tables.
BACKPLANE_ONLY = ("same instance", "cross instance", "Redis", "publish", "duplicated", "out of order")
backplane_run = REFERENCE == "inproc"
ref_name = "baseline" if REFERENCE == "baseline-server" else REFERENCE
print(f"rounds: {max(r['round'] for r in rows)}  (medians; ratio = server / {ref_name} of the same run)\n")
print("| scenario | metric | " + " | ".join(servers) + f" | {ref_name} | " + " | ".join(f"{s} / {ref_name}" for s in servers) + "".join(f" | {s} / {CEILING}" for s in under_ceiling) + " |")
print("|---|---|" + "---:|" * (2 * len(servers) + 1 + len(under_ceiling)))
for scenario in scenarios:
    base = by.get((scenario, REFERENCE), [])
    for name, path, fmt, _ in METRICS:
        if not backplane_run and any(k in name for k in BACKPLANE_ONLY):
            continue
        ours = [median(by.get((scenario, srv), []), path) for srv in servers]
        b = median(base, path)
        c = median(by.get((scenario, CEILING), []), path)
        if all(v is None for v in ours) and b is None:
            continue
        if name not in ("lost", "duplicated", "out of order") and all(v in (0, None) for v in ours) and b in (0, None):
            continue
        scale = 1000.0 if name.startswith("p") and " ms" in name else (1024.0 if "KiB" in name else 1.0)
        show = lambda v: "–" if v is None else (fmt.format(v / scale) if isinstance(v, (int, float)) else str(v))
        ratio = lambda a, b=b: f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
        ceiling_ratios = "".join(f" | {ratio(a, c)}" for a, srv in zip(ours, servers) if srv in under_ceiling)
        print(f"| {scenario} | {name} | " + " | ".join(show(a) for a in ours) + f" | {show(b)} | " + " | ".join(ratio(a) for a in ours) + ceiling_ratios + " |")
