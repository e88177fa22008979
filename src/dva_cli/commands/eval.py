"""``dva eval``: embed a dataset's images and report retrieval metrics.

With ``--checkpoint`` the trained backbone + adapters are evaluated; without it the frozen
zero-shot baseline (``--backbone``, default mobilenetv2_100, with ``--weights``). ``--split``
picks the images: ``test`` (default; leave-one-out, or query-vs-gallery when the split defines
them), ``train``, or ``all`` (leave-one-out over every image of the dataset, e.g. a whole folder).
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

from dva_cli import _model
from dva_cli._output import add_overwrite_argument, refuse_existing

NAME = "eval"
HELP = "Evaluate retrieval (Recall@K, MAP@R) of a checkpoint or a frozen backbone on a dataset."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva_cli._data import add_data_arguments

    _model.add_model_arguments(p, runtime=True, ica_scale=True)
    g = add_data_arguments(p)
    g.add_argument("--split", default="test", choices=("test", "train", "all"),
                   help="which images to retrieve among, leave-one-out (default test); all: every image of the "
                        "dataset, train and test classes together (score a model on a whole folder)")
    p.add_argument("--k", default="1,2,4,8", help="the K of Recall@K (default 1,2,4,8)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--out", help="also write the result as JSON to this file")
    p.add_argument("--save-embeddings", help="save embeddings + labels to this .npz")
    add_overwrite_argument(p, "the --out and --save-embeddings files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dva.data import load_split
    from dva.evaluation import check_evaluable, evaluate
    from dva.utils import atomic_write_json
    from dva_cli._format import format_table, parse_ks

    ks = parse_ks(args.k)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    refuse_existing(args.out, args.overwrite)  # before the split is read and the images embedded
    if args.save_embeddings and not str(args.save_embeddings).endswith(".npz"):
        args.save_embeddings = f"{args.save_embeddings}.npz"  # what np.savez writes: check that name
    refuse_existing(args.save_embeddings, args.overwrite, "--save-embeddings")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kept in split.warnings and reported below
        split = load_split(args.dataset, args.root, args.protocol, args.strict_counts)
    for w in split.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    which = args.split
    if which == "all":  # leave-one-out over every image: the test set becomes train + test (labels are global ids)
        import dataclasses

        split = dataclasses.replace(split, test=[*split.train, *split.test], query=None, gallery=None)
        which = "test"
    # Before the model is built: a split that cannot measure retrieval fails here, in a second.
    excluded = check_evaluable(split, which)
    for w in excluded:
        print(f"WARNING: {w}", file=sys.stderr)

    t0 = time.perf_counter()
    embedder = _model.embedder_from_args(args)
    from dva.data import ImageReadError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # check_evaluable's warnings, printed above
            ev = evaluate(embedder, split, which, ks, batch_size=args.batch_size, num_workers=args.workers,
                          progress=not args.no_progress)
    except ImageReadError as exc:  # list every unreadable file at once, not one per rerun
        from dva_cli._data import all_unreadable, check_hint, split_paths

        every = all_unreadable(split_paths(split), check_hint(args.dataset, args.root, args.protocol))
        if every is None:
            raise
        raise every from exc
    if args.save_embeddings:
        out_npz = Path(args.save_embeddings)
        out_npz.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if ev.gallery_embeddings is None else {"gallery_embeddings": ev.gallery_embeddings,
                                                           "gallery_labels": ev.gallery_labels}
        np.savez(out_npz, embeddings=ev.embeddings, labels=ev.labels, **extra)
    result = {
        "metrics": ev.metrics, "dataset": split.name, "root": str(Path(args.root).resolve()),
        "protocol": split.protocol, "split": args.split, "mode": ev.mode, **ev.stats, "classes": ev.classes,
        "checkpoint": args.checkpoint, "backbone": args.backbone or (None if args.checkpoint else _model.DEFAULT_BACKBONE),
        "weights": args.weights, "ica_scale": args.ica_scale, "img_size": embedder.img_size,
        "embedder_fingerprint": embedder.fingerprint,
        "runtime": getattr(embedder, "runtime", "torch"),
        "dim": embedder.dim, "embed_seconds": round(ev.embed_seconds, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
        "warnings": [*split.warnings, *ev.warnings],
    }
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        dropped = ev.stats["excluded_queries"]
        print(f"{split.name} ({split.protocol}, {ev.mode}, {ev.stats['scored_queries']} "
              f"queries{f' ({dropped} EXCLUDED: no match to find)' if dropped else ''}, {ev.classes} classes)")
        print(format_table(ev.metrics))
    return 0
