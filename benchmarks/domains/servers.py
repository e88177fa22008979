"""``dva serve`` processes on the loopback interface: resident memory and per-query latency.

One server is started per setting (N single-domain servers, one N-domain server), warmed up
with a query, measured (RSS with psutil, idle after the warm-up and after the timed queries),
timed over HTTP (the whole request: upload, decode, embed, search, JSON), and stopped.
"""
from __future__ import annotations

import http.client
import mimetypes
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks import _common as C


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: bytes, filename: str, timeout: float = 120.0) -> tuple[int, float, bytes]:
    """POST ``body`` as the multipart field ``file`` to ``path``; (status, seconds, response body)."""
    boundary = uuid.uuid4().hex
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, data, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        out = resp.read()
        return resp.status, time.perf_counter() - t0, out
    finally:
        conn.close()


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


class Server:
    """A ``dva serve`` child process with the given model/domain arguments (a context manager)."""

    def __init__(self, args: list[str], log: Path, start_timeout: float = 600.0) -> None:
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "dva_cli", "serve", *args, "--port", str(self.port)]
        self.log, self.start_timeout = log, start_timeout

    def __enter__(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "a")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env={**C.child_env(), "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + self.start_timeout
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/api/info")
                c.getresponse().read()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"dva serve did not start: {' '.join(self.cmd)} (see {self.log})") from None
                time.sleep(0.3)
        self.start_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._fh.close()

    def rss_mb(self) -> float:
        return rss(self.proc.pid) / 2**20


def timed(server: Server, queries: list[tuple[str, bytes]], path: str, repeats: int) -> dict:
    """``repeats`` uploads cycling over ``queries`` to ``path``; latency percentiles in ms."""
    lat, bad = [], 0
    for i in range(repeats):
        name, body = queries[i % len(queries)]
        status, t, _ = post(server.port, path, body, name)
        bad += status != 200
        lat.append(t)
    a = np.array(lat) * 1000
    return {"requests": repeats, "errors": bad, "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def measure(args: list[str], queries: list[tuple[str, bytes]], paths: dict[str, str], repeats: int,
            log: Path) -> dict:
    """Start a server, warm it up, measure its memory and the latency of each request ``path``."""
    with Server(args, log) as s:
        for name, body in queries[:2]:  # first forward passes, allocator steady state
            post(s.port, next(iter(paths.values())), body, name)
        time.sleep(0.5)
        idle = s.rss_mb()
        lat = {k: timed(s, queries, p, repeats) for k, p in paths.items()}
        after = s.rss_mb()
        return {"start_s": round(s.start_s, 1), "rss_idle_mb": round(idle, 1), "rss_after_mb": round(after, 1),
                "latency": lat}
