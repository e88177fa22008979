#!/usr/bin/env python
"""Search speed and recall of the gallery index, plus embedding throughput.

Searches: torch brute force (``q @ X.T`` + ``topk``), FAISS exact flat (``IndexFlatIP``) and
FAISS IVF-PQ built by ``dva.retrieval.index.build_index`` with its defaults (nlist ~ 4 sqrt(N),
m = 64 sub-quantizers of 8 bits, nprobe = max(16, nlist/32), re-ranking of 8k candidates with
fp16 vectors), searched with the PQ codes alone, with the re-ranking, and with 4x nprobe; on
synthetic clustered, L2-normalised 768-d vectors (see :func:`make_data`, fixed seed). Queries
are fresh points from the same clusters (not gallery members). recall@10 = overlap of the top 10
with the exact top 10 (FAISS flat). Throughput is measured with all queries in one batch and
as single-query latency (what the web service sees), medians over ``--repeats``.

Embedding: images/s of the bundled ImageNet MobileNetV2 at 224 px, frozen vs with the default
DVA adapters (``build_model(DVAConfig())``), batch 32, median over batches after a warm-up.

Usage::

    python -m benchmarks.search_speed.run                                   # 10k, 100k, 1M (~15 min)
    python -m benchmarks.search_speed.run --sizes 10000 --out /tmp/s.json   # smoke run

Writes a table to stdout and JSON to ``benchmarks/results/search_speed.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks import _common as C

DEFAULT_OUT = C.RESULTS / "search_speed.json"
T = TypeVar("T")


def make_data(n: int, nq: int, dim: int, latent: int, cluster_size: int, noise: float, iso: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gallery (n, dim) and queries (nq, dim), float32, L2-normalised.

    Clusters of ~``cluster_size`` points in a ``latent``-d space (centre + ``noise`` * N(0, 1)),
    mapped to ``dim`` by a fixed random projection, plus ``iso`` * N(0, 1) in every dimension:
    clustered, with the low intrinsic dimension of real embeddings (isotropic 768-d noise
    would make every neighbour list random and no index could find it).
    """
    rng = np.random.default_rng(seed)
    n_cls = max(2, n // cluster_size)
    proj = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)
    centers = rng.standard_normal((n_cls, latent), dtype=np.float32)

    def points(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 16384):
            e = min(m, s + 16384)
            z = centers[rng.integers(0, n_cls, e - s)] + noise * rng.standard_normal((e - s, latent), dtype=np.float32)
            out[s:e] = z @ proj + iso * rng.standard_normal((e - s, dim), dtype=np.float32)
            out[s:e] /= np.linalg.norm(out[s:e], axis=1, keepdims=True)
        return out

    return points(n), points(nq)


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of each row of ``ids`` with the same row of ``exact`` (its top k), in [0, 1]."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[:k]) & set(e)) / k for a, e in zip(ids, exact)]))


