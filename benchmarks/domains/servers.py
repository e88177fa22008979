"""``dva serve`` processes on the loopback interface: resident memory and per-query latency.

Every setting's server (N single-domain servers, one N-domain server) runs at the same time,
is warmed up, measured (RSS with psutil, after the warm-up and after the timed queries) and
timed over HTTP (the whole request: upload, decode, embed, search, JSON) in interleaved rounds.
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


def _summary(lat: list[float], errors: int) -> dict:
    a = np.array(lat) * 1000
    return {"requests": len(lat), "errors": errors, "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def measure_all(settings: dict[str, tuple[list[str], dict[str, str]]], queries: dict[str, list[tuple[str, bytes]]],
                repeats: int, logs: Path) -> dict[str, dict]:
    """Run every server side by side, then time their requests interleaved.

    ``settings``: name -> (server arguments, request name -> path); ``queries``: name -> the
    uploads it cycles over. Every server is idle but one at a time, and each round sends one
    request of every kind to every server before the next round, so that all of them see the
    same load of a machine shared with other work. Memory: RSS after a warm-up and after the rounds.
    """
    from contextlib import ExitStack

    with ExitStack() as stack:
        servers = {k: stack.enter_context(Server(a, logs / f"{k}.log")) for k, (a, _) in settings.items()}
        for k, s in servers.items():  # first forward passes, allocator steady state
            for name, body in queries[k][:2]:
                for path in settings[k][1].values():
                    post(s.port, path, body, name)
        time.sleep(0.5)
        idle = {k: s.rss_mb() for k, s in servers.items()}
        lat: dict[tuple[str, str], list[float]] = {}
        bad: dict[tuple[str, str], int] = {}
        for i in range(repeats):
            for k, s in servers.items():
                name, body = queries[k][i % len(queries[k])]
                for kind, path in settings[k][1].items():
                    status, t, _ = post(s.port, path, body, name)
                    lat.setdefault((k, kind), []).append(t)
                    bad[(k, kind)] = bad.get((k, kind), 0) + (status != 200)
        return {k: {"start_s": round(s.start_s, 1), "rss_idle_mb": round(idle[k], 1),
                    "rss_after_mb": round(s.rss_mb(), 1),
                    "latency": {kind: _summary(lat[(k, kind)], bad[(k, kind)]) for kind in settings[k][1]}}
                for k, s in servers.items()}
