#!/usr/bin/env python3
"""What new streams cost (issue 29): a reconnect wave per server, `loadgen --wave`. CONNECTIONS
streams over TOPICS topics from SOURCES loopback addresses are opened and get three events per
topic; every client then drops its connection at once, two events per topic are published while
they are away, and all of them come back at the same instant, half with `Last-Event-ID`. Each
run on a fresh server, the servers taking turns round after round. Appends one JSON line per
run to bench/results/wave-<date>-<commit>.jsonl and prints the medians.

  python3 bench/wave.py
  SERVERS="before=/tmp/bench-server after=target/release/bench-server" ROUNDS=5 \\
      python3 bench/wave.py

Environment: SERVERS (`name=binary` or `name=binary@VAR=value,...` for the server's
environment), CONNECTIONS (default 19000), TOPICS (default 1000), SOURCES (default 32: 594
streams per address, under the default cap of 1 000 per client), ROUNDS (default 3).
Default settings but `MAX_STREAMS` (the default 10 000 is below 19 000 streams): a server's
own clients coming back must not be refused.
"""
import json
import os
import statistics
import subprocess
import sys
import time

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from servers import free_port, wait_ready  # noqa: E402 (bench/ is on the path)

SERVERS = []
for spec in os.environ.get(
        "SERVERS",
        "bench-server=target/release/bench-server baseline-server=target/release/baseline-server "
        "baseline-deep-queue=target/release/baseline-server@BACKLOG=65535 "
        "ceiling=target/release/ceiling-server").split():
    name, rest = spec.split("=", 1)
    binary, _, extra = rest.partition("@")
    env = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
    SERVERS.append((name, binary, env))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "19000"))
TOPICS = int(os.environ.get("TOPICS", "1000"))
SOURCES = int(os.environ.get("SOURCES", "32"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def run(binary, extra):
    port = free_port()
    env = dict(os.environ, PORT=str(port), MAX_STREAMS=str(CONNECTIONS), **extra)
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        args = ["target/release/loadgen", "--wave", "--addr", f"127.0.0.1:{port}",
                "--pid", str(server.pid), "--connections", str(CONNECTIONS),
                "--topics", str(TOPICS), "--sources", str(SOURCES), "--label", "wave"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait()


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs("bench/results", exist_ok=True)
    path = f"bench/results/wave-{stamp}-{commit}.jsonl"
    results = {name: [] for name, _, _ in SERVERS}
    with open(path, "a") as log:
        log.write(json.dumps(dict(kind="header", commit=commit, connections=CONNECTIONS,
                                  topics=TOPICS, sources=SOURCES, rounds=ROUNDS,
                                  servers=[[n, b, e] for n, b, e in SERVERS])) + "\n")
        for r in range(ROUNDS):
            for name, binary, extra in SERVERS:
                result = run(binary, extra)
                results[name].append(result)
                log.write(json.dumps(dict(kind="run", round=r, server=name, result=result))
                          + "\n")
                log.flush()
                rss = result["server_rss_kib"]
                print(f"round {r} {name:22} last live {result['live_ms']['last']:5} ms, p50 "
                      f"{result['live_ms']['p50']:5} ms, {result['streams_per_sec']:8.0f}/s, "
                      f"cpu {result['server_cpu_s']:.2f} s, peak +{rss['peak'] - rss['before']}"
                      f" KiB, refused {result['refused']}, failed {result['failed']}, "
                      f"missed {result['missed_after']}, replayed {result['replayed']}",
                      flush=True)

    def med(name, get):
        return statistics.median(get(r) for r in results[name])

    print(f"\n{path}\n")
    print("| server | all live (ms) | p50 live (ms) | new streams/s | CPU µs per stream | "
          "RSS before (MiB) | peak during the wave (MiB) | refused / failed / missed | "
          "replayed to the resumed half |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in SERVERS:
        rows = results[name]
        print(f"| {name} | {med(name, lambda r: r['live_ms']['last']):,.0f} | "
              f"{med(name, lambda r: r['live_ms']['p50']):,.0f} | "
              f"{med(name, lambda r: r['streams_per_sec']):,.0f} | "
              f"{med(name, lambda r: r['server_cpu_us_per_stream']):.0f} | "
              f"{med(name, lambda r: r['server_rss_kib']['before']) / 1024:.1f} | "
              f"{med(name, lambda r: r['server_rss_kib']['peak']) / 1024:.1f} | "
              f"{sum(r['refused'] for r in rows)} / {sum(r['failed'] for r in rows)} / "
              f"{sum(r['missed_after'] for r in rows)} | "
              f"{med(name, lambda r: r['replayed']):,.0f} of {rows[0]['replay_expected']:,} |")


if __name__ == "__main__":
    sys.exit(main())
