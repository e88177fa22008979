"""``dva index``: build a FAISS index (flat or IVF-PQ) over an embeddings directory."""
from __future__ import annotations

import argparse

from dva_cli._format import positive_int

NAME = "index"
HELP = "Build a FAISS index (exact flat or IVF-PQ) from `dva embed` output."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="an embeddings directory from `dva embed`")
    p.add_argument("--out", required=True,
                   help="the index directory to write (this gallery's index there is rebuilt in place, "
                        "atomically for running searches)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds even when it is another gallery's index (default: refuse)")
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


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.index import build_index
    from dva_cli._output import refuse_file_for_folder

    refuse_file_for_folder(args.out)

    gi = build_index(args.embeddings, args.out, kind=args.kind, nlist=args.nlist, m=args.m,
                     nbits=args.nbits, nprobe=args.nprobe, train_size=args.train_size,
                     refine=args.refine, k_factor=args.k_factor,
                     fallback=not args.no_fallback, overwrite=args.overwrite)
    if gi.meta["fallback_reason"]:
        print(f"note: {gi.meta['fallback_reason']}")
    params = ", ".join(f"{k}={v}" for k, v in gi.meta["params"].items())
    print(f"indexed {len(gi)} vectors (dim {gi.dim}, {gi.meta['kind']}{', ' + params if params else ''}, "
          f"model {gi.fingerprint}) into {args.out} in {gi.meta['build_seconds']:.1f}s")
    return 0
