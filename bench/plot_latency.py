#!/usr/bin/env python3
"""The latency curve of a bench/run.sh results file as a PNG: publish-to-receive p50 and p99
against the publish rate, one line pair per server, medians over the rounds.

    pip install matplotlib
    python3 bench/plot_latency.py RESULTS.jsonl OUT.png [SCENARIO_PREFIX]

It plots the scenarios whose name starts with SCENARIO_PREFIX (default `C`: C10, C25, C50,
C100, i.e. S2's 10 000 subscribers at 10 to 100 events/s) and prints the plotted medians as a
Markdown table."""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, out = sys.argv[1], sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else "C"
by = defaultdict(list)  # (server, rate) -> [result]
for line in open(results):
    if not line.strip():
        continue
    row = json.loads(line)
    if "header" in row:  # where the file comes from, not a run
        continue
    scenario, result = row["scenario"], row["result"]
    if scenario.startswith(prefix) and result.get("rate"):
        by[(row["server"], result["rate"])].append(result)

servers = sorted({server for server, _ in by}, key=lambda s: (s == "ceiling", s))
rates = sorted({rate for _, rate in by})
STYLE = {"bench-server": "tab:blue", "baseline-server": "tab:red", "ceiling": "tab:green"}

fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
print("| events/s | " + " | ".join(f"{s} p50 ms | {s} p99 ms" for s in servers) + " |")
print("|---:|" + "---:|---:|" * len(servers))
table = {rate: [] for rate in rates}
for server in servers:
    xs, p50s, p99s = [], [], []
    for rate in rates:
        runs = by.get((server, rate), [])
        if not runs:
            table[rate] += ["–", "–"]
            continue
        p50 = statistics.median(r["latency_us"]["p50"] for r in runs) / 1000
        p99 = statistics.median(r["latency_us"]["p99"] for r in runs) / 1000
        xs.append(rate)
        p50s.append(p50)
        p99s.append(p99)
        table[rate] += [f"{p50:.1f}", f"{p99:.1f}"]
    color = STYLE.get(server)
    ax.plot(xs, p50s, "o-", color=color, label=f"{server} p50")
    ax.plot(xs, p99s, "s--", color=color, label=f"{server} p99")
for rate in rates:
    print(f"| {rate:g} | " + " | ".join(table[rate]) + " |")

rounds = max(len(v) for v in by.values())
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xticks(rates)
ax.set_xticklabels([f"{r:g}" for r in rates])
ax.set_xlabel("events/s published to one topic (10 000 subscribers)")
ax.set_ylabel("publish-to-receive latency, ms (log)")
ax.set_title(f"Fan-out latency against publish rate (medians of {rounds} rounds)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8, ncol=len(servers))
fig.tight_layout()
fig.savefig(out)
