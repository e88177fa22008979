#!/usr/bin/env python
"""The cub100 benchmark: DVA against its baselines, side by side, with ablations.

Every row is one ``train()`` run of the packaged ``demo`` config plus overrides (listed in
``rows.yaml`` beside this file, planned by :mod:`benchmarks.cub100.plan`), in its own subprocess (so
that peak resident memory is per row: ``os.wait4`` rusage). Rows share one prefix-cache folder and
one OPA boxes file per input size, so only the first run of a kind pays for the frozen layers.
Results: a JSON file under ``benchmarks/results/``, a section of ``docs/BENCHMARKS.md`` and a plot of
R@1 against trainable parameters (:mod:`benchmarks.cub100.render`). From the repository root:

    python -m benchmarks.cub100.run --quick      # main rows, 1 seed (~20 min on 2 cores)
    python -m benchmarks.cub100.run --full       # main rows x 3 seeds + ablations + speed-up checks
    python -m benchmarks.cub100.run --profile val --epochs 3 --max-steps 184   # validation split
    python -m benchmarks.cub100.run --render benchmarks/results/cub100_full.json ...   # docs only
    python -m benchmarks.cub100.run --quick --backbone lite2     # EfficientNet-Lite2 (rows.yaml: backbones)
    python -m benchmarks.cub100.run --quick --backbone vit_s14   # DINOv2 ViT-S/14, Q/K adapters, 126 px
    python -m benchmarks.cub100.run --profile pets37             # pets37 open set, yolox object views

With pets37 present (``$DVA_PETS37`` or ``../shared/data/pets37``; ``--no-ood`` to skip), every
row's saved model also retrieves among all 370 pets37 photos without further training: the
out-of-distribution (forgetting) columns. Finished rows are reused (``WORK_DIR/<row>/result.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C
from benchmarks import _rows
from benchmarks._runner import run_in_folder
from benchmarks.cub100.plan import (ROWS, Backbone, RowTable, build_plan, common_overrides, expand_plan, reuse_runs,
                                    seeds_of)
from benchmarks.cub100.render import METRICS, default_plot, format_table, render, render_files, section


# ----------------------------------------------------------------------------- worker (one run)
def _worker(spec_path: str) -> int:
    """One row in this process: train (or embed only, for ``frozen``) and write ``result.json``."""
    from dva_train.train import prepare_data

    spec, out, cfg = _rows.open_spec(spec_path)
    data = prepare_data(cfg)
    res: dict[str, Any] = {"name": spec["name"], "seed": cfg.train.seed, "img_size": cfg.backbone.img_size,
                           "dataset": cfg.data.dataset}
    n = int(spec.get("embed_images", 0))
    row = _rows.frozen_row if spec["kind"] == "frozen" else _rows.trained_row
    emb, fast = row(cfg, data, n, out, res)
    if spec.get("ood_root") and cfg.data.dataset == "cub100":  # trained on pets37: no OOD column
        # One export per row: the speed pass's onnxruntime embedder when there was one.
        ood_emb = fast if res.get("embed_runtime") == "onnxruntime" else _rows.fast(emb, out / "model.onnx")[0]
        res["ood_metrics"] = _ood_metrics(ood_emb, spec["ood_root"], cfg.train.batch_size_eval)
    (out / "model.onnx").unlink(missing_ok=True)  # an export per row (9-85 MB), not kept
    return _rows.write_result(out, res)


def ood_gallery(root: str | Path) -> tuple[list[str], Any]:
    """Every pets37 image with its breed: the out-of-distribution gallery (37 breeds x 10)."""
    import numpy as np

    from dva.data import load_split

    split = load_split("folder", str(Path(root) / "images"), "open")
    recs = sorted(split.train + split.test, key=lambda r: r.path)
    return [r.path for r in recs], np.array([r.label for r in recs])


def _ood_metrics(embedder: Any, root: str, batch_size: int) -> dict[str, float]:
    """Leave-one-out retrieval among all pets37 images, no further training (the forgetting test)."""
    from dva.metrics import retrieval_metrics

    paths, labels = ood_gallery(root)
    e = embedder.embed_paths(paths, batch_size=batch_size, progress=False)
    return retrieval_metrics(e, labels)


# ----------------------------------------------------------------------------- runner
def _settings(overrides: list[str]) -> list[str]:
    """A run's overrides without the one that depends on the order of the rows (who measures the frozen baseline)."""
    out, skip = [], False
    for t in overrides:
        if skip or t == "--train.eval_frozen":
            skip = t == "--train.eval_frozen"
            continue
        out.append(t)
    return out


