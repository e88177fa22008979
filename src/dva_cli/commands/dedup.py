"""``dva dedup``: near-duplicate pairs and groups in a gallery (see dva.retrieval.dedup)."""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._output import add_overwrite_argument, refuse_existing
from dva_cli._store import add_store_arguments

if TYPE_CHECKING:
    from dva.retrieval.dedup import Duplicates

NAME = "dedup"
HELP = "Find near-duplicate images in a gallery: pairs (and groups) whose stored vectors have cosine >= a threshold."
FORMATS = (".csv", ".json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="an index directory from `dva index` (the faiss store)")
    add_store_arguments(p)
    p.add_argument("--fingerprint", metavar="FP",
                   help="the model whose gallery to read, by its fingerprint (as `dva index` printed it): a Milvus "
                        "database holds one gallery per model; or name the model with --checkpoint/--backbone "
                        "(loaded only to learn its fingerprint). With --index: checked against the index's")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="cosine at or above which two images are duplicates (default 0.95; exact copies score 1)")
    p.add_argument("--out", help="write the result to this .csv or .json file (default: print a summary)")
    p.add_argument("--groups", action="store_true",
                   help="report groups (duplicates joined by transitivity): CSV one row per member; "
                        "JSON adds a 'groups' list beside the pairs")
    add_overwrite_argument(p, "--out")
    _model.add_model_arguments(p)


def _location(args: argparse.Namespace) -> str:
    """The gallery's location for ``--store``; refuses a mismatched pair of options."""
    if args.store == "faiss":
        if not args.index or args.uri:
            raise ValueError("the faiss store is an index directory: give --index INDEX (and no --uri)")
        return args.index
    if not args.uri or args.index:
        raise ValueError("the milvus store is reached by --uri (a gallery.db file or http(s)://HOST:PORT), "
                         "not --index")
    return args.uri


def _fingerprint(args: argparse.Namespace) -> str | None:
    """The model ``--fingerprint`` or the model options name (None: the gallery's only model).

    Raises:
        ValueError: both ``--fingerprint`` and a model given.
    """
    model = args.checkpoint or args.backbone
    if args.fingerprint and model:
        raise ValueError("give the model once: --fingerprint FP, or --checkpoint/--backbone (whose fingerprint "
                         "is then computed), not both")
    if args.fingerprint:
        return str(args.fingerprint)
    return _model.embedder_from_args(args).fingerprint if model else None


def _check_out(out: str | None, overwrite: bool) -> None:
    if out is None:
        return
    if Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: name a .csv or .json file (the format follows the extension)")
    refuse_existing(out, overwrite)


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.dedup import find_duplicates
    from dva.retrieval.galleries import open_gallery

    location = _location(args)
    _check_out(args.out, args.overwrite)  # before any work: a refusal costs a second
    fingerprint = _fingerprint(args)
    gallery = open_gallery(args.store, location, fingerprint=fingerprint)
    if fingerprint is not None:
        gallery.check_fingerprint(fingerprint)  # faiss: one model per directory, and it must be this one
    found = find_duplicates(gallery, args.threshold)
    if found.note:
        print(f"note: {found.note}", file=sys.stderr)
    if args.out:
        _write(found, Path(args.out), args.groups)
    in_groups = sum(len(g) for g in found.groups)
    print(f"{len(found.pairs)} pairs with cosine >= {found.threshold} among {found.count} images; "
          f"{len(found.groups)} groups holding {in_groups} images" + (f"; written to {args.out}" if args.out else ""))
    if not args.out:
        for p in found.pairs[:20]:
            print(f"  {p.score:.4f}  {p.a} {p.path_a}  ~  {p.b} {p.path_b}")
        if len(found.pairs) > 20:
            print(f"  ... {len(found.pairs) - 20} more: write them all with --out dups.csv")
    return 0


def to_csv(found: Duplicates, groups: bool = False) -> str:
    """Pairs (``id_a,id_b,score,path_a,path_b``) or, with ``groups``, one row per group member
    (``group,id,path``); a leading ``#`` line carries the note when the scores are approximate."""
    buf = io.StringIO()
    if found.note:
        buf.write(f"# {found.note}\n")
    w = csv.writer(buf, lineterminator="\n")
    if groups:
        paths = {p.a: p.path_a for p in found.pairs} | {p.b: p.path_b for p in found.pairs}
        w.writerow(["group", "id", "path"])
        w.writerows([g, i, paths[i]] for g, members in enumerate(found.groups) for i in members)
    else:
        w.writerow(["id_a", "id_b", "score", "path_a", "path_b"])
        w.writerows([p.a, p.b, f"{p.score:.6f}", p.path_a, p.path_b] for p in found.pairs)
    return buf.getvalue()


def _write(found: Duplicates, out: Path, groups: bool) -> None:
    from dva.utils import atomic_write_text

    if out.suffix.lower() == ".json":
        atomic_write_text(out, json.dumps(found.to_dict(groups=groups), indent=1) + "\n")
    else:
        atomic_write_text(out, to_csv(found, groups))
