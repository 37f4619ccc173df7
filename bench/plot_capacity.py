#!/usr/bin/env python3
"""The capacity at a latency target of bench/capacity.py results as a PNG: for each shape and
p99 target, one bar per server (the median over the rounds, each round's result a dot), on a
log scale, with the bench-server / ceiling and bench-server / baseline ratios written above.

    pip install matplotlib
    python3 bench/plot_capacity.py OUT.png RESULTS.jsonl [RESULTS.jsonl ...]

Prints the plotted medians as a Markdown table."""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, files = sys.argv[1], sys.argv[2:]
found = defaultdict(list)  # (shape, target_ms, server) -> [events/s per round]
what = {}
for path in files:
    for line in open(path):
        row = json.loads(line)
        if "capacity" in row:
            c = row["capacity"]
            found[(c["shape"], c["target_ms"], c["server"])].append(c["events_per_s"])
        elif "probe" in row:
            what[row["probe"]["shape"]] = (row["result"]["connections"], row["result"]["topics"],
                                           row["result"]["payload_bytes"])

servers = ["bench-server", "ceiling", "baseline-server"]
colors = {"bench-server": "#1f77b4", "ceiling": "#2ca02c", "baseline-server": "#d62728"}
cells = sorted({(s, t) for s, t, _ in found}, key=lambda c: (c[0], c[1]))
fig, ax = plt.subplots(figsize=(10, 5))
width = 0.8 / len(servers)
print("| shape | p99 target | " + " | ".join(servers) + " | bench-server / ceiling | "
      "bench-server / baseline | rounds |")
print("|---|---:|" + "---:|" * (len(servers) + 3))
for i, (shape, target) in enumerate(cells):
    medians = {}
    for j, server in enumerate(servers):
        values = found.get((shape, target, server), [])
        if not values:
            continue
        median = statistics.median(values)
        medians[server] = median
        x = i + (j - (len(servers) - 1) / 2) * width
        ax.bar(x, max(median, 1), width, color=colors[server],
               label=server if i == 0 else None)
        ax.scatter([x] * len(values), [max(v, 1) for v in values], color="black", s=8,
                   zorder=3)
    ours = medians.get("bench-server")
    ratio = lambda other: f"{ours / medians[other]:.2f}x" if ours and medians.get(other) else "-"
    top = max(medians.values() or [1])
    ax.text(i, top * 1.25, f"{ratio('ceiling')} ceiling\n{ratio('baseline-server')} baseline",
            ha="center", fontsize=8)
    rounds = max(len(found.get((shape, target, s), [])) for s in servers)
    print(f"| {shape} | {target} ms | "
          + " | ".join(f"{medians.get(s, 0):,.0f}/s" for s in servers)
          + f" | {ratio('ceiling')} | {ratio('baseline-server')} | {rounds} |")
labels = []
for shape, target in cells:
    connections, topics, payload = what.get(shape, (0, 0, 0))
    per_topic = connections // topics if topics else 0
    labels.append(f"{shape}: {topics:,} x {per_topic:,}, {payload} B\np99 <= {target} ms")
ax.set_xticks(range(len(cells)))
ax.set_xticklabels(labels, fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("publishes per second at the target (log)")
ax.set_title("Capacity at a latency target: highest publish rate with no loss and p99 within "
             "the target\n(10 000 streams; topics x subscribers per topic; median of the rounds,"
             " dots: each round)", fontsize=10)
ax.set_ylim(top=ax.get_ylim()[1] * 3)
ax.legend(loc="upper left", fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=110)
