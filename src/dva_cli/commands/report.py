"""``dva report``: a static HTML page of retrieval results, activation maps and curves."""
from __future__ import annotations

import argparse
from pathlib import Path

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._format import positive_int

NAME = "report"
HELP = "Write a static HTML report: top-k per query, frozen vs DVA activation maps, curves."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p)
    p.add_argument("--index", required=True, help="an index directory from `dva index`")
    p.add_argument("queries", nargs="*", metavar="QUERY_IMAGE", help="query image files")
    p.add_argument("--query-list", help="a list file of queries: path per line or CSV path,label")
    p.add_argument("--out", required=True, help="the report folder (index.html + images/)")
    p.add_argument("--k", type=positive_int, default=8, help="hits per query (default 8)")
    p.add_argument("--log", help="a run's log.jsonl for the training curves (default: "
                                 "log.jsonl beside --checkpoint, when present)")


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.report import write_report
    from dva.retrieval.index import GalleryIndex
    from dva.retrieval.pipeline import summarize
    from dva.retrieval.search import gallery_items_at, hits_to_fetch, resolve_query_labels, search_paths, trim_hits
    from dva.retrieval.store.gallery import read_image_list

    queries = [str(Path(q).resolve()) for q in args.queries]
    labels = [None] * len(queries)
    if args.query_list:
        listed = read_image_list(args.query_list)
        queries += [it.path for it in listed]
        labels += [it.label for it in listed]
    if not queries:
        raise ValueError("give query images as arguments or with --query-list")
    index = GalleryIndex.load(args.index)
    embedder = _model.embedder_from_args(args)
    _model.check_query_model(index, embedder, args)
    from_gallery = resolve_query_labels(index, queries)
    labels = [lab if lab is not None else g for lab, g in zip(labels, from_gallery)]
    results = trim_hits(search_paths(index, embedder, queries, k=hits_to_fetch(index, queries, args.k),
                                     labels=labels), args.k)
    log = args.log
    if log is None and args.checkpoint:
        cand = Path(args.checkpoint).resolve().parent / "log.jsonl"
        log = str(cand) if cand.exists() else None
    in_gallery = set(gallery_items_at(index, queries))
    summary = {key: v for key, v in summarize(results, args.k, in_gallery).items() if v is not None}
    html = write_report(args.out, results, embedder=embedder, log_path=log,
                        summary={"index": args.index, "gallery images": len(index), **summary})
    print(f"report written to {html}")
    return 0
