#!/usr/bin/env python
"""Multi-domain serving: one frozen backbone with the adapters of N domains against N servers.

Four real domains (benchmarks/domains/prepare.py): birds (cub100), cars (cars196), aircraft
(aircraft47) and pets (pets37), each a checkpoint of the demo config trained briefly on a
subset of the training classes, and a gallery of unseen classes. For N = 1, 2, 4 domains:

* resident memory (psutil RSS) of one N-domain ``dva serve`` against the N single-domain servers;
* per-query latency over HTTP (p50 / p95) of a query to one domain, to ``all``, and routed;
* in process: the shared frozen prefix against each domain's whole network (same models, one
  run), per single-image query, and images/s of batch search;
* routing accuracy of the ``frozen`` and ``adapted`` routers on held-out photos of the 4 domains;
* ``--runtimes-only``: the 4 domains in process on torch and on onnxruntime (added to the result file).

Usage::

    python -m benchmarks.domains.run                 # trains what is missing, then measures
    python -m benchmarks.domains.run --render        # only rewrite the doc section from the JSON
    python -m benchmarks.domains.run --runtimes-only # add torch vs onnxruntime to the JSON and the doc

Writes ``benchmarks/results/domains.json`` and, unless ``--no-doc``, the section "## Domains" of
docs/BENCHMARKS.md (rendered from the JSON by :mod:`benchmarks.domains.render`). The checkpoints,
lists and indexes live under ``runs/domains_bench/`` and are reused by the next run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import _common as C
from benchmarks.domains import inprocess, render, servers
from benchmarks.domains.prepare import DOMAINS, DomainFiles, Sizes, prepare

ORDER = list(DOMAINS)  # N = 1: birds; N = 2: + cars; N = 4: all four


def _heldout(files: DomainFiles) -> list[str]:
    with open(files.heldout_csv, newline="") as fh:
        return [r["path"] for r in csv.DictReader(fh)]


def _domain_args(files: dict[str, DomainFiles], names: list[str]) -> list[str]:
    out = []
    for n in names:
        out += ["--domain", f"{n}={files[n].checkpoint}:{files[n].index}"]
    return out + ["--runtime", "torch"]


def server_rows(files: dict[str, DomainFiles], held: dict[str, list[str]], repeats: int, work: Path) -> dict:
    """Every single-domain server and the 1-, 2- and 4-domain servers, side by side (servers.measure_all)."""
    def uploads(paths: list[str]) -> list[tuple[str, bytes]]:
        return [(Path(p).name, Path(p).read_bytes()) for p in paths]

    mixed = uploads([p for i in range(8) for n in ORDER for p in held[n][i:i + 1]])  # photos of every domain
    settings, queries = {}, {}
    for n in ORDER:
        args = ["--checkpoint", str(files[n].checkpoint), "--index", str(files[n].index), "--runtime", "torch"]
        settings[f"single-{n}"], queries[f"single-{n}"] = (args, {"one": "/search?k=10"}), uploads(held[n][:8])
    for k in (1, 2, 4):
        names = ORDER[:k]
        paths = {"one": f"/search?k=10&domain={names[0]}", "all": "/search?k=10&domain=all"}
        if k > 1:
            paths["routed"] = "/search?k=10"
        settings[f"multi-{k}"], queries[f"multi-{k}"] = (_domain_args(files, names), paths), mixed
    got = servers.measure_all(settings, queries, repeats, work / "logs")
    print(f"[domains] servers: {got}", flush=True)
    return {"single": {n: got[f"single-{n}"] for n in ORDER}, "multi": {str(k): got[f"multi-{k}"] for k in (1, 2, 4)}}


def measure_in_process(files: dict[str, DomainFiles], held: dict[str, list[str]], repeats: int,
                       sample: int, threads: int) -> dict:
    """Shared prefix against whole networks, batch speed, routing (one process, one load).

    ``threads`` torch threads: on a CPU shared with other work, one thread is far less disturbed
    by the others than two (which wait for each other), and the comparison is what matters here.
    """
    import torch
    from PIL import Image

    from dva.retrieval.domains import DomainSpec, load_domains

    torch.set_num_threads(threads)

    specs = [DomainSpec(n, str(files[n].checkpoint), str(files[n].index)) for n in ORDER]
    t0 = time.perf_counter()
    ds = load_domains(specs, router="frozen", route_sample=sample)
    load_s = time.perf_counter() - t0
    xs = [ds.images_to_tensor([Image.open(p)]) for n in ORDER for p in held[n][:6]]
    every = [p for n in ORDER for p in held[n]]
    out = {"load_s": round(load_s, 1), "torch_threads": torch.get_num_threads(),
           "splits": {n: ds.shared.models[n].split for n in ORDER},
           "stages": ds.shared.n_stages,
           "latency": inprocess.latency(ds, ORDER, xs, repeats),
           "throughput": inprocess.throughput(ds, ORDER, every)}
    print(f"[domains] in process: {out}", flush=True)
    out["routing"] = inprocess.routing(ds, ORDER, held, sample)
    print(f"[domains] routing: {out['routing']}", flush=True)
    return out


def measure_runtimes(files: dict[str, DomainFiles], held: dict[str, list[str]], repeats: int,
                     sample: int, threads: int) -> dict:
    """The 4 domains on torch and on onnxruntime (prefix graph + one suffix graph per domain), one process.

    The onnx load is timed twice: the first exports whatever graphs the cache lacks, the second
    reuses them. ``threads``: torch threads and onnxruntime threads alike.
    """
    import torch
    from PIL import Image

    from dva.retrieval.domains import DomainSpec, load_domains
    from dva.runtime.cache import cache_dir

    torch.set_num_threads(threads)
    specs = [DomainSpec(n, str(files[n].checkpoint), str(files[n].index)) for n in ORDER]
    graphs = set((cache_dir() / "onnx").glob("*.onnx"))
    t0 = time.perf_counter()
    load_domains(specs, router="frozen", route_sample=sample, runtime="onnx").shared.close()
    first_s = time.perf_counter() - t0
    exported = len(set((cache_dir() / "onnx").glob("*.onnx")) - graphs)
    t0 = time.perf_counter()
    on_onnx = load_domains(specs, router="frozen", route_sample=sample, runtime="onnx")
    again_s = time.perf_counter() - t0
    on_torch = load_domains(specs, router="frozen", route_sample=sample, runtime="torch")
    xs = [on_torch.images_to_tensor([Image.open(p)]) for n in ORDER for p in held[n][:6]]
    out = {"threads": threads, "load_s": {"onnx_first": round(first_s, 1), "onnx_again": round(again_s, 1)},
           "graphs_exported_first": exported, "load_before": round(os.getloadavg()[0], 2),
           **inprocess.runtimes({"torch": on_torch, "onnx": on_onnx}, ORDER, xs, repeats),
           "load_after": round(os.getloadavg()[0], 2), "date": C.now_utc(),
           "git_commit": C.git_commit()}
    print(f"[domains] runtimes: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.domains.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(C.REPO / "runs" / "domains_bench"),
                    help="checkpoints, lists and indexes (reused by the next run)")
    ap.add_argument("--max-steps", type=int, default=60, help="training steps per domain (default 60)")
    ap.add_argument("--repeats", type=int, default=20, help="timed queries per setting (default 20)")
    ap.add_argument("--route-sample", type=int, default=256, help="gallery images per domain behind the prototypes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process part (default 1)")
    ap.add_argument("--out", default=str(C.RESULTS / "domains.json"))
    ap.add_argument("--no-servers", action="store_true", help="skip the HTTP servers (memory, latency)")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the doc section from --out")
    ap.add_argument("--runtimes-only", action="store_true",
                    help="only measure torch against onnxruntime in process and add it to --out (which must exist)")
    args = ap.parse_args(argv)
    if args.render:
        C.update_doc(C.DOC, render.SECTION, render.markdown(json.loads(Path(args.out).read_text())))
        return 0
    work = Path(args.work)
    os.environ.setdefault("DVA_CACHE", str(work / "cache"))  # the servers' and this run's frozen prototypes
    if args.runtimes_only:
        return _runtimes_only(args, work)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    sizes = Sizes()
    facts = prepare(work, sizes, args.max_steps)
    files = {n: DomainFiles(n, work / n) for n in ORDER}
    held = {n: _heldout(files[n]) for n in ORDER}
    result = {"domains": facts, "sizes": vars(sizes), "max_steps": args.max_steps, "repeats": args.repeats,
              "route_sample": args.route_sample, "load_before": round(load, 2)}
    t1 = time.perf_counter()
    if not args.no_servers:
        result["servers"] = server_rows(files, held, args.repeats, work)
    result["in_process"] = measure_in_process(files, held, args.repeats, args.route_sample, args.threads)
    result["measure_s"] = round(time.perf_counter() - t1, 1)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["load_after"] = round(os.getloadavg()[0], 2)
    result = C.write_result(args.out, result, __file__, sys.argv[1:] if argv is None else argv,
                            ("torch", "timm", "faiss"))
    print(render.markdown(result))
    if not args.no_doc:
        C.update_doc(C.DOC, render.SECTION, render.markdown(result))
    return 0


def _runtimes_only(args: argparse.Namespace, work: Path) -> int:
    """Add ``in_process.runtimes`` to an existing result file (the prepared domains reused) and re-render."""
    out = Path(args.out)
    if not out.is_file():
        raise SystemExit(f"{out}: no result file to add to; run `python -m benchmarks.domains.run` first")
    result = json.loads(out.read_text())
    files = {n: DomainFiles(n, work / n) for n in ORDER}
    missing = [str(p) for f in files.values() for p in (f.checkpoint, f.index) if not Path(p).exists()]
    if missing:
        raise SystemExit(f"missing {missing}: run `python -m benchmarks.domains.run` (it prepares them) first")
    held = {n: _heldout(files[n]) for n in ORDER}
    result["in_process"]["runtimes"] = measure_runtimes(files, held, args.repeats, args.route_sample, args.threads)
    C.write_json(out, result)
    if not args.no_doc:
        C.update_doc(C.DOC, render.SECTION, render.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
