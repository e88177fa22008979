"""``dva metrics``: Recall@K, MAP@R and R-Precision of saved embeddings (``.npy``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dva_cli._format import format_table, parse_ks

NAME = "metrics"
HELP = "Compute Recall@K, MAP@R and R-Precision from embeddings and labels saved as .npy."


def load_npy(path: str, what: str):  # -> np.ndarray
    """Load a ``.npy`` file with an error naming it."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {what} file {p} as .npy: {exc}") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="(N, D) .npy of query embeddings")
    p.add_argument("--labels", required=True, help="(N,) .npy of query labels")
    p.add_argument("--k", default="1,2,4,8", help="the K of Recall@K (default 1,2,4,8)")
    p.add_argument("--gallery-embeddings", help="(M, D) .npy gallery (default: leave-one-out)")
    p.add_argument("--gallery-labels", help="(M,) .npy gallery labels")
    p.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default auto)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from dva.metrics import query_stats, retrieval_metrics

    ks = parse_ks(args.k)
    if (args.gallery_embeddings is None) != (args.gallery_labels is None):
        raise ValueError("give both --gallery-embeddings and --gallery-labels, or neither")
    emb = load_npy(args.embeddings, "embeddings")
    labels = load_npy(args.labels, "labels")
    gemb = glab = None
    if args.gallery_embeddings:
        gemb = load_npy(args.gallery_embeddings, "gallery embeddings")
        glab = load_npy(args.gallery_labels, "gallery labels")
    res = retrieval_metrics(emb, labels, ks, gallery_embeddings=gemb, gallery_labels=glab,
                            chunk_size=args.chunk_size)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(format_table(res))
    stats = query_stats(labels, glab)
    if stats["excluded_queries"]:
        print(f"({stats['excluded_queries']} of {stats['queries']} queries have no relevant "
              "item and are excluded)")
    return 0