def bench_size(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every search method on a gallery of ``n`` vectors: queries/s, single-query latency, recall@10."""
    import faiss
    import torch

    from dva.retrieval.index import build_index
    from dva.retrieval.store import EmbeddingSet

    nq = args.queries if n < 1_000_000 else args.queries_1m
    t0 = time.perf_counter()
    x, q = make_data(n, nq, args.dim, args.latent, args.cluster_size, args.noise, args.iso, args.seed)
    print(f"[{n}] data generated in {time.perf_counter() - t0:.1f}s ({nq} queries)", flush=True)
    k, rows = args.k, []
    single = q[: args.single]

    def record(method: str, batch_s: float, single_s: float, ids: np.ndarray, exact: np.ndarray,
               **extra: Any) -> None:
        rows.append({"n": n, "method": method, "queries": nq, "qps_batch": nq / batch_s,
                     "latency_ms_single": 1000 * single_s / len(single),
                     "recall@10": recall_at(ids, exact), **extra})
        r = rows[-1]
        print(f"[{n}] {method:<22} {r['qps_batch']:10.1f} q/s  {r['latency_ms_single']:8.2f} ms/query  "
              f"recall@10 {r['recall@10']:.3f}", flush=True)

    # exact FAISS flat first: its result is the reference
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(x)
    s_batch, (_, exact) = timed(lambda: flat.search(q, k), args.repeats)
    s_single, _ = timed(lambda: [flat.search(single[i:i + 1], k) for i in range(len(single))], args.repeats)
    record("faiss flat (exact)", s_batch, s_single, exact, exact)
    flat = None  # free the memory before the next method

    xt = torch.from_numpy(x)

    def torch_search(qq: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(qq), 64):
                out.append((torch.from_numpy(qq[s:s + 64]) @ xt.T).topk(k, dim=1).indices.numpy())
        return np.concatenate(out)

    s_batch, t_ids = timed(lambda: torch_search(q), args.repeats)
    s_single, _ = timed(lambda: [torch_search(single[i:i + 1]) for i in range(len(single))], args.repeats)
    record("torch brute force", s_batch, s_single, t_ids, exact)
    xt = None

    es = EmbeddingSet(x, [str(i) for i in range(n)], [None] * n, {"fingerprint": "benchmark"})
    if n < 39 * 256:  # build_index needs 39 training vectors per PQ centroid
        print(f"[{n}] ivfpq skipped: too few vectors to train 8-bit PQ codebooks", flush=True)
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gi = build_index(es, tmp, kind="ivfpq", fallback=False)  # the product's defaults
        build_s = time.perf_counter() - t0
        p = gi.meta["params"]
        print(f"[{n}] ivfpq built in {build_s:.1f}s: {p}", flush=True)
        file_bytes = sum(f.stat().st_size for f in Path(tmp).glob("*.faiss"))
        # PQ codes alone = the refine index's base (gi.index stays alive: it owns the base)
        base = faiss.downcast_index(faiss.downcast_index(gi.index).base_index)
        variants = [("ivfpq (PQ codes only)", base, p["nprobe"], "none"),
                    ("ivfpq + fp16 re-rank", gi, p["nprobe"], "fp16"),
                    ("ivfpq + fp16 re-rank", gi, min(p["nlist"], 4 * p["nprobe"]), "fp16")]
        for name, idx, nprobe, refine in variants:
            faiss.extract_index_ivf(idx.index if idx is gi else idx).nprobe = nprobe
            s_batch, (_, ids) = timed(lambda idx=idx: idx.search(q, k), args.repeats)
            s_single, _ = timed(lambda idx=idx: [idx.search(single[i:i + 1], k) for i in range(len(single))],
                                args.repeats)
            record(f"{name}, nprobe={nprobe}", s_batch, s_single, ids, exact,
                   build_s=build_s, params={**p, "nprobe": nprobe, "refine": refine},
                   index_file_bytes=file_bytes, pq_code_bytes=n * p["m"] * p["nbits"] // 8)
    return rows


def bench_embedding(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Images/s of the bundled MobileNetV2 at 224 px, batch 32: frozen and with the default adapters."""
    import torch

    from dva import DVAConfig, build_model
    from dva.runtime.torch_embedder import Embedder

    rows = []
    x = torch.randn(32, 3, 224, 224)
    for adapters in (False, True):
        cfg = DVAConfig()
        cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_100", "bundled", 224
        cfg.ica.enabled = adapters
        emb = Embedder(build_model(cfg, 0))
        trainable = sum(p.numel() for p in emb.model.parameters() if p.requires_grad)
        emb.embed_tensor(x)  # warm-up
        times = [timed(lambda emb=emb: emb.embed_tensor(x), 1)[0] for _ in range(args.embed_batches)]
        rows.append({"model": "mobilenetv2_100 bundled" + (" + DVA adapters" if adapters else " (frozen)"),
                     "img_size": 224, "batch": 32, "img_per_s": 32 / statistics.median(times),
                     "adapter_params": trainable})
        print(f"embed {rows[-1]['model']:<40} {rows[-1]['img_per_s']:7.1f} img/s", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.search_speed.run``."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_speed.run", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000, help="queries below 1M vectors")
    ap.add_argument("--queries-1m", type=int, default=200, help="queries at >= 1M vectors")
    ap.add_argument("--single", type=int, default=20, help="queries timed one by one")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--latent", type=int, default=64, help="intrinsic dimension of the data")
    ap.add_argument("--cluster-size", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.6, help="within-cluster spread (latent space)")
    ap.add_argument("--iso", type=float, default=0.05, help="isotropic noise in all dimensions")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embed-batches", type=int, default=5)
    ap.add_argument("--no-embed", action="store_true", help="skip the embedding throughput part")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return ap


def markdown_tables(search_rows: list[dict[str, Any]], embed_rows: list[dict[str, Any]]) -> str:
    """The search table, and the embedding table when there are embedding rows."""
    out = C.md_table(["gallery", "method", "queries/s (batch)", "ms/query (single)", "recall@10"],
                     [[f"{r['n']:,}", r["method"], f"{r['qps_batch']:,.0f}", f"{r['latency_ms_single']:.2f}",
                       f"{r['recall@10']:.3f}"] for r in search_rows], "rlrrr")
    if embed_rows:
        out += "\n\n" + C.md_table(["model", "img/s (224 px, batch 32)"],
                                    [[r["model"], f"{r['img_per_s']:.1f}"] for r in embed_rows], "lr")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the search and embedding benchmarks; print the tables, write the JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    import faiss
    import torch

    t_start = time.perf_counter()
    search_rows = [r for n in args.sizes for r in bench_size(n, args)]
    embed_rows = [] if args.no_embed else bench_embedding(args)
    result = {
        "command": C.command_line(__file__, argv),
        "date": C.now_utc(),
        "git_commit": C.git_commit(),
        "machine": {**C.machine_info(("torch", "faiss", "numpy")),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                    "faiss_threads": faiss.omp_get_max_threads(), "load_avg_at_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "faiss": faiss.__version__, "numpy": np.__version__},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "search": search_rows,
        "embedding": embed_rows,
        "total_seconds": time.perf_counter() - t_start,
    }
    C.write_json(args.out, result)
    print("\n" + markdown_tables(search_rows, embed_rows))
    print(f"\nwrote {args.out} ({result['total_seconds']:.0f}s)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
