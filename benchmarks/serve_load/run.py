#!/usr/bin/env python
"""Load test of ``dva serve`` on the loopback interface: memory and latency under concurrent uploads.

Starts ``dva serve`` (the frozen bundled MobileNetV2 over a small generated gallery) on
127.0.0.1 at a free port, once per ``--max-decodes`` setting, and sends it ``--clients``
concurrent clients, each uploading the same large PNG ``--requests`` times (6300 x 6300 px,
~0.1 MB: it compresses well but decodes to 119 MB of RGB, under the server's 40 MP limit). The
loop is bounded in count and time and stops by itself. Records per setting: latency p50 / p95 /
max, errors (any status other than 200, or a failed connection), the server's resident memory
idle, at its peak (sampled every 20 ms) and after the load.

Usage::

    python -m benchmarks.serve_load.run                       # settings 1, 2 (default), 8
    python -m benchmarks.serve_load.run --requests 2 --out /tmp/s.json   # smoke run

Writes a table to stdout, JSON to ``benchmarks/results/serve_load.json`` and, unless
``--no-doc``, the section "## dva serve under load" of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks import _common as C

SECTION = "## dva serve under load"


def big_png(side: int = 6300) -> bytes:
    """A ``side`` x ``side`` RGB PNG of large flat tiles: tiny on disk, huge once decoded."""
    import numpy as np
    from PIL import Image

    tiles = np.random.default_rng(0).integers(0, 255, (9, 9, 3), dtype=np.uint8)
    img = Image.fromarray(tiles).resize((side, side), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def build_gallery(work: Path, n: int = 32) -> Path:
    """Embed ``n`` generated images with the frozen bundled backbone and index them; returns the index."""
    from dva.data import make_synthetic
    from dva.runtime.load import load_embedder
    from dva.retrieval.index import build_index
    from dva.retrieval.store import embed_gallery, list_images

    make_synthetic(str(work / "gallery"), num_classes=4, per_class=n // 4, size=64, seed=0)
    emb = load_embedder(backbone="mobilenetv2_100", weights="bundled")
    embed_gallery(emb, list_images(work / "gallery"), work / "emb", progress=False)
    build_index(work / "emb", work / "idx")
    return work / "idx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, timeout: float) -> tuple[int, float]:
    boundary = uuid.uuid4().hex
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/search?k=5", data, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    except OSError:
        return -1, time.perf_counter() - t0
    finally:
        conn.close()


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def run_setting(index: Path, body: bytes, max_decodes: int, clients: int, requests: int,
                timeout: float) -> dict:
    """One server, ``clients`` x ``requests`` uploads; returns latency, errors and memory."""
    port = _free_port()
    cmd = [sys.executable, "-m", "dva_cli", "serve", "--index", str(index), "--backbone", "mobilenetv2_100",
           "--weights", "bundled", "--port", str(port), "--max-decodes", str(max_decodes)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:  # wait until it answers
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/api/info")
                c.getresponse().read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"dva serve did not start: {' '.join(cmd)}") from None
                time.sleep(0.5)
        _post(port, body, timeout)  # warm-up: first forward pass, allocator steady state
        time.sleep(1.0)
        idle = _rss(server.pid)
        peak, stop = [idle], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss(server.pid))
                time.sleep(0.02)

        results: list[tuple[int, float]] = []
        lock = threading.Lock()

        def client() -> None:
            for _ in range(requests):
                r = _post(port, body, timeout)
                with lock:
                    results.append(r)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        time.sleep(1.0)
        stop.set()
        sampler.join()
        after = _rss(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    import numpy as np

    lat = np.array(sorted(t for _, t in results))
    return {"max_decodes": max_decodes, "clients": clients, "requests": len(results),
            "errors": sum(1 for s, _ in results if s != 200), "wall_s": round(wall, 2),
            "p50_ms": round(1000 * float(np.percentile(lat, 50))), "p95_ms": round(1000 * float(np.percentile(lat, 95))),
            "max_ms": round(1000 * float(lat[-1])), "rss_idle_mb": round(idle / 2**20), "rss_peak_mb": round(peak[0] / 2**20),
            "rss_after_mb": round(after / 2**20), "peak_above_idle_mb": round((peak[0] - idle) / 2**20)}


def markdown(result: dict) -> str:
    rows = [(r["max_decodes"], f"{r['requests']} ({r['clients']} clients)", r["errors"], r["p50_ms"], r["p95_ms"],
             r["max_ms"], r["rss_idle_mb"], r["rss_peak_mb"], r["peak_above_idle_mb"], r["rss_after_mb"])
            for r in result["rows"]]
    table = C.md_table(("--max-decodes", "uploads", "errors", "p50 ms", "p95 ms", "max ms", "RSS idle MB",
                        "RSS peak MB", "peak above idle MB", "RSS after MB"), rows, "rlrrrrrrrr")
    m = result["machine"]
    return (f"`{C.current_command(result['command'])}` ({result['date']}, {m.get('cpu_count', '?')} CPU cores, load average "
            f"{result['load_before']:.1f} before the run).\n\n"
            f"Each upload: a {result['image']['side']} x {result['image']['side']} PNG of "
            f"{result['image']['bytes'] / 1024:.0f} KB ({result['image']['side'] ** 2 * 3 / 2**20:.0f} MB as RGB). "
            "The server (`dva serve`, frozen bundled MobileNetV2) runs on 127.0.0.1; `--max-decodes` bounds "
            "the uploads decoded at once (default 2), the others wait.\n\n" + table + "\n" + _verdict(result["rows"]))


def _verdict(rows: list[dict]) -> str:
    """One sentence comparing the default with the widest setting of the run."""
    by = {r["max_decodes"]: r for r in rows}
    if 2 not in by or len(by) < 2:
        return ""
    d, w = by[2], by[max(by)]
    return (f"\nWith the default (2 at once) the server's peak is {d['peak_above_idle_mb']} MB above idle and "
            f"p95 {d['p95_ms'] / 1000:.1f} s; letting {w['max_decodes']} decode at once raises the peak to "
            f"{w['peak_above_idle_mb']} MB and p95 to {w['p95_ms'] / 1000:.1f} s "
            f"({sum(r['errors'] for r in rows)} errors in all).\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve_load.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="1,2,8", help="--max-decodes values to compare (default 1,2,8)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=5, help="uploads per client (default 5)")
    ap.add_argument("--side", type=int, default=6300, help="image side in pixels (default 6300)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    ap.add_argument("--out", default=str(C.RESULTS / "serve_load.json"))
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the doc section from --out")
    args = ap.parse_args(argv)
    if args.render:
        C.update_doc(C.DOC, SECTION, markdown(json.loads(Path(args.out).read_text())))
        return 0
    import os

    load = os.getloadavg()[0]
    body = big_png(args.side)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_gallery(Path(tmp))
        rows = [run_setting(index, body, int(s), args.clients, args.requests, args.timeout)
                for s in args.settings.split(",")]
    result = {"rows": rows, "image": {"side": args.side, "bytes": len(body)}, "load_before": load}
    result = C.write_result(args.out, result, __file__, sys.argv[1:] if argv is None else argv, ("torch", "pillow"))
    print(markdown(result))
    if not args.no_doc:
        C.update_doc(C.DOC, SECTION, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