def run_one(name: str, kind: str, overrides: list[str], out: Path, cache_dir: Path, threads: int,
            embed_images: int, log: Callable[..., None] = print, ood: str | None = None) -> dict[str, Any]:
    """Run one row in a subprocess (reusing ``out/result.json`` when present); adds wall time, peak RSS and the
    ``commit`` the run was made at (``git_dirty``: tracked files differed from it, so no commit holds that code).

    A folder holding a run of other settings (:func:`_settings` of its ``spec.json``) is refused
    (:func:`benchmarks._runner.run_in_folder`). A pooled row (seeds run in several invocations)
    states its runs' commits in the docs (``render.commits_note``); a result read back from an
    earlier run folder keeps the commit it recorded.
    """
    spec = {"name": name, "kind": kind, "overrides": overrides, "out": str(out), "threads": threads,
            "embed_images": embed_images, "ood_root": ood}
    return run_in_folder(__file__, spec, cache_dir, _settings, "peak_rss_mb", log)


def fill_frozen_metrics(done: list) -> None:
    """A frozen row measured for speed only takes its metrics from a trained run's ``frozen_metrics``."""
    donors = [r for *_, runs in done for r in runs if r.get("frozen_metrics")]
    for name, _g, _l, _o, runs in done:
        for r in runs:
            if r.get("metrics") is None:
                same = [d for d in donors if all(d.get(k) == r.get(k) for k in ("img_size", "eval_split", "dataset"))]
                if not same:
                    raise RuntimeError(f"row {name}: no trained run at {r.get('img_size')} px to take frozen metrics from")
                r["metrics"] = same[0]["frozen_metrics"]
                r["metrics_source"] = f"frozen_metrics of {same[0]['name']} (eval through the float16 prefix cache)"


def aggregate(name: str, group: str, label: str, overrides: list[str], runs: list[dict]) -> dict[str, Any]:
    """One table row from its runs (seeds): mean and spread of every number."""
    row: dict[str, Any] = {"name": name, "group": group, "label": label, "overrides": overrides,
                           "seeds": [r.get("seed") for r in runs], "runs": runs}
    stats: dict[str, Any] = {}
    for k in METRICS:
        stats[k] = C.mean_std([100.0 * r["metrics"][k] for r in runs])
        ood = [100.0 * r["ood_metrics"][k] for r in runs if r.get("ood_metrics")]
        stats[f"ood_{k}"] = C.mean_std(ood) if len(ood) == len(runs) else None
    for k in ("train_seconds", "train_img_per_s", "embed_img_per_s", "peak_rss_mb", "wall_seconds"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        stats[k] = C.mean_std(vals) if vals else None
    row["stats"] = stats
    p = runs[0]["params"]
    row["trainable_params"] = int(p["trainable_params"])
    row["trainable_pct"] = 100.0 * float(p["trainable_fraction"])
    row["backbone_params"] = int(p["backbone_params"])
    row["eval_split"] = runs[0].get("eval_split", "test")
    row["img_size"] = runs[0].get("img_size")
    return row


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.cub100.run``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.cub100.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--profile", choices=tuple(ROWS.profiles), default="quick",
                   help="quick: main rows, 1 seed; full: main rows x 3 seeds + ablations + speed-up checks; "
                        "val: hyper-parameter candidates on the validation split (sets: rows.yaml)")
    p.add_argument("--quick", dest="profile", action="store_const", const="quick", help="same as --profile quick")
    p.add_argument("--full", dest="profile", action="store_const", const="full", help="same as --profile full")
    p.add_argument("--root", default=None, help="cub100 folder (default $DVA_CUB100 or ../shared/data/cub100)")
    p.add_argument("--seeds", default=None, help="comma-separated (default: quick 0, full 0,1,2)")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: the profile's)")
    p.add_argument("--backbone", choices=tuple(ROWS.backbones), default="mobilenetv2",
                   help="the frozen backbone (rows.yaml: backbones): its model, input size and adapter settings")
    p.add_argument("--img-size", type=int, default=None, help="default: the backbone's (rows.yaml)")
    p.add_argument("--ood-root", default=None,
                   help="pets37 folder for the out-of-distribution columns and the pets37 profile (default $DVA_PETS37 or "
                        "../shared/data/pets37; left out when not found)")
    p.add_argument("--no-ood", action="store_true", help="no out-of-distribution columns")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="> 0: every trained row stops after this many steps")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--embed-images", type=int, default=512,
                   help="test images embedded through the full model for embed img/s (-1: all)")
    p.add_argument("--work-dir", default=str(C.REPO / "runs" / "bench_cub100"))
    p.add_argument("--cache-dir", default=None, help="shared prefix caches (default WORK_DIR/cache)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/cub100_<profile>.json)")
    p.add_argument("--doc", default=str(C.DOC))
    p.add_argument("--plot", default=None, help="default docs/cub100_[BACKBONE_]r1_vs_params.png")
    p.add_argument("--no-doc", action="store_true", help="do not touch docs/ (JSON only)")
    p.add_argument("--section", default=None,
                   help="the docs section to write (default: the backbone's, e.g. '## cub100: DVA vs baselines')")
    p.add_argument("--notes", default=None, help="a markdown file appended to the section (analysis)")
    p.add_argument("--reuse", nargs="+", metavar="JSON", default=None,
                   help="finished runs of earlier result files (same backbone, size and budget): written back as "
                        "WORK_DIR/<run>/result.json, so that only the missing rows and seeds run")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="run nothing: rebuild the docs section and plot from these result files (merged)")
    return p


