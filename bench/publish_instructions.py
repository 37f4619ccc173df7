#!/usr/bin/env python3
"""What one HTTP publish costs a server, in instructions (issue 29): each server runs under
`valgrind --tool=callgrind`; a publisher sends keep-alive `POST /publish/{topic}` requests (64 B
JSON, one at a time, round-robin over the topics) while subscribers drain their streams. After
a warm-up the counters are zeroed, PUBLISHES requests are sent, the counters are dumped: the
user-space instructions of all the server's threads in that window, divided by the number of
publishes. Instruction counts are repeatable for the same binary and input whatever else the
machine does, so two builds of one server compare in one run (before/after a change).

  python3 bench/publish_instructions.py                      # the three servers
  SERVERS="before=/tmp/old/bench-server after=target/release/bench-server" \\
      python3 bench/publish_instructions.py

Environment: SERVERS (`name=binary` pairs), TOPICS (default 100), SUBSCRIBERS per topic
(space-separated cases, default "0 10"), PAYLOAD (body bytes, default 85), PUBLISHES (default 5000), TOP (functions listed per
run, inclusive, default 25; 0: none), KEEP (a directory to keep the callgrind dumps in, for
`callgrind_annotate`). Appends one JSON line per run to
bench/results/publish-instructions-<date>-<commit>.jsonl and prints a table.
"""
import glob
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from servers import free_port, wait_ready  # noqa: E402 (bench/ is on the path)

SERVERS = [s.split("=", 1) for s in os.environ.get(
    "SERVERS",
    "bench-server=target/release/bench-server baseline-server=target/release/baseline-server "
    "ceiling=target/release/ceiling-server").split()]
TOPICS = int(os.environ.get("TOPICS", "100"))
CASES = [int(n) for n in os.environ.get("SUBSCRIBERS", "0 10").split()]
PUBLISHES = int(os.environ.get("PUBLISHES", "5000"))
TOP = int(os.environ.get("TOP", "25"))
# SYSCALLS=1: the server runs natively and `perf stat` counts its system calls in the same
# window instead (per publish: reads, writes, epoll waits, futex wake-ups).
SYSCALLS = os.environ.get("SYSCALLS") == "1"
COUNTED = ["read", "recvfrom", "write", "writev", "sendto", "epoll_wait", "futex", "accept4"]
WARMUP = 500
BODY = b'{"seq":1234567,"device":"pump-17","value":21.5,"unit":"celsius","ok":true,"pad":""}'
# PAYLOAD pads the body to that many bytes (a JSON string of x's), e.g. 1024 for shape c.
BODY = BODY[:-2] + b"x" * max(0, int(os.environ.get("PAYLOAD", "0")) - len(BODY)) + BODY[-2:]


def request(sock, head, body=b""):
    """Sends one request and reads one response on a keep-alive socket; returns its status."""
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the publisher's connection")
        data += chunk
    head_end = data.index(b"\r\n\r\n") + 4
    status = int(data.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data[:head_end])
    need = int(length.group(1)) if length else 0
    body = data[head_end:]
    while len(body) < need:
        body += sock.recv(65536)
    return status, body[:need]


