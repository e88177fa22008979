"""``dva eval``: embed a dataset's test images and report retrieval metrics.

With ``--checkpoint`` the trained backbone + adapters are evaluated; with only
``--backbone``/``--weights`` the frozen zero-shot baseline. Leave-one-out over the test set,
or query-vs-gallery when the split defines them.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

NAME = "eval"
HELP = "Evaluate retrieval (Recall@K, MAP@R) of a checkpoint or a frozen backbone on a dataset."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva.commands.embed import add_model_arguments
    from dva.data import DATASETS, PROTOCOLS

    add_model_arguments(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, choices=DATASETS, help="dataset reader")
    g.add_argument("--root", required=True, help="dataset folder (csv: the CSV file)")
    g.add_argument("--protocol", default="open", choices=PROTOCOLS,
                   help="open (default): unseen test classes; closed: official split")
    g.add_argument("--split", default="test", choices=("test", "train"),
                   help="which images to retrieve among, leave-one-out (default test)")
    g.add_argument("--strict-counts", action="store_true",
                   help="fail when dataset counts differ from the published ones")
    p.add_argument("--k", default="1,2,4,8", help="the K of Recall@K (default 1,2,4,8)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--out", help="also write the result as JSON to this file")
    p.add_argument("--save-embeddings", help="save embeddings + labels to this .npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dva.commands.embed import embedder_from_args
    from dva.commands.metrics import format_table, parse_ks
    from dva.data import load_split
    from dva.metrics import query_stats, retrieval_metrics

    ks = parse_ks(args.k)
    if not args.checkpoint and not args.backbone:
        raise ValueError("give --checkpoint (a trained model) or --backbone (the frozen "
                         "zero-shot baseline)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kept in split.warnings and reported below
        split = load_split(args.dataset, args.root, args.protocol, args.strict_counts)
    for w in split.warnings:
        print(f"WARNING: {w}", file=sys.stderr)

    t0 = time.perf_counter()
    embedder = embedder_from_args(args)
    progress = not args.no_progress

    def embed(records):  # -> (embeddings, labels)
        emb = embedder.embed_paths([r.path for r in records], batch_size=args.batch_size,
                                   num_workers=args.workers, progress=progress)
        return emb, np.asarray([r.label for r in records], dtype=np.int64)

    gallery_mode = args.split == "test" and split.query is not None and split.gallery is not None
    if gallery_mode:
        q_emb, q_lab = embed(split.query)
        g_emb, g_lab = embed(split.gallery)
        t_embed = time.perf_counter() - t0
        res = retrieval_metrics(q_emb, q_lab, ks, gallery_embeddings=g_emb, gallery_labels=g_lab)
        stats = query_stats(q_lab, g_lab)
    else:
        records = split.test if args.split == "test" else split.train
        q_emb, q_lab = embed(records)
        g_emb = g_lab = None
        t_embed = time.perf_counter() - t0
        res = retrieval_metrics(q_emb, q_lab, ks)
        stats = query_stats(q_lab)
    if args.save_embeddings:
        out_npz = Path(args.save_embeddings)
        out_npz.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if g_emb is None else {"gallery_embeddings": g_emb, "gallery_labels": g_lab}
        np.savez(out_npz, embeddings=q_emb, labels=q_lab, **extra)

    result = {
        "metrics": res,
        "dataset": split.name,
        "root": str(Path(args.root).resolve()),
        "protocol": split.protocol,
        "split": args.split,
        "mode": "query-gallery" if gallery_mode else "leave-one-out",
        **stats,
        "classes": len({int(x) for x in q_lab}),
        "checkpoint": args.checkpoint,
        "backbone": args.backbone,
        "weights": args.weights,
        "img_size": getattr(embedder, "img_size", args.img_size),
        "embedder_fingerprint": embedder.fingerprint,
        "dim": embedder.dim,
        "embed_seconds": round(t_embed, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "warnings": split.warnings,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{split.name} ({split.protocol}, {result['mode']}, {stats['scored_queries']} "
              f"queries, {result['classes']} classes)")
        print(format_table(res))
    return 0
