"""``dva index``: build a gallery (FAISS flat / IVF-PQ, or Milvus), or add to it and remove from it."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dva_cli._format import positive_int
from dva_cli._store import add_store_arguments

NAME = "index"
HELP = "Build a gallery index from `dva embed` output (FAISS flat/IVF-PQ or Milvus); add or remove items."
def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--embeddings", help="build: an embeddings directory from `dva embed`")
    what.add_argument("--add", metavar="EMB_DIR",
                      help="add the images of this embeddings directory (same model) to the existing gallery")
    what.add_argument("--remove", metavar="IDS|LIST",
                      help="remove items by id: comma-separated ids (3,17,42), or a file of ids, one per line")
    p.add_argument("--out",
                   help="the index directory (--store faiss): written by a build (this gallery's index there is "
                        "rebuilt in place, atomically for running searches), changed by --add/--remove")
    add_store_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out/--uri holds even when it is another gallery's index (default: refuse)")
    p.add_argument("--kind", choices=("flat", "ivfpq"), default="flat",
                   help="flat: exact; ivfpq: approximate and compact, for large galleries")
    p.add_argument("--nlist", type=positive_int, default=None, help="IVF lists (default ~4*sqrt(N))")
    p.add_argument("--m", type=positive_int, default=None,
                   help="PQ sub-quantizers, must divide the dimension (default <= 64)")
    p.add_argument("--nbits", type=positive_int, default=8, help="bits per PQ code (default 8)")
    p.add_argument("--nprobe", type=positive_int, default=None,
                   help="lists visited per query (default max(16, nlist/32))")
    p.add_argument("--train-size", type=positive_int, default=None,
                   help="vectors sampled to train IVF-PQ (default 40*max(nlist, 2**nbits))")
    p.add_argument("--refine", choices=("none", "fp16", "flat"), default="fp16",
                   help="IVF-PQ: re-rank candidates with stored fp16/fp32 vectors (default fp16; "
                        "none = PQ codes only, smallest, lower recall)")
    p.add_argument("--k-factor", type=positive_int, default=8,
                   help="IVF-PQ refine: candidates re-ranked per requested neighbour (default 8)")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of building a flat index when the gallery is too small "
                        "for IVF-PQ")


def location(args: argparse.Namespace, option: str = "--out") -> str:
    """Where the gallery is: ``--out``/``--index`` (faiss) or ``--uri`` (milvus), checked against ``--store``.

    Raises:
        ValueError: the option the store needs is missing, or the other store's is given.
    """
    path = getattr(args, option.lstrip("-"), None)
    if args.store == "milvus":
        if not args.uri:
            raise ValueError("--store milvus needs --uri: a Milvus Lite file (gallery.db) or http(s)://HOST:PORT")
        if path:
            raise ValueError(f"{option} names a FAISS index directory; with --store milvus the gallery is --uri")
        return str(args.uri)
    if args.uri:
        raise ValueError(f"--uri is for --store milvus; a FAISS gallery is the directory {option}")
    if not path:
        raise ValueError(f"give {option} INDEX (the index directory), or --store milvus --uri URI")
    return str(path)


def parse_ids(text: str) -> list[int]:
    """The ids of ``--remove``: ``3,17,42``, or a file with one id per line (blank lines and # comments skipped).

    Raises:
        ValueError: naming the item (and the file and line) that is not a whole number >= 0.
    """
    p = Path(text)
    if p.is_file():
        entries = [(f"{p}:{n}", line.split("#", 1)[0].strip())
                   for n, line in enumerate(p.read_text().splitlines(), 1)]
        entries = [(where, s) for where, s in entries if s]
    elif any(ch.isdigit() for ch in text) and set(text) <= set("0123456789, \t"):
        entries = [("--remove", s.strip()) for s in text.split(",") if s.strip()]
    else:
        raise ValueError(f"--remove {text!r}: neither comma-separated ids (3,17,42) nor a file of ids")
    ids = []
    for where, s in entries:
        if not s.isdigit():
            raise ValueError(f"{where}: {s!r} is not an id (a whole number >= 0)")
        ids.append(int(s))
    if not ids:
        raise ValueError(f"--remove {text!r}: no ids in it")
    return ids


def _faiss_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"kind": args.kind, "nlist": args.nlist, "m": args.m, "nbits": args.nbits, "nprobe": args.nprobe,
            "train_size": args.train_size, "refine": args.refine, "k_factor": args.k_factor,
            "fallback": not args.no_fallback}


def run(args: argparse.Namespace) -> int:
    where = location(args)
    if args.store == "faiss":
        from dva_cli._output import refuse_file_for_folder

        refuse_file_for_folder(where)
    if args.add:
        return _add(args, where)
    if args.remove:
        return _remove(args, where)
    return _build(args, where)


def _build(args: argparse.Namespace, where: str) -> int:
    from dva.retrieval.galleries import build_gallery

    params = _faiss_params(args) if args.store == "faiss" else {}
    g = build_gallery(args.embeddings, args.store, where, overwrite=args.overwrite, **params)
    if args.store == "milvus":
        print(f"indexed {len(g)} vectors (dim {g.dim}, milvus, model {g.fingerprint}) into {where}")
        return 0
    if g.meta["fallback_reason"]:
        print(f"note: {g.meta['fallback_reason']}")
    shown = ", ".join(f"{k}={v}" for k, v in g.meta["params"].items())
    print(f"indexed {len(g)} vectors (dim {g.dim}, {g.meta['kind']}{', ' + shown if shown else ''}, "
          f"model {g.fingerprint}) into {where} in {g.meta['build_seconds']:.1f}s")
    return 0


def _add(args: argparse.Namespace, where: str) -> int:
    import time

    import numpy as np

    from dva.retrieval.galleries import open_gallery
    from dva.retrieval.index import FingerprintMismatchError
    from dva.retrieval.store.embeddings import open_embeddings

    es = open_embeddings(args.add)
    g = open_gallery(args.store, where, fingerprint=es.fingerprint)
    if es.fingerprint != g.fingerprint:
        raise FingerprintMismatchError(
            f"{where} was built with model fingerprint {g.fingerprint} but {args.add} holds vectors of model "
            f"{es.fingerprint}; embed the new images with the gallery's model (the same checkpoint)")
    t0 = time.perf_counter()
    x = np.concatenate(list(es.chunks())) if len(es) else np.zeros((0, es.dim), np.float32)
    extras = list(es.extras) if getattr(es, "columns", ()) else None
    ids = g.add(x, list(es.paths), list(es.labels), extras)
    span = f"ids {ids[0]}..{ids[-1]}" if len(ids) else "nothing to add"
    print(f"added {len(ids)} images from {args.add} ({span}) to {where} in {time.perf_counter() - t0:.1f}s; "
          f"the gallery now holds {len(g)}")
    return 0


def _remove(args: argparse.Namespace, where: str) -> int:
    from dva.retrieval.galleries import open_gallery

    ids = parse_ids(args.remove)
    g = open_gallery(args.store, where)
    removed = g.remove(ids)
    absent = len(set(ids)) - removed
    note = f" ({absent} of the ids given were not in it)" if absent else ""
    print(f"removed {removed} item{'' if removed == 1 else 's'} from {where}{note}; the gallery now holds {len(g)}")
    return 0
