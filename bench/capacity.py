#!/usr/bin/env python3
"""Capacity at a latency target (issue 29): for each shape and server, the highest publish
rate at which every event arrives and the p99 publish-to-receive latency stays at or under
the target, found by a search over rates (doubling until a rate fails, then bisecting), each
probe on a fresh server with fresh connections. Appends one JSON line per probe and one per
result to bench/results/capacity-<date>-<commit>.jsonl (first line: a header) and prints the
table.

  python3 bench/capacity.py                               # shapes a b c, 100 ms, 3 servers
  SHAPES="a" TARGETS_MS="100 1000" python3 bench/capacity.py
  ROUNDS=2 PROBE_SECONDS=8 STARTS="b=6000" SHAPES=b python3 bench/capacity.py

ROUNDS repeats every search (the table shows the medians), PROBE_SECONDS sets a probe's length
(default 3), BISECTIONS the steps after the first failing rate, STARTS the start rate per shape.

A probe passes when nothing is lost and p99 <= target. Latency is measured from when each event
was due (`--from-schedule`): a publisher held up behind slow publish answers counts its wait,
so falling behind the rate shows as latency.
"""
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from servers import free_port, wait_ready  # noqa: E402 (bench/ is on the path)

# (connections, topics, payload bytes, publishers, sources, start rate events/s)
SHAPES = {
    "a": dict(what="1 topic x 10 000 subscribers", connections=10000, topics=1, payload=64,
              publishers=1, sources=4, start=10),
    "b": dict(what="1 000 topics x 10 subscribers", connections=10000, topics=1000, payload=64,
              publishers=4, sources=4, start=1000),
    "c": dict(what="100 topics x 100 subscribers, 1 KiB JSON", connections=10000, topics=100,
              payload=1024, publishers=4, sources=4, start=100),
}
SERVERS = dict(s.split("=", 1) for s in os.environ.get(
    "SERVERS",
    "bench-server=target/release/bench-server baseline-server=target/release/baseline-server "
    "ceiling=target/release/ceiling-server").split())
SECONDS = float(os.environ.get("PROBE_SECONDS", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
# Start rates per shape, e.g. STARTS="a=180 b=6000": a search doubles from there, so starting
# at about half an earlier round's capacity saves the probes far below it.
for item in os.environ.get("STARTS", "").split():
    shape_name, start = item.split("=")
    SHAPES[shape_name]["start"] = float(start)
BISECTIONS = int(os.environ.get("BISECTIONS", "4"))
CEILING_RATE = 1_000_000


def probe(binary, shape, rate):
    port = free_port()
    env = dict(os.environ, PORT=str(port), MAX_STREAMS="1000000",
               MAX_STREAMS_PER_IP="1000000", MAX_TOPICS="1000000", REFUSALS="status")
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        events = max(3, round(SECONDS * rate / shape["topics"]))
        args = ["target/release/loadgen", "--addr", f"127.0.0.1:{port}", "--pid", str(server.pid),
                "--connections", str(shape["connections"]), "--topics", str(shape["topics"]),
                "--events", str(events), "--payload", str(shape["payload"]),
                "--publishers", str(shape["publishers"]), "--sources", str(shape["sources"]),
                "--rate", str(rate), "--from-schedule", "--label", "capacity"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=600).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait()


def passes(result, rate, target_ms):
    return result["lost"] == 0 and result["latency_us"]["p99"] <= target_ms * 1000


def search(name, binary, shape_name, shape, target_ms, log):
    """Doubles from the start rate until a probe fails, then bisects BISECTIONS times."""
    def run(rate):
        result = probe(binary, shape, rate)
        ok = passes(result, rate, target_ms)
        record = {"probe": {"server": name, "shape": shape_name, "target_ms": target_ms,
                            "rate": rate, "pass": ok}, "result": result}
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(f"  {name} {shape_name} {target_ms} ms: {rate:>9.0f}/s "
              f"p99 {result['latency_us']['p99'] / 1000:8.1f} ms "
              f"achieved {result['publishes_per_sec']:9.0f}/s lost {result['lost']} "
              f"-> {'pass' if ok else 'fail'}", flush=True)
        return ok

    low, high = 0.0, None
    rate = float(shape["start"])
    while high is None:
        if run(rate):
            low = rate
            rate *= 2
            if rate > CEILING_RATE:
                return low
        else:
            high = rate
    for _ in range(BISECTIONS):
        if low == 0 and high <= 1:
            break
        middle = (low + high) / 2 if low > 0 else high / 2
        if run(middle):
            low = middle
        else:
            high = middle
    return low


def main():
    shapes = os.environ.get("SHAPES", "a b c").split()
    targets = [int(t) for t in os.environ.get("TARGETS_MS", "100").split()]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "bench-server",
                    "-p", "baseline-server", "-p", "ceiling-server", "-p", "loadgen"], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.environ.get("OUT", f"bench/results/capacity-{stamp}-{commit}.jsonl")
    results = {}
    with open(path, "a") as log:
        log.write(json.dumps({"header": {
            "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(), "cpus": os.cpu_count(), "kernel": os.uname().release,
            "shapes": shapes, "targets_ms": targets, "servers": SERVERS,
            "probe_seconds": SECONDS, "bisections": BISECTIONS, "rounds": ROUNDS,
            "starts": {k: v["start"] for k, v in SHAPES.items()}}}) + "\n")
        for r in range(ROUNDS):
            for shape_name in shapes:
                shape = SHAPES[shape_name]
                for target in targets:
                    # A different server order per shape and round, so none always runs on a
                    # warmer machine.
                    order = list(SERVERS.items())
                    random.Random(f"{shape_name}{target}{r}").shuffle(order)
                    for name, binary in order:
                        capacity = search(name, binary, shape_name, shape, target, log)
                        results.setdefault((shape_name, target, name), []).append(capacity)
                        log.write(json.dumps({"capacity": {
                            "server": name, "shape": shape_name, "target_ms": target,
                            "round": r, "events_per_s": capacity}}) + "\n")
    results = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{path}\n")
    names = list(SERVERS)
    print("| shape | p99 target | " + " | ".join(names) + " | bench-server / ceiling | "
          "bench-server / baseline |")
    print("|---|---:|" + "---:|" * (len(names) + 2))
    for shape_name in shapes:
        for target in targets:
            row = [results[(shape_name, target, n)] for n in names]
            ours = results.get((shape_name, target, "bench-server"))
            ceiling = results.get((shape_name, target, "ceiling"))
            baseline = results.get((shape_name, target, "baseline-server"))
            ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
            print(f"| {shape_name}: {SHAPES[shape_name]['what']} | {target} ms | "
                  + " | ".join(f"{r:,.0f}/s" for r in row)
                  + f" | {ratio(ours, ceiling)} | {ratio(ours, baseline)} |")


if __name__ == "__main__":
    sys.exit(main())
