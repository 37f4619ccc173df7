"""What the bench scripts share: a free loopback port for a server under test, and waiting until
it answers `GET /stats` (the servers are separate processes: there is no event to await)."""
import socket
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, server=None, seconds=10):
    """Polls the server on `port` until it answers; fails early if `server` (its Popen) exits."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server on {port} exited ({server.returncode})")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server on {port} never answered")
