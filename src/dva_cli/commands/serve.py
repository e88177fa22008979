"""``dva serve``: the search web service and page (see dva.retrieval.serve)."""
from __future__ import annotations

import argparse

from dva_cli import _model  # module attribute lookup: stays patchable in tests

NAME = "serve"
HELP = "Serve an index over HTTP: a search page at / and a JSON API (POST /search)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", required=True, help="an index directory from `dva index`")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--k", type=int, default=10, help="default hits per query")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="upload size limit (MiB)")
    p.add_argument("--max-decodes", type=int, default=2,
                   help="uploads decoded at once; the others wait (bounds memory; default 2)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited (IVF-PQ only)")


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.index import GalleryIndex
    from dva.retrieval.serve import serve

    index = GalleryIndex.load(args.index)
    embedder = _model.embedder_from_args(args)
    index.check_fingerprint(embedder.fingerprint)
    print(f"serving {len(index)} images from {args.index} on http://{args.host}:{args.port}/")
    serve(index, embedder, host=args.host, port=args.port, default_k=args.k,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_decodes=args.max_decodes,
          nprobe=args.nprobe)
    return 0
