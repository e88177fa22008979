"""``dva serve``: the search web service and page (see dva.retrieval.serve)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._format import positive_int
from dva_cli._store import add_store_arguments
from dva_cli.commands.search import add_domain_arguments, domain_specs, load_domain_set

NAME = "serve"
HELP = "Serve an index over HTTP: a search page at / and a JSON API (POST /search; POST/DELETE /items with a key)."
API_KEY_ENV = "DVA_API_KEY"  # dva.retrieval.serve.API_KEY_ENV, spelled out: the parser must not import fastapi


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", help="an index directory from `dva index` (or --domain, below)")
    add_store_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--k", type=positive_int, default=10, help="default hits per query (1-100)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="upload size limit per image (MiB)")
    p.add_argument("--max-files", type=positive_int, default=16, help="images one POST /items may add (default 16)")
    p.add_argument("--max-decodes", type=positive_int, default=2,
                   help="uploads decoded at once; the others wait (bounds memory; default 2)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists visited (IVF-PQ only)")
    p.add_argument("--public-url", default=None,
                   help="the address clients reach the service at, e.g. https://search.example.org (behind "
                        "a proxy); answers then link images under it (default: relative links)")
    p.add_argument("--api-key", default=None,
                   help=f"allow writes (POST /items, DELETE /items/ID) to clients sending this key; prefer the "
                        f"environment variable {API_KEY_ENV}: a key on the command line is visible to other "
                        "users of this machine (default: read-only, unless that variable is set)")
    p.add_argument("--upload-dir", default=None,
                   help="where uploaded images are kept (default INDEX/uploads, or NAME-uploads beside a "
                        "Milvus Lite file; needed for a Milvus server; one subfolder per domain with --domain)")
    add_domain_arguments(p)


def api_key(args: argparse.Namespace) -> str | None:
    """``--api-key`` (with a warning) or ``$DVA_API_KEY``; None: read-only. Checked before any loading."""
    from dva.retrieval.serve import check_api_key

    if args.api_key is not None:
        print(f"warning: --api-key is visible to other users of this machine (ps, shell history); set the "
              f"environment variable {API_KEY_ENV} instead", file=sys.stderr)
        key = args.api_key
    else:
        key = os.environ.get(API_KEY_ENV) or None
    check_api_key(key)
    return key


def _check_store(args: argparse.Namespace) -> None:
    if args.store == "faiss":
        if args.uri:
            raise ValueError("--uri names a Milvus gallery: add --store milvus (the faiss store is --index INDEX)")
        return
    if not args.uri:
        raise ValueError("--store milvus needs --uri: a Milvus Lite file (gallery.db) or http(s)://HOST:PORT")
    if args.index or args.domain or args.domains:
        raise ValueError("--store milvus serves the one gallery at --uri: leave out --index and --domain/--domains")


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.serve import public_base, serve

    public_base(args.public_url)  # a malformed address or key is refused before the model loads
    _check_store(args)
    key = api_key(args)
    where = f" (public address {args.public_url})" if args.public_url else ""
    writes = "; writes enabled (POST /items, DELETE /items/ID)" if key else "; read-only"
    limits = {"default_k": args.k, "max_upload_bytes": int(args.max_upload_mb * 2**20),
              "max_decodes": args.max_decodes, "max_files": args.max_files, "nprobe": args.nprobe,
              "public_url": args.public_url, "api_key": key, "upload_dir": args.upload_dir}
    specs = domain_specs(args) if args.store == "faiss" else []
    if specs:
        ds = load_domain_set(args, specs)
        print(f"serving {len(ds)} domains on one frozen backbone ("
              + ", ".join(f"{n}: {len(d.index)} images" for n, d in ds.domains.items())
              + f"; router {ds.router}; runtime {ds.info()['runtime']}) on http://{args.host}:{args.port}/"
              + f"{where}{writes}")
        serve(host=args.host, port=args.port, domains=ds, **limits)
        return 0
    gallery, embedder, source = _open(args)
    print(f"serving {len(gallery)} images from {source} on http://{args.host}:{args.port}/{where}{writes}")
    serve(gallery, embedder, host=args.host, port=args.port, **limits)
    return 0


def _open(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The gallery of ``--index`` or ``--store milvus --uri``, its model, and where it is (for the banner)."""
    from dva.retrieval.galleries import open_gallery

    if args.store == "faiss":
        gallery = open_gallery("faiss", args.index)  # a missing index fails before the model loads
        embedder = _model.embedder_from_args(args)
        gallery.check_fingerprint(embedder.fingerprint)
        source = args.index
    else:  # a database may hold several models' galleries: the model chooses its own
        embedder = _model.embedder_from_args(args)
        gallery = open_gallery("milvus", args.uri, fingerprint=embedder.fingerprint)
        source = f"milvus {args.uri}"
    return gallery, embedder, source
