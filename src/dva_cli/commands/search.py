"""``dva search``: the top-k gallery images for query images."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._format import positive_int
from dva_cli._store import add_store_arguments
from dva_cli.commands.index import location

if TYPE_CHECKING:
    from dva.retrieval.domains import DomainSet, DomainSpec

NAME = "search"
HELP = "Search an index with query images; print the top-k gallery images."
LABEL_WIDTH = 24  # the label column's widest; longer labels are cut so the path column stays aligned


# dva.retrieval.domains.ROUTERS, spelled out here: building the parser must not import torch and faiss.
ROUTERS = ("frozen", "adapted")


def add_domain_arguments(p: argparse.ArgumentParser) -> None:
    """``--domain`` (repeatable), ``--domains FILE``, ``--router``, ``--route-sample`` (``search`` and ``serve``)."""
    g = p.add_argument_group("several domains on one frozen backbone (instead of --index/--checkpoint)")
    g.add_argument("--domain", action="append", default=[], metavar="NAME=CHECKPOINT:INDEX",
                   help="a domain: its name, checkpoint and index (repeat for each domain; NAME=:INDEX = the "
                        "frozen backbone). All checkpoints must share one backbone, its weights and input size")
    g.add_argument("--domains", metavar="FILE",
                   help="a YAML file 'domains: {NAME: {checkpoint: FILE, index: FOLDER}, ...}' (paths relative to it)")
    g.add_argument("--router", choices=ROUTERS, default="frozen",
                   help="how a query without a domain finds one: frozen (default: the frozen embedding against "
                        "prototypes of each gallery, made at start-up from a sample of its images and cached) or "
                        "adapted (each domain's own embedding against its index vectors)")
    g.add_argument("--route-sample", type=positive_int, default=256,
                   help="gallery images (frozen) or vectors (adapted) per domain behind its prototypes (default 256)")


def domain_specs(args: argparse.Namespace) -> list[DomainSpec]:
    """The domains of the command line (none: the classic ``--index``/``--checkpoint`` form).

    Raises:
        ValueError: both forms, neither, or a malformed ``--domain``/``--domains``.
    """
    from dva.retrieval.domains import parse_domain, read_domains_file

    specs = [parse_domain(t) for t in args.domain] + (read_domains_file(args.domains) if args.domains else [])
    if specs and args.index:
        raise ValueError("give either --index (one gallery) or --domain/--domains (several), not both")
    if specs and args.checkpoint:
        raise ValueError("--checkpoint goes with --index; with --domain each domain names its own checkpoint "
                         "(NAME=CHECKPOINT:INDEX)")
    if not specs and not args.index:
        raise ValueError("give --index INDEX (with --checkpoint), or --domain NAME=CHECKPOINT:INDEX for each domain")
    return specs


def load_domain_set(args: argparse.Namespace, specs: list[DomainSpec]) -> DomainSet:
    """Every domain on one frozen backbone, on ``--runtime`` (onnx: a prefix graph + one suffix graph per domain)."""
    from dva.retrieval.domains import load_domains

    ds = load_domains(specs, backbone=args.backbone, weights=args.weights, img_size=args.img_size,
                      device=args.device, router=args.router, route_sample=args.route_sample,
                      runtime=getattr(args, "runtime", "auto"))
    if getattr(args, "nprobe", None):
        for d in ds.domains.values():
            d.index.set_nprobe(args.nprobe)
    return ds


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True)
    p.add_argument("--index", help="an index directory from `dva index` (or --domain, below)")
    p.add_argument("queries", nargs="*", metavar="QUERY_IMAGE",
                   help="query image files (a folder's images: FOLDER/*.jpg, or list them with --query-list)")
    p.add_argument("--query-list", help="a list file of query images: one path per line, or CSV path[,label]")
    p.add_argument("--k", type=positive_int, default=10, help="hits per query (default 10)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists visited (IVF-PQ only)")
    p.add_argument("--where", metavar="EXPR",
                   help="only hits whose metadata match, applied inside the search, e.g. \"label = 'Mallard' and "
                        "source in ('trap3', 'trap4')\" (columns: id, path, label and the list CSV's extra ones; "
                        "strings in single quotes, numbers bare; and/or/not, = != < <= > >=, in (...), is [not] null). "
                        "With --domain: in each domain searched (every domain it may reach must have its columns)")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of a table (each hit with its extra metadata columns)")
    add_store_arguments(p)
    add_domain_arguments(p)
    p.add_argument("--search-in", metavar="NAME|all", default=None,
                   help="with --domain: search this domain, or all (merged, each hit tagged); default: route "
                        "each query to the domain it most likely belongs to")


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
    from dva.retrieval.search import search_paths

    queries = query_paths(args.queries, args.query_list)
    if args.store == "milvus":
        return _run_milvus(args, queries)
    specs = domain_specs(args)
    if args.search_in and not specs:
        raise ValueError("--search-in chooses among --domain/--domains; with --index there is one gallery")
    if specs:
        ds = load_domain_set(args, specs)
        # An unknown name, or a filter naming a column a domain it may reach lacks, fails before any image work.
        ds.check_where(args.where, args.search_in)
        return _print(ds.search_paths(queries, k=args.k, domain=args.search_in, where=args.where), args.json)
    from dva.retrieval.galleries import open_gallery

    index = open_gallery("faiss", location(args, "--index"))
    _check_where(index, args.where)
    embedder = _model.embedder_from_args(args)
    _model.check_query_model(index, embedder, args)  # before any image work
    if args.nprobe:
        index.set_nprobe(args.nprobe)
    return _print(search_paths(index, embedder, queries, k=args.k, where=args.where), args.json)


def _run_milvus(args: argparse.Namespace, queries: list[str]) -> int:
    """``dva search --store milvus --uri URI``: one Milvus gallery, the collection of the query model."""
    from dva.retrieval.galleries import open_gallery
    from dva.retrieval.search import search_paths

    if args.domain or args.domains or args.search_in:
        raise ValueError("--domain/--domains/--search-in name FAISS index directories; with --store milvus "
                         "search one gallery, --uri")
    if args.nprobe:
        raise ValueError("--nprobe sets FAISS IVF-PQ lists; a Milvus gallery is searched with its own (HNSW) index")
    where = location(args, "--index")
    embedder = _model.embedder_from_args(args)
    gallery = open_gallery("milvus", where, fingerprint=embedder.fingerprint)
    _model.check_query_model(gallery, embedder, args)
    _check_where(gallery, args.where)
    return _print(search_paths(gallery, embedder, queries, k=args.k, where=args.where), args.json)


def _check_where(gallery: object, where: str | None) -> None:
    """Parse ``--where`` against the gallery's columns before any model or image work (a clear error)."""
    if where is None:
        return
    from dva.retrieval import filters

    filters.check_columns(filters.parse(where), gallery.columns, where)