class Setup(NamedTuple):
    """Where and how the rows of one invocation run: from the command line and the data found."""

    table: RowTable  # rows.yaml, the chosen backbone's adapter settings as the DVA defaults
    backbone: Backbone
    seeds: list[int]
    common: list[str]  # overrides of every run
    work: Path
    cache: Path  # shared prefix caches and OPA boxes
    ood: Path | None  # pets37, for the out-of-distribution columns
    markers: dict[str, str]  # row tokens replaced in the runs (``@pets37`` -> its images)
    prefix: str  # of the run folders: "" for the MobileNetV2 (its folders as before), else "<backbone>_"


def _setup(args: argparse.Namespace) -> Setup:
    """Find the data (a clear error before anything starts when cub100 is missing) and make the cache folder."""
    from dva.data.locate import find_dataset

    root = find_dataset("cub100", explicit=args.root, required=True)
    ood = None if args.no_ood else find_dataset("pets37", explicit=args.ood_root, required=bool(args.ood_root))
    bb = ROWS.backbones[args.backbone]
    args.img_size = args.img_size or bb.img_size
    work = Path(args.work_dir)
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    pets = ood or find_dataset("pets37", explicit=args.ood_root)  # the OOD gallery and the pets37 rows' data
    return Setup(table=ROWS._replace(dva_defaults=bb.dva_defaults), backbone=bb,
                 seeds=seeds_of(args.profile, args.seeds),
                 common=common_overrides(root, cache, args.threads, bb.model, args.img_size, args.epochs,
                                         args.max_steps),
                 work=work, cache=cache, ood=ood, markers={"@pets37": str(pets / "images")} if pets else {},
                 prefix="" if args.backbone == "mobilenetv2" else f"{args.backbone}_")


def run_rows(args: argparse.Namespace, s: Setup) -> list[dict[str, Any]]:
    """Run (or reuse) every run of the plan, one subprocess each; the table rows in table order."""
    plan = build_plan(s.table, args.profile, args.rows.split(",") if args.rows else None, s.seeds, bool(args.seeds))
    reused = reuse_runs([json.loads(Path(f).read_text()) for f in args.reuse or []],
                        {"model": s.backbone.model, "img_size": args.img_size, "epochs": args.epochs,
                         "max_steps": args.max_steps})
    done: list[tuple[str, str, str, list[str], list[dict]]] = []
    for name, row, specs in expand_plan(s.table, plan, s.common, args.img_size, args.epochs, args.max_steps,
                                        args.embed_images, s.markers):
        runs = []
        for spec in specs:
            folder = s.work / f"{s.prefix}{spec.tag}"
            old = reused.get((name, spec.seed))
            # --reuse: an earlier file's run of this row and seed, same overrides, becomes the folder's result.
            if old and old["overrides"] == row.overrides and not (folder / "result.json").is_file():
                C.write_json(folder / "result.json", {**old["run"], "reused_from": old["json"]})
            print(f"[{time.strftime('%H:%M:%S')}] {s.prefix}{spec.tag}", flush=True)
            runs.append(run_one(name, spec.kind, spec.overrides, folder, s.cache, args.threads,
                                spec.embed_images, ood=str(s.ood) if s.ood else None))
        done.append((name, row.group, row.label, row.overrides, runs))
    fill_frozen_metrics(done)
    rank = ROWS.rank()
    done.sort(key=lambda t: rank.get(t[0], len(rank)))
    return [aggregate(*d) for d in done]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one worker row, or re-render the docs); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.render:
        return render_files(args.render, Path(args.doc), args.plot, args.notes, args.section)
    s = _setup(args)
    t_all = time.time()
    rows = run_rows(args, s)
    out = Path(args.out) if args.out else C.RESULTS / f"cub100_{s.prefix}{args.profile}.json"
    bb = s.backbone
    result = {
        "benchmark": "cub100", "profile": args.profile, **C.provenance(__file__, argv),
        "settings": {"backbone": args.backbone, "model": bb.model, "ood": "pets37" if s.ood else None,
                     "img_size": args.img_size, "epochs": args.epochs, "max_steps": args.max_steps, "seeds": s.seeds,
                     "threads": args.threads, "embed_images": args.embed_images, "dva_defaults": bb.dva_defaults,
                     "common": [c for c in s.common if not c.startswith("/")]},
        "wall_seconds_total": time.time() - t_all,
        "json": C.repo_relative(out),
        "rows": rows,
    }
    C.write_json(out, result)
    print(format_table(rows))
    print(f"wrote {out}")
    if not args.no_doc:
        plot_path = Path(args.plot) if args.plot else default_plot(args.backbone)
        render([result], Path(args.doc), plot_path, Path(args.notes).read_text() if args.notes else "", args.section,
               notes_source=args.notes or "notes")
        print(f"updated {args.doc} ({args.section or section(result['settings'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