def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return request(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


class Drain(threading.Thread):
    """Opens the streams and reads everything they send until stopped."""

    def __init__(self, port, topics, per_topic):
        super().__init__(daemon=True)
        self.selector = selectors.DefaultSelector()
        self.socks = []
        for t in range(topics):
            for _ in range(per_topic):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(f"GET /sse/t{t} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                             "\r\n\r\n".encode())
                sock.setblocking(False)
                self.selector.register(sock, selectors.EVENT_READ)
                self.socks.append(sock)
        self.bytes = 0
        self.stopped = False

    def run(self):
        while not self.stopped:
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    self.bytes += len(key.fileobj.recv(1 << 20))
                except BlockingIOError:
                    pass

    def close(self):
        self.stopped = True
        self.join()
        for sock in self.socks:
            sock.close()


def wait_subscribers(port, expected):
    for _ in range(1200):
        _, body = get(port, "/stats")
        if json.loads(body).get("subscribers") == expected:
            return
        time.sleep(0.1)
    raise RuntimeError(f"never saw {expected} subscribers")


def measure(name, binary, per_topic, outdir):
    port = free_port()
    out = os.path.join(outdir, f"{name}-{per_topic}.out")
    env = dict(os.environ, PORT=str(port), MAX_STREAMS="1000000", MAX_STREAMS_PER_IP="1000000",
               MAX_TOPICS="1000000")
    tool = [] if SYSCALLS else ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    server = subprocess.Popen(tool + [binary], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    perf = None
    drain = None
    try:
        wait_ready(port, server, seconds=120)  # valgrind starts slowly
        drain = Drain(port, TOPICS, per_topic)
        drain.start()
        wait_subscribers(port, TOPICS * per_topic)
        publisher = socket.create_connection(("127.0.0.1", port), timeout=60)
        publisher.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        heads = [(f"POST /publish/t{t} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  f"\r\nContent-Length: {len(BODY)}\r\n\r\n").encode() for t in range(TOPICS)]

        def publish(n):
            for i in range(n):
                status, _ = request(publisher, heads[i % TOPICS], BODY)
                if status != 204:
                    raise RuntimeError(f"publish answered {status}")

        publish(WARMUP)
        if SYSCALLS:
            events = ",".join(f"syscalls:sys_enter_{c}" for c in COUNTED)
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", str(server.pid),
                                     "-o", out], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attaches asynchronously; nothing runs meanwhile
        else:
            subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True,
                           capture_output=True)
        publish(PUBLISHES)
        # Everything the publishes caused, written to the streams before the dump: wait until
        # the subscribers have read nothing new for a while.
        stable, deadline = 0, time.time() + 60
        while per_topic and stable < 3 and time.time() < deadline:
            before = drain.bytes
            time.sleep(0.3)
            stable = stable + 1 if drain.bytes == before else 0
        if perf:
            perf.send_signal(2)
            perf.wait()
        else:
            subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True,
                           capture_output=True)
        publisher.close()
    finally:
        if drain:
            drain.close()
        server.terminate()
        server.wait()
    if SYSCALLS:
        counts = {}
        for line in open(out):
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                counts[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
        return counts, ""
    # `--dump` writes `<out>.1`; the dump at exit is `<out>` itself.
    dump = out + ".1" if os.path.exists(out + ".1") else sorted(glob.glob(out + ".*"))[0]
    with open(dump) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith(("summary:",
                                                                            "totals:")))
    top = ""
    if TOP:
        top = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump],
                             capture_output=True, text=True).stdout
        lines = [line for line in top.splitlines() if re.match(r"\s*[\d,]+ \(", line)]
        top = "\n".join(lines[:TOP])
    return total, top


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs("bench/results", exist_ok=True)
    kind = "syscalls" if SYSCALLS else "instructions"
    path = f"bench/results/publish-{kind}-{stamp}-{commit}.jsonl"
    rows = []
    keep = os.environ.get("KEEP")  # a directory to keep the callgrind dumps in
    if keep:
        os.makedirs(keep, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(path, "a") as log:
        outdir = keep or tmp
        log.write(json.dumps(dict(kind="header", commit=commit, topics=TOPICS,
                                  publishes=PUBLISHES, body=len(BODY))) + "\n")
        for per_topic in CASES:
            for name, binary in SERVERS:
                total, top = measure(name, binary, per_topic, outdir)
                if SYSCALLS:
                    per_call = {k: round(v / PUBLISHES, 2) for k, v in total.items()}
                    log.write(json.dumps(dict(kind="syscalls", server=name, binary=binary,
                                              subscribers_per_topic=per_topic,
                                              per_publish=per_call)) + "\n")
                    print(f"{name:16} {per_topic:3} subscribers/topic, system calls per publish:"
                          f" {per_call}", flush=True)
                    continue
                per = total / PUBLISHES
                rows.append((per_topic, name, per))
                log.write(json.dumps(dict(kind="run", server=name, binary=binary,
                                          subscribers_per_topic=per_topic, instructions=total,
                                          per_publish=round(per))) + "\n")
                log.flush()
                print(f"{name:16} {per_topic:3} subscribers/topic: {per:9.0f} instructions"
                      " per publish", flush=True)
                if top:
                    print(top, flush=True)
    print(f"\n{path}")
    if SYSCALLS:
        return
    print("| subscribers per topic | " + " | ".join(n for n, _ in SERVERS) + " |")
    print("|---:|" + "---:|" * len(SERVERS))
    for per_topic in CASES:
        cells = [f"{per:,.0f}" for p, _, per in rows if p == per_topic]
        print(f"| {per_topic} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