def _print(results: list, as_json: bool) -> int:
    print(json.dumps([r.to_dict() for r in results], indent=1) if as_json else format_results(results))
    return 0


def _cell(label: object, width: int) -> str:
    text = "" if label is None else " ".join(str(label).split())  # no newline or tab breaks the row
    return text if len(text) <= width else text[: width - 3] + "..."


def format_results(results: list) -> str:
    """The hits as a text table per query; labels cut to :data:`LABEL_WIDTH` so the columns align."""
    labels = [h.label for r in results for h in r.hits]
    labelled = any(lab is not None for lab in labels)
    width = max([5] + [len(_cell(lab, LABEL_WIDTH)) for lab in labels])
    # Several domains: each hit carries its domain (a column when a query searched them all).
    merged = any(r.extra.get("domain") == "all" for r in results)
    dwidth = max([6] + [len(str(getattr(h, "domain", ""))) for r in results for h in r.hits]) if merged else 0
    iwidth = max([2] + [len(str(h.id)) for r in results for h in r.hits])  # the id `dva index --remove` takes
    lines = []
    for r in results:
        lines.append(f"query {r.query}{_where(r.extra)}")
        if not r.hits:
            lines.append("  no hits: the gallery is empty, or no image of it passes --where")
            continue
        lines.append(f"  {'rank':>4}  {'cosine':>7}  {'id':>{iwidth}}  " + (f"{'domain':<{dwidth}}  " if merged else "")
                     + (f"{'label':<{width}}  " if labelled else "") + "gallery image")
        for h in r.hits:
            dom = f"{getattr(h, 'domain', ''):<{dwidth}}  " if merged else ""
            lab = f"{_cell(h.label, width):<{width}}  " if labelled else ""
            lines.append(f"  {h.rank:4d}  {h.score:7.4f}  {h.id:>{iwidth}}  {dom}{lab}{h.path}")
    return "\n".join(lines)


def _where(extra: dict) -> str:
    """`` -> domain NAME`` (routed: with the margin over the runner-up), or nothing for one gallery."""
    route = extra.get("route")
    if route:
        margin = "" if route.get("margin") is None else f", margin {route['margin']:.3f}"
        return f"  -> domain {route['domain']} (routed{margin})"
    return f"  -> domain {extra['domain']}" if extra.get("domain") else ""
