"""``dva search``: the top-k gallery images for query images."""
from __future__ import annotations

import argparse
import json

from dva_cli import _model  # module attribute lookup: stays patchable in tests

NAME = "search"
HELP = "Search an index with query images; print the top-k gallery images."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", required=True, help="an index directory from `dva index`")
    p.add_argument("queries", nargs="+", metavar="QUERY_IMAGE", help="query image files")
    p.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited (IVF-PQ only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.index import GalleryIndex
    from dva.retrieval.search import search_paths

    index = GalleryIndex.load(args.index)
    embedder = _model.embedder_from_args(args)
    index.check_fingerprint(embedder.fingerprint)  # before any image work
    if args.nprobe:
        index.set_nprobe(args.nprobe)
    results = search_paths(index, embedder, args.queries, k=args.k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    labelled = any(h.label is not None for r in results for h in r.hits)
    for r in results:
        print(f"query {r.query}")
        print(f"  {'rank':>4}  {'cosine':>7}  " + ("label" + " " * 11 if labelled else "") + "gallery image")
        for h in r.hits:
            lab = f"{'' if h.label is None else str(h.label):<16}" if labelled else ""
            print(f"  {h.rank:4d}  {h.score:7.4f}  {lab}{h.path}")
    return 0
