#!/usr/bin/env python
"""One benchmark harness over datasets (cub100 | cars196 | aircraft47) x backbones, with the OOD matrix.

Per (dataset, backbone), two resumable profiles (each run in its own subprocess and run folder;
a killed profile started again keeps every finished run). From the repository root:

    python -m benchmarks.datasets.run --dataset cars196 --backbone mobilenetv2 --profile select --plan
    python -m benchmarks.datasets.run --dataset cars196 --backbone mobilenetv2 --profile select
    python -m benchmarks.datasets.run --dataset cars196 --backbone mobilenetv2 --profile main
    python -m benchmarks.datasets.run --render benchmarks/results/datasets/*_main.json [--figure PATH]

``select`` trains the candidates of ``harness.yaml`` on the dataset's held-out training classes
(the test classes are never loaded) and writes them, their validation scores and the chosen
values to JSON; ``main`` reads the chosen values from that JSON and scores the test classes for
them: frozen, head, full fine-tune, ICA, ICA + OPA, DVA with self and detector boxes, each saved
model also on the OOD galleries (the other ID datasets' test classes, all of pets37).

``--plan`` prints every run with an estimate from the measured runs of benchmarks/results (2
CPU cores). A profile estimated over 2 hours runs in sittings: stop it and start the same
command again (finished runs are kept), or run parts with ``--rows`` and then the whole command.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C
from benchmarks import _rows
from benchmarks._runner import run_in_folder
from benchmarks.datasets import costs as K
from benchmarks.datasets import ood as O
from benchmarks.datasets import render as R
from benchmarks.datasets.plan import (TABLE, RunSpec, Table, chosen_tokens, common_overrides, locate, main_runs,
                                      reader_root, select_stage_runs, settings_of, stage_tokens)
from benchmarks.datasets.select import select_record, stage_record

RESULTS = C.RESULTS / "datasets"
WORK = C.REPO / "runs" / "bench_datasets"


# ----------------------------------------------------------------------------- worker (one run)
@contextlib.contextmanager
def test_split_withheld() -> Iterator[None]:
    """Every ``dva.data.load_split`` in this process returns the training classes only.

    The select profile's runs validate on held-out training classes; the trainer would also score
    the test split once at the end. Dropping the test records where the split is read means no
    test image is ever opened, embedded or scored (the reader lists the folder; nothing more).
    """
    import dataclasses

    import dva.data as D

    original = D.load_split

    def train_only(*args: Any, **kwargs: Any) -> Any:
        split = original(*args, **kwargs)
        keep = set(split.train_classes)
        return dataclasses.replace(split, test=[], query=None, gallery=None,
                                   class_names={c: n for c, n in split.class_names.items() if c in keep})

    D.load_split = train_only
    try:
        yield
    finally:
        D.load_split = original


def _worker(spec_path: str) -> int:
    """One run in this process: train (or embed only, ``frozen``), score the OOD galleries, write ``result.json``.

    A spec with a ``frontier`` section is a run of the frontier benchmark: its training and alpha
    sweep are :func:`benchmarks.frontier.worker.run_frontier`'s (validation classes held out, the
    test split withheld from the trainer; then every alpha on validation, test and OOD sets).
    """
    from dva_train.train import prepare_data

    spec, out, cfg = _rows.open_spec(spec_path)
    if spec.get("frontier"):
        from benchmarks.frontier.worker import run_frontier

        return _rows.write_result(out, run_frontier(spec, cfg, out, test_split_withheld))
    withheld = bool(spec.get("validation_only"))
    with test_split_withheld() if withheld else contextlib.nullcontext():
        data = prepare_data(cfg)
        if withheld and (data.eval_name != "val" or data.test_paths):
            raise RuntimeError(f"{spec_path}: a validation-only run needs --data.val_classes 2 or more")
        res: dict[str, Any] = {"name": spec["name"], "seed": cfg.train.seed, "img_size": cfg.backbone.img_size,
                               "dataset": cfg.data.dataset, "folder": out.name}
        row = _rows.frozen_row if spec["kind"] == "frozen" else _rows.trained_row
        emb, _ = row(cfg, data, -1 if spec["kind"] == "frozen" else 0, out, res)
    if spec.get("ood"):  # the saved model as `dva embed` runs it (onnxruntime when installed)
        res["ood_metrics"] = O.score(_rows.fast(emb, out / "model.onnx")[0], spec["ood"], cfg.train.batch_size_eval)
    (out / "model.onnx").unlink(missing_ok=True)
    return _rows.write_result(out, res)


# ----------------------------------------------------------------------------- runner
def run_one(spec: RunSpec, out: Path, cache: Path, threads: int, extra: dict[str, Any],
            log: Callable[..., None] = print) -> dict[str, Any]:
    """Run one run in a subprocess, or read back its finished ``result.json`` (resume).

    Adds wall time, peak resident memory, the load average and the commit. A folder holding a run
    of other settings (its ``spec.json``, compared by :func:`settings_of`) is refused, never reused
    or overwritten (:func:`benchmarks._runner.run_in_folder`).
    """
    return run_in_folder(__file__, {"name": spec.name, "kind": spec.kind, "overrides": spec.overrides,
                                    "out": str(out), "threads": threads, **extra},
                         cache, settings_of, "wall_seconds", log)


def reuse_index(files: list[str] | None) -> dict[str, dict[str, Any]]:
    """Finished runs of earlier result files (select, main, or a profile's :func:`partial_path` file),
    keyed by run folder (row or candidate, seed and settings digest): only a run of the very same
    settings fills a folder. A row's entry that is another row's run (``same_run_as``) is that run's
    copy, not a run of its own: left out."""
    out: dict[str, dict[str, Any]] = {}
    for f in files or []:
        res = json.loads(Path(f).read_text())
        runs = [r for row in res.get("rows") or [] for r in row.get("runs") or []] + list(res.get("runs") or [])
        runs += [c["run"] for st in res.get("stages") or [] for c in st.get("candidates") or [] if c.get("run")]
        for run in runs:
            if run.get("folder") and "wall_seconds" in run and not run.get("same_run_as"):
                out.setdefault(run["folder"], {**run, "reused_from": C.repo_relative(Path(f))})
    return out


def partial_path(out: Path) -> Path:
    """Where a profile keeps its finished runs while it runs: ``partial/<out's name>`` beside ``out`` (the
    docs read only the folder's own files). A main profile writes its JSON at the end and a select
    profile after each stage; this file holds every run as it finishes, so that a sitting stopped on one
    machine goes on from the repository on another (the run folders stay behind). Removed when the
    profile's JSON is complete."""
    return out.parent / "partial" / out.name


def record_partial(out: Path, result: dict[str, Any]) -> None:
    """Add one finished run to ``out``'s :func:`partial_path` file (atomic)."""
    path = partial_path(out)
    old = json.loads(path.read_text()) if path.is_file() else {}
    runs = {r["folder"]: r for r in old.get("runs") or [] if r.get("folder")}
    if result.get("folder") and "wall_seconds" in result and not result.get("same_run_as"):
        runs[result["folder"]] = result
    C.write_json(path, {"what": f"finished runs of {C.repo_relative(out)} while its profile runs (the "
                                "command reuses them; removed when the profile is complete)",
                        "runs": sorted(runs.values(), key=lambda r: r["folder"])})


def own_runs(out: Path) -> list[str]:
    """The profile's own files whose finished runs it reuses: its JSON and its partial file, where present."""
    return [str(p) for p in (out, partial_path(out)) if p.is_file()]


def finished_result(folder: Path) -> dict[str, Any] | None:
    """The result of a finished run in ``folder`` (its ``result.json`` with the runner's measured fields)."""
    try:
        res = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) and "wall_seconds" in res else None


