"""``dva serve``: the search web service and page (see dva.retrieval.serve)."""
from __future__ import annotations

import argparse

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._format import positive_int
from dva_cli.commands.search import add_domain_arguments, domain_specs, load_domain_set

NAME = "serve"
HELP = "Serve an index over HTTP: a search page at / and a JSON API (POST /search)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", help="an index directory from `dva index` (or --domain, below)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--k", type=positive_int, default=10, help="default hits per query (1-100)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="upload size limit (MiB)")
    p.add_argument("--max-decodes", type=positive_int, default=2,
                   help="uploads decoded at once; the others wait (bounds memory; default 2)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists visited (IVF-PQ only)")
    p.add_argument("--public-url", default=None,
                   help="the address clients reach the service at, e.g. https://search.example.org (behind "
                        "a proxy); answers then link images under it (default: relative links)")
    add_domain_arguments(p)


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.index import GalleryIndex
    from dva.retrieval.serve import public_base, serve

    public_base(args.public_url)  # a malformed address is refused before the model loads
    where = f" (public address {args.public_url})" if args.public_url else ""
    limits = {"default_k": args.k, "max_upload_bytes": int(args.max_upload_mb * 2**20),
              "max_decodes": args.max_decodes, "nprobe": args.nprobe, "public_url": args.public_url}
    specs = domain_specs(args)
    if specs:
        ds = load_domain_set(args, specs)
        print(f"serving {len(ds)} domains on one frozen backbone ("
              + ", ".join(f"{n}: {len(d.index)} images" for n, d in ds.domains.items())
              + f"; router {ds.router}; runtime {ds.info()['runtime']}) on http://{args.host}:{args.port}/{where}")
        serve(host=args.host, port=args.port, domains=ds, **limits)
        return 0
    index = GalleryIndex.load(args.index)
    embedder = _model.embedder_from_args(args)
    index.check_fingerprint(embedder.fingerprint)
    print(f"serving {len(index)} images from {args.index} on http://{args.host}:{args.port}/{where}")
    serve(index, embedder, host=args.host, port=args.port, **limits)
    return 0
