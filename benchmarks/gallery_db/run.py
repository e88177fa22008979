#!/usr/bin/env python
"""The gallery as a database: build, add, remove, search and filtered search, FAISS and Milvus Lite side by side.

On synthetic clustered 768-d vectors (``benchmarks.search_speed``'s generator; 1M + 100k rows,
memory-mapped under ``--work``) with metadata columns that keep 50% / 10% / 1% of the rows:

- FAISS IVF-PQ + fp16 re-ranking (``dva index --kind ivfpq``, the product defaults): the full
  build; adding 100k vectors to it (time and ratio to the build); removing 10k ids; batch
  search q/s and recall@10 at several nprobe / k_factor; filtered search against the exact
  filtered top-10;
- the same on Milvus Lite (``--store milvus``), at the largest size its measured insert rate
  fits in ``--milvus-budget-s`` (the size is recorded and shown);
- a real gallery (cub100's test half, bundled MobileNetV2) filtered by ``label in (...)``.

Each phase runs in a child process (its own peak memory), and its result is saved to the JSON
as soon as it ends: ``--reuse`` keeps the finished phases of an interrupted run.

Usage::

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.gallery_db.run --work /tmp/gdb            # full, ~40 min
    python -m benchmarks.gallery_db.run --work /tmp/gdb_quick --quick                      # 50k smoke run
    python -m benchmarks.gallery_db.run --work /tmp/gdb --reuse                            # resume

Writes ``benchmarks/results/gallery_db.json`` (``gallery_db_quick.json`` with ``--quick``) and
prints the tables; ``python -m benchmarks.gallery_db.render`` puts them into docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.gallery_db.data import DataSpec

DEFAULT_OUT = C.RESULTS / "gallery_db.json"
QUICK_OUT = C.RESULTS / "gallery_db_quick.json"
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"data": DataSpec().to_dict(), "repeats": 3, "single": 20, "milvus_probe": 50_000,
             "milvus_sizes": [50_000, 100_000, 200_000, 500_000, 1_000_000], "milvus_budget_s": 900,
             "real_limit": None},
    "quick": {"data": DataSpec(n=50_000, n_add=5_000, n_remove=500, queries=200).to_dict(), "repeats": 2,
              "single": 5, "milvus_probe": 5_000, "milvus_sizes": [5_000, 10_000, 20_000, 50_000],
              "milvus_budget_s": 240, "real_limit": 300},
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.gallery_db.run``."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gallery_db.run", description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True,
                    help="scratch folder outside the repository (data ~3.4 GB, indexes and databases ~10 GB at 1M)")
    ap.add_argument("--quick", action="store_true", help="50k rows, 5k added, 500 removed: a smoke run")
    ap.add_argument("--reuse", action="store_true", help="keep the phases the JSON already holds (same settings)")
    ap.add_argument("--phases", nargs="+", default=None, help="run only these phases (and what they need)")
    ap.add_argument("--redo", nargs="+", default=[], help="with --reuse: run these phases again (and those after them)")
    ap.add_argument("--n", type=int, default=None, help="rows of the first build (default 1M; --quick 50k)")
    ap.add_argument("--n-add", type=int, default=None, help="rows added (default n/10)")
    ap.add_argument("--n-remove", type=int, default=None, help="ids removed (default n/100)")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls of a short search batch (median)")
    ap.add_argument("--milvus-budget-s", type=float, default=None,
                    help="seconds Milvus Lite's phases may take (predicted from the probe); sets its size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/gallery_db.json)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: run one phase (the child)
    return ap


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings: the profile, with the sizes and knobs given on the command line."""
    s = json.loads(json.dumps(PROFILES["quick" if args.quick else "full"]))
    s["profile"] = "quick" if args.quick else "full"
    d = s["data"]
    if args.n is not None:
        d["n"] = args.n
        d["n_add"], d["n_remove"] = max(1, args.n // 10), max(1, args.n // 100)
    for key in ("n_add", "n_remove", "queries", "seed"):
        if getattr(args, key) is not None:
            d[key] = getattr(args, key)
    if args.repeats is not None:
        s["repeats"] = args.repeats
    if args.milvus_budget_s is not None:
        s["milvus_budget_s"] = args.milvus_budget_s
    s["faiss_params"] = {}  # the product defaults of `dva index --kind ivfpq`
    return s


def versions() -> dict[str, str | None]:
    """Versions of what the numbers depend on (None where a package is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("faiss-cpu", "pymilvus", "milvus-lite", "numpy", "torch", "psutil"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def shown_argv(argv: list[str]) -> list[str]:
    """``argv`` with the scratch folder written ``WORK``: a machine's path stays out of the JSON and the docs."""
    out, skip = [], False
    for a in argv:
        if skip:
            out.append("WORK")
            skip = False
        elif a == "--work":
            out.append(a)
            skip = True
        else:
            out.append("--work=WORK" if a.startswith("--work=") else a)
    return out


def child_main(args: argparse.Namespace) -> int:
    """Run one phase in this process (the child) and write its result under WORK/phases."""
    from benchmarks.gallery_db.harness import own_memory
    from benchmarks.gallery_db.phases import Context, all_phases

    state = json.loads((args.work / "context.json").read_text())
    ctx = Context(args.work, state["settings"], state["results"], state.get("stopped", []))
    fn, _ = all_phases()[args.phase]
    result = fn(ctx)
    C.write_json(args.work / "phases" / f"{args.phase}.json", {**result, **own_memory()})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the phases, saving the JSON after each; print the tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.phase:
        return child_main(args)
    from benchmarks.gallery_db.orchestrate import run_phases

    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.work = args.work.resolve()
    if args.work.is_relative_to(C.REPO):
        raise SystemExit(f"--work {args.work} is inside the repository: give a scratch folder outside it")
    result = run_phases(args, settings_of(args), out, shown_argv(argv))
    from benchmarks.gallery_db.render import tables

    print("\n" + tables(result))
    print(f"\nwrote {out} ({result['status']})")
    missing = [p for p in (args.phases or result["phases_pending"]) if p in result["phases_pending"]]
    return 1 if missing else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