def same_settings_run(spec: RunSpec, ctx: Context,
                      done: dict[str, tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]] | None:
    """A finished run of another row with the settings of ``spec`` (its folder's digest), as ``(folder, result)``:
    made earlier in this invocation; else, unless ``spec``'s own folder holds a finished run (resumed as
    it is), one found in the work folder (an earlier ``--rows`` sitting) or in a ``--reuse`` file; else None."""
    key = spec.tag.rsplit("_", 1)[-1]
    if key in done and done[key][0] != spec.tag:
        return done[key]
    if finished_result(ctx.work / spec.tag) is not None or spec.tag in ctx.reused:
        return None
    for folder in sorted(ctx.work.glob(f"*_{key}")) if ctx.work.is_dir() else []:
        res = finished_result(folder) if folder.name != spec.tag else None
        if res is not None:
            return folder.name, res
    return next(((t, r) for t, r in sorted(ctx.reused.items()) if t != spec.tag and t.endswith(f"_{key}")), None)


def run_all(specs: list[RunSpec], ctx: Context, extra: dict[str, Any],
            done: dict[str, tuple[str, dict[str, Any]]] | None = None,
            on_run: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run (or resume, or reuse) every run of ``specs`` in order.

    ``done`` (settings digest -> run folder and result, filled here; the main profile's): a run whose
    settings equal another row's finished run (:func:`same_settings_run`) is that run, not trained
    again; its result is that one's with ``same_run_as`` naming its folder (the main profile's
    ICA + OPA row is DVA's seed-0 run when validation chose the DPT weight 0). ``on_run``: called with
    each run's result as it finishes (:func:`record_partial`).
    """
    out = []
    for spec in specs:
        same = same_settings_run(spec, ctx, done) if done is not None else None
        if same is not None:
            print(f"[{time.strftime('%H:%M:%S')}] {spec.name}: the settings of {same[0]}, that run", flush=True)
            out.append({**same[1], "same_run_as": same[0]})
            continue
        folder = ctx.work / spec.tag
        old = ctx.reused.get(spec.tag)
        if old and not (folder / "result.json").is_file():
            C.write_json(folder / "result.json", old)
        print(f"[{time.strftime('%H:%M:%S')}] {spec.name} -> {folder}", flush=True)
        out.append(run_one(spec, folder, ctx.cache, ctx.threads, extra))
        if on_run is not None:
            on_run(out[-1])
        if done is not None:
            done.setdefault(spec.tag.rsplit("_", 1)[-1], (spec.tag, out[-1]))
    return out


# ----------------------------------------------------------------------------- profiles
class Context(NamedTuple):
    """Where and how one invocation runs: from the command line and the data found."""

    table: Table
    dataset: str
    backbone: str
    root: str  # the dataset's reader root
    work: Path
    cache: Path
    threads: int
    reused: dict[str, dict[str, Any]]


def settings(ctx: Context, profile: str, **more: Any) -> dict[str, Any]:
    """The JSON's ``settings``: dataset, backbone, model and input size, profile, and ``more``."""
    bb = ctx.table.backbones[ctx.backbone]
    return {"dataset": ctx.dataset, "backbone": ctx.backbone, "model": bb.model, "img_size": bb.img_size,
            "profile": profile, "threads": ctx.threads, **more}


def run_select(ctx: Context, out: Path, argv: list[str]) -> dict[str, Any]:
    """Every select stage in turn, each on the earlier stages' winners; the JSON written after each stage."""
    ds = ctx.table.datasets[ctx.dataset]
    common = common_overrides(ds, ctx.root, ctx.cache, ctx.threads, ctx.table.backbones[ctx.backbone], ds.val_classes)
    chosen: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    frozen_val = None
    for k, st in enumerate(ctx.table.stages):
        specs = select_stage_runs(ctx.table, ctx.backbone, common, k, chosen)
        # The frozen backbone on the validation classes, once (reference): the first candidate's pass.
        specs = [s if (k, i) == (0, 0) else s._replace(overrides=s.overrides + ["--train.eval_frozen", "false"])
                 for i, s in enumerate(specs)]
        results = run_all(specs, ctx, {"validation_only": True}, on_run=lambda r: record_partial(out, r))
        frozen_val = frozen_val or results[0].get("frozen_metrics")
        rec = stage_record(st.name, st.scope, specs, results, ctx.table.metric, ctx.table.dear_margin)
        for c, res in zip(rec["candidates"], results):
            c["run"] = res
        chosen[st.name] = rec["chosen"]
        stages.append(rec)
        result = {"benchmark": "datasets", **C.provenance(__file__, argv),
                  "settings": settings(ctx, "select", val_classes=ds.val_classes),
                  "json": C.repo_relative(out), **select_record(ctx.table, ctx.backbone, stages, frozen_val)}
        C.write_json(out, result)
        print(f"stage {st.name}: chosen {rec['chosen']} (wrote {out})", flush=True)
    if result.get("complete"):
        partial_path(out).unlink(missing_ok=True)
    return result


def aggregate(name: str, label: str, seeds_label: str, overrides: list[str],
              runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from its runs (seeds): mean and sample SD (percent) of R@1 and MAP@R, ID and per OOD gallery."""
    stats: dict[str, Any] = {k: C.mean_std([100.0 * r["metrics"][k] for r in runs]) for k in O.METRICS}
    names = set.intersection(*[set(r.get("ood_metrics") or {}) for r in runs]) if runs else set()
    stats["ood"] = {g: {k: C.mean_std([100.0 * r["ood_metrics"][g][k] for r in runs]) for k in O.METRICS}
                    for g in sorted(names)}
    for k in ("train_seconds", "wall_seconds", "peak_rss_mb"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        stats[k] = C.mean_std(vals) if vals else None
    p = runs[0].get("params") or {}
    same = sorted({r["same_run_as"] for r in runs if r.get("same_run_as")})
    return {"name": name, "label": label, "seeds": [r.get("seed") for r in runs], "seeds_label": seeds_label,
            "overrides": overrides, "steps": runs[0].get("steps", 0), "stats": stats,
            "trainable_params": int(p.get("trainable_params", 0)),
            "trainable_pct": 100.0 * float(p.get("trainable_fraction", 0.0)), "runs": runs,
            # Runs that are another row's (the same settings): not a second measurement (said under the table).
            **({"same_runs_as": same} if same else {})}


def load_select(path: Path, ctx: Context) -> dict[str, list[str]]:
    """The chosen tokens of the (dataset, backbone)'s select JSON; a clear error when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no select result for ({ctx.dataset}, {ctx.backbone}); run "
                                f"--profile select first (or pass --select JSON)")
    return chosen_tokens({"json": str(path), **json.loads(path.read_text())}, ctx.dataset, ctx.backbone)


def run_main(ctx: Context, args: argparse.Namespace, out: Path, argv: list[str]) -> dict[str, Any]:
    """The main rows on the test classes for the chosen values; each saved model also on the OOD galleries."""
    ds = ctx.table.datasets[ctx.dataset]
    sel_path = Path(args.select or RESULTS / f"{ctx.dataset}_{ctx.backbone}_select.json")
    chosen = load_select(sel_path, ctx)
    common = common_overrides(ds, ctx.root, ctx.cache, ctx.threads, ctx.table.backbones[ctx.backbone], 0)
    seeds = seeds_of(ctx.table, ctx.backbone, args.seeds, args.quick)
    plan = main_runs(ctx.table, ds, ctx.backbone, common, chosen, seeds, main_rows_of(ctx.table, args))
    gals, missing = O.galleries(ctx.table, ctx.dataset, _ood_roots(args))
    for m in missing:
        print(f"OOD gallery {m} not found (${ctx.table.datasets.get(m, ctx.table.ood_extra.get(m)).env}): "
              "its column is left out", flush=True)
    extra = {"ood": [g._asdict() for g in gals]} if not args.no_ood else {}
    t0 = time.time()
    done: dict[str, tuple[str, dict[str, Any]]] = {}  # a row of another's settings reuses its run
    rows = [aggregate(name, label, sl, runs[0].row_overrides,
                      run_all(runs, ctx, extra, done, lambda r: record_partial(out, r)))
            for name, label, sl, runs in plan]  # run cheapest first, shown in the tables' order
    rows.sort(key=lambda r: R.METHODS.index(r["name"]) if r["name"] in R.METHODS else len(R.METHODS))
    result = {"benchmark": "datasets", **C.provenance(__file__, argv),
              "settings": settings(ctx, "main", seeds=seeds, quick=bool(args.quick), rows=[n for n, *_ in plan],
                                   chosen_tokens=chosen,
                                   select_json=C.repo_relative(sel_path),
                                   ood=[] if args.no_ood else [g.name for g in gals], ood_missing=missing),
              "wall_seconds_total": time.time() - t0, "json": C.repo_relative(out), "rows": rows}
    C.write_json(out, result)
    partial_path(out).unlink(missing_ok=True)
    return result


def seeds_of(table: Table, backbone: str, n: int | None, quick: bool) -> list[int]:
    """``--seeds N`` -> seeds 0..N-1; default the backbone's (3 for the MobileNetV2); ``--quick``: one."""
    return list(range(1 if quick else (n or table.backbones[backbone].default_seeds)))


def main_rows_of(table: Table, args: argparse.Namespace) -> list[str] | None:
    """The main rows of this invocation: ``--rows``, else ``--quick``'s, else all (None)."""
    return args.rows.split(",") if args.rows else (table.quick_rows if args.quick else None)


def _ood_roots(args: argparse.Namespace) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in args.data or [])


# ----------------------------------------------------------------------------- --plan
def plan_printout(ctx: Context, args: argparse.Namespace) -> list[str]:
    """The runs a profile would make, with time estimates from measured runs (nothing runs).

    select: each stage planned with the earlier stages at their first candidate ("if the first
    candidates win"); the worst case takes the dearest candidate of each earlier stage instead.
    """
    ds, bb = ctx.table.datasets[ctx.dataset], ctx.table.backbones[ctx.backbone]
    costs = K.load_costs()
    images = sum(ds.images)

    def est(spec: RunSpec, ood_images: int = 0) -> float | None:
        return K.estimate(costs, bb.model, bb.img_size, spec.overrides, spec.kind == "frozen", images, ood_images)

    lines = [f"{ctx.dataset} x {ctx.backbone} ({bb.model}, {bb.img_size} px), profile {args.profile}:"]
    if args.profile == "select":
        common = common_overrides(ds, ctx.root, ctx.cache, ctx.threads, bb, ds.val_classes)
        rows, worst, dear, seen = [], 0.0, {}, set()
        for k, st in enumerate(ctx.table.stages):
            specs = select_stage_runs(ctx.table, ctx.backbone, common, k, {})
            # A candidate equal to an earlier stage's run is that run (its folder): no second cost.
            for s in specs:  # a repeat costs nothing more (0), unless its cost is unknown anyway
                e = est(s)
                rows.append((s.name, s.tag, e if s.tag not in {t for _, t, _ in rows} or e is None else 0.0))
            dear_specs = select_stage_runs(ctx.table, ctx.backbone, common, k, dear)
            worst += sum(est(s) or 0.0 for s in dear_specs if s.tag not in seen)
            seen |= {s.tag for s in dear_specs}
            dear[st.name] = max(zip(map(est, dear_specs), st.of(ctx.backbone)), key=lambda t: t[0] or 0.0)[1]
        lines += K.plan_lines(rows, done=finished(ctx, [t for _, t, _ in rows]))
        if any(e is not None for *_, e in rows):  # else nothing is measured: no worst case either
            lines.append(f"  worst case (the dearest candidate of each stage wins): ~{worst / 60:.0f} min")
        return lines
    sel = Path(args.select or RESULTS / f"{ctx.dataset}_{ctx.backbone}_select.json")
    if sel.is_file():
        chosen = load_select(sel, ctx)
    else:
        chosen = {s: stage_tokens(ctx.table, ctx.backbone, {}, (s,)) for s in ("adapters", "trained", "opa")}
        lines.append(f"  ({sel} not there yet: planned with every stage's first candidate)")
    common = common_overrides(ds, ctx.root, ctx.cache, ctx.threads, bb, 0)
    seeds = seeds_of(ctx.table, ctx.backbone, args.seeds, args.quick)
    ood_images = sum(ctx.table.datasets[n].images[1] if n in ctx.table.datasets else sum(ctx.table.ood_extra[n].images)
                     for n in O.ood_names(ctx.table, ctx.dataset)) * (not args.no_ood)
    rows, first = [], {}
    plan = main_runs(ctx.table, ds, ctx.backbone, common, chosen, seeds, main_rows_of(ctx.table, args))
    for n, _l, sl, specs in plan:
        for s in specs:
            key = s.tag.rsplit("_", 1)[-1]
            same = first.setdefault(key, s.tag) != s.tag  # another row's settings: that run (run_all)
            rows.append((f"{n} [{sl}]" + (f" = {first[key]}" if same else ""), s.tag,
                         0.0 if same else est(s, ood_images)))
    return lines + K.plan_lines(rows, done=finished(ctx, list(first.values())))


def finished(ctx: Context, tags: list[str]) -> set[str]:
    """The run folders among ``tags`` whose run finished (as the runner resumes: a measured ``result.json``),
    or that a ``--reuse`` file supplies."""
    return {t for t in tags if finished_result(ctx.work / t) is not None or t in ctx.reused}


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.datasets.run``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.datasets.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dataset", choices=tuple(TABLE.datasets), default=None)
    p.add_argument("--backbone", choices=tuple(TABLE.backbones), default="mobilenetv2")
    p.add_argument("--profile", choices=("select", "main"), default="main",
                   help="select: candidates on the validation split -> chosen values; main: the test rows for them")
    p.add_argument("--quick", action="store_true",
                   help="main only: the rows frozen, ICA, DVA, full fine-tune, one seed")
    p.add_argument("--rows", default=None,
                   help="main: comma-separated rows to run (split a profile over 2 h; merge the parts with --reuse)")
    p.add_argument("--seeds", type=int, default=None,
                   help="main: seeds of the frozen/DVA/full rows (default: 3 for mobilenetv2, else 1)")
    p.add_argument("--out", default=None,
                   help="JSON (default benchmarks/results/datasets/<dataset>_<backbone>_<profile>.json)")
    p.add_argument("--select", default=None, help="main: the select JSON (default that of the dataset and backbone)")
    p.add_argument("--reuse", nargs="+", metavar="JSON", default=None,
                   help="finished runs of earlier result files: a run of the same settings is not run again")
    p.add_argument("--plan", action="store_true", help="print the runs and time estimates; run nothing")
    p.add_argument("--root", default=None, help="the dataset's folder (default $DVA_<NAME> or ../shared/data/<name>)")
    p.add_argument("--data", nargs="+", metavar="NAME=DIR", default=None, help="folders of the OOD galleries")
    p.add_argument("--no-ood", action="store_true", help="main: no OOD galleries")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--work-dir", default=None,
                   help=f"run folders (default {C.repo_relative(WORK)}/<dataset>_<backbone>)")
    p.add_argument("--cache-dir", default=None, help="shared prefix caches and boxes (default WORK/cache)")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="run nothing: print the markdown tables of these result files (main and select)")
    p.add_argument("--markdown", default=None, help="with --render: also write the markdown to this file")
    p.add_argument("--figure", default=None, help="with --render: write the ID gain vs mean OOD change figure here")
    return p


