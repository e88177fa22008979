"""``dva search``: the top-k gallery images for query images."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dva_cli import _model  # module attribute lookup: stays patchable in tests

NAME = "search"
HELP = "Search an index with query images; print the top-k gallery images."
LABEL_WIDTH = 24  # the label column's widest; longer labels are cut so the path column stays aligned


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--k 0`` is a usage error, not an empty answer)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", required=True, help="an index directory from `dva index`")
    p.add_argument("queries", nargs="*", metavar="QUERY_IMAGE",
                   help="query image files (a folder's images: FOLDER/*.jpg, or list them with --query-list)")
    p.add_argument("--query-list", help="a list file of query images: one path per line, or CSV path[,label]")
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default 10)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists visited (IVF-PQ only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def query_paths(queries: list[str], query_list: str | None) -> list[str]:
    """The query files of the command line, checked before any model is loaded.

    Raises:
        ValueError: no query, or one that is a folder (saying how to pass its images).
        FileNotFoundError: a query file that does not exist.
    """
    paths = list(queries)
    if query_list:
        from dva.retrieval.store.gallery import read_image_list

        paths += [it.path for it in read_image_list(query_list)]
    if not paths:
        raise ValueError("give query images as arguments or with --query-list")
    for q in paths:
        if Path(q).is_dir():
            raise ValueError(f"{q} is a folder, not an image: pass its images instead, e.g. '{Path(q) / '*.jpg'}' "
                             "unquoted (the shell lists them), or write their paths in a text file, one per "
                             "line, and pass it with --query-list")
        if not Path(q).exists():
            raise FileNotFoundError(f"query image {q}: file not found")
    return paths


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.index import GalleryIndex
    from dva.retrieval.search import search_paths

    queries = query_paths(args.queries, args.query_list)
    index = GalleryIndex.load(args.index)
    embedder = _model.embedder_from_args(args)
    index.check_fingerprint(embedder.fingerprint)  # before any image work
    if args.nprobe:
        index.set_nprobe(args.nprobe)
    results = search_paths(index, embedder, queries, k=args.k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        print(format_results(results))
    return 0


def _cell(label: object, width: int) -> str:
    text = "" if label is None else " ".join(str(label).split())  # no newline or tab breaks the row
    return text if len(text) <= width else text[: width - 3] + "..."


def format_results(results: list) -> str:
    """The hits as a text table per query; labels cut to :data:`LABEL_WIDTH` so the columns align."""
    labels = [h.label for r in results for h in r.hits]
    labelled = any(lab is not None for lab in labels)
    width = max([5] + [len(_cell(lab, LABEL_WIDTH)) for lab in labels])
    lines = []
    for r in results:
        lines.append(f"query {r.query}")
        lines.append(f"  {'rank':>4}  {'cosine':>7}  " + (f"{'label':<{width}}  " if labelled else "") + "gallery image")
        for h in r.hits:
            lab = f"{_cell(h.label, width):<{width}}  " if labelled else ""
            lines.append(f"  {h.rank:4d}  {h.score:7.4f}  {lab}{h.path}")
    return "\n".join(lines)