def _context(args: argparse.Namespace) -> Context:
    """Locate the data (a clear error before anything starts) and the folders of one invocation."""
    if args.dataset is None:
        raise SystemExit("--dataset is required (cub100 | cars196 | aircraft47)")
    if args.quick and args.profile == "select":
        raise SystemExit("--quick is for the main profile (the select grid is harness.yaml's)")
    spec = TABLE.datasets[args.dataset]
    folder = locate(spec, args.root)
    if folder is None and not args.plan:
        raise SystemExit(f"{args.dataset} not found at {args.root or f'${spec.env} or ../shared/data/{args.dataset}'}: "
                         f"point --root at the folder holding {spec.marker}")
    work = Path(args.work_dir) if args.work_dir else WORK / f"{args.dataset}_{args.backbone}"
    cache = Path(args.cache_dir) if args.cache_dir else WORK / "cache"
    root = reader_root(spec, folder) if folder else f"<{args.dataset}>"
    return Context(TABLE, args.dataset, args.backbone, root, work, cache, args.threads, reuse_index(args.reuse))


def main(argv: list[str] | None = None) -> int:
    """Run a profile (or one worker run, or the plan, or the rendering); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.render:
        results = [json.loads(Path(f).read_text()) for f in args.render]
        text = R.render_all(results)
        print(text)
        if args.markdown:
            C.write_text(args.markdown, text)
        if args.figure:
            print(f"wrote {R.figure(results, Path(args.figure))}")
        return 0
    ctx = _context(args)
    out = Path(args.out) if args.out else RESULTS / f"{args.dataset}_{args.backbone}_{args.profile}.json"
    # its own finished runs (the JSON, the partial file) are taken back, as --reuse would: a sitting
    # stopped on another machine goes on without training them again; --reuse files first
    for tag, run in reuse_index(own_runs(out)).items():
        ctx.reused.setdefault(tag, run)
    try:
        if args.plan:
            print("\n".join(plan_printout(ctx, args)))
            return 0
        ctx.cache.mkdir(parents=True, exist_ok=True)
        result = run_select(ctx, out, argv) if args.profile == "select" else run_main(ctx, args, out, argv)
    except (ValueError, FileNotFoundError) as e:  # a wrong select file, row name, ...: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(R.render_all([result]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
