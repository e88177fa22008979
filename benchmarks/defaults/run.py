#!/usr/bin/env python
"""The defaults benchmark: the default command per (preset, dataset), against the frozen backbone and the tuned row.

From the repository root::

    python -m benchmarks.defaults.run --plan
    python -m benchmarks.defaults.run --presets mobilenetv2,lite2 --datasets cub100,pets37
    python -m benchmarks.defaults.run --render benchmarks/results/defaults.json

Each run is ``dva train --preset P --data.dataset READER --data.root ROOT --output_dir RUN`` in a
subprocess, exactly as a user types it, plus only the thread count and a shared prefix-cache
folder (the exact argv is recorded). Its ``summary.json`` gives the budget, the hold-out, the
batch, the validation and test figures (frozen and trained) and which split chose the saved
model: the harness refuses a run that selected or stopped on the test split. Each run is set
against the frozen backbone (same run) and the datasets harness's tuned DVA row
(``benchmarks/results/datasets/<dataset>_<backbone>_main.json``; Lite0/Lite1 have none).

Resumable: a finished run folder is read back, a folder of other settings is refused, a run
killed part-way starts again. The JSON (default ``benchmarks/results/defaults.json``) is written
after every finished run and merges with what it already holds, so ``--presets``/``--datasets``
subsets fill one file (``--reuse`` takes finished runs of other files). ``--plan`` prints the runs
with time estimates and splits them into sittings of under 2 hours.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C
from benchmarks.datasets import costs as K
from benchmarks.defaults import plan as P
from benchmarks.defaults import record as R
from benchmarks.defaults import render as V

RESULT = C.RESULTS / "defaults.json"
WORK = C.REPO / "runs" / "bench_defaults"
OK_EXITS = (0, 3)  # dva train: trained, or stopped by the collapse guard (a result of the default command too)


class Pair(NamedTuple):
    """One default run: its preset and dataset, the command, its settings and run folder."""

    preset: str
    dataset: str
    argv: list[str]
    settings: dict[str, Any]
    digest: str
    folder: Path  # spec.json, stdout.log, record.json; the dva run folder is folder/run


def dva_command() -> list[str]:
    """What runs ``dva``: the console script beside this interpreter, else ``python -m dva_cli``."""
    exe = Path(sys.executable).with_name("dva")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dva_cli"]


def make_pair(preset: str, dataset: str, root: str, work: Path, cache: Path, threads: int) -> Pair:
    """The :class:`Pair` of ``(preset, dataset)``: its folder is named by the settings' digest."""
    argv = P.default_argv(preset, dataset, root, "RUN", threads, cache)
    settings = P.run_settings(argv)
    dig = P.digest(settings)
    folder = work / f"{preset}_{dataset}_{dig}"
    argv[argv.index("--output_dir") + 1] = str(folder / "run")
    P.check_argv(argv)
    return Pair(preset, dataset, argv, settings, dig, folder)


def identity(pair: Pair) -> dict[str, Any]:
    """What a record says about the run it is: names, command, settings digest and rules in force."""
    from dva.config import load_config

    b = load_config(pair.preset).backbone
    return {"preset": pair.preset, "dataset": pair.dataset, "reader": P.dataset_spec(pair.dataset).reader,
            "backbone": P.harness_backbone(pair.preset), "model": b.name, "img_size": b.img_size,
            "argv": pair.argv, "command": " ".join(shlex.quote(t) for t in P.user_command(pair.argv)),
            "folder": C.repo_relative(pair.folder), "settings_digest": pair.digest,
            "auto_steps": pair.settings["auto_steps"], "auto_val_classes": pair.settings["auto_val_classes"]}


def run_pair(pair: Pair, threads: int, reused: dict[tuple[str, str, str], dict[str, Any]],
             log: Callable[..., None] = print) -> dict[str, Any]:
    """Run one default command in a subprocess, or read back its finished record (resume, reuse).

    Raises:
        RuntimeError: the folder holds a run of other settings, or the command failed.
        benchmarks.defaults.record.SelectedOnTestError: the run selected or stopped on the test split.
    """
    spec_path, rec_path, run_dir = pair.folder / "spec.json", pair.folder / "record.json", pair.folder / "run"
    if spec_path.is_file() and json.loads(spec_path.read_text()).get("settings") != pair.settings:
        raise RuntimeError(f"{pair.folder} holds a run of other settings ({spec_path}); use another --work-dir, "
                           "or delete that folder to run it again")
    if rec_path.is_file():
        log(f"  [done] {pair.preset} x {pair.dataset} ({pair.folder.name})", flush=True)
        return json.loads(rec_path.read_text())
    old = reused.get((pair.preset, pair.dataset, pair.digest))
    if old:
        log(f"  [reused] {pair.preset} x {pair.dataset} from {old['reused_from']}", flush=True)
        return old
    if run_dir.exists():  # killed part-way: the default command has no --resume, so it starts again
        shutil.rmtree(run_dir)
    C.write_json(spec_path, {"argv": pair.argv, "settings": pair.settings, "threads": threads})
    cmd = dva_command() + pair.argv[1:]
    m = C.run_measured(cmd, pair.folder / "stdout.log", P.env_threads(threads), C.REPO)
    if m["exit_code"] not in OK_EXITS or not (run_dir / "summary.json").is_file():
        tail = (pair.folder / "stdout.log").read_text()[-2000:]
        raise RuntimeError(f"{pair.preset} x {pair.dataset} failed (exit {m['exit_code']}); log "
                           f"{pair.folder / 'stdout.log'}:\n{tail}")
    rec = {**identity(pair), "executable": cmd[: len(cmd) - len(pair.argv) + 1], **R.read_run(run_dir), **m}
    C.write_json(rec_path, rec)
    t = rec.get("test_trained") or {}
    log(f"  {pair.preset} x {pair.dataset}: {rec['steps']} steps, test R@1 {100 * t.get('recall@1', float('nan')):.2f}"
        f" MAP@R {100 * t.get('map@r', float('nan')):.2f}, wall {m['wall_seconds']:.0f}s", flush=True)
    return rec


def reuse_index(files: list[str | Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Finished runs of result files, keyed by (preset, dataset, settings digest): only a run of the
    very same settings stands in for one."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in files:
        if not Path(f).is_file():
            continue
        for run in json.loads(Path(f).read_text()).get("runs") or []:
            if "wall_seconds" in run and run.get("settings_digest"):
                key = (run["preset"], run["dataset"], run["settings_digest"])
                out.setdefault(key, {**run, "reused_from": run.get("reused_from") or C.repo_relative(Path(f))})
    return out


# ----------------------------------------------------------------------------- the result file
def order_key(rec: dict[str, Any]) -> tuple[int, int]:
    """Presets cheapest first, then the datasets in the harness's order."""
    ps, ds = P.presets(), P.datasets()
    return (ps.index(rec["preset"]) if rec["preset"] in ps else len(ps),
            ds.index(rec["dataset"]) if rec["dataset"] in ds else len(ds))


def build_result(runs: list[dict[str, Any]], facts: dict[str, Any], argv: list[str], out: Path,
                 threads: int, results: Path = C.RESULTS / "datasets") -> dict[str, Any]:
    """The JSON: every run with its tuned row and comparisons (recomputed now: a tuned row that landed
    since is used), the datasets' split facts, the targets' settings."""
    rows = with_tuned(sorted(runs, key=order_key), results)
    return {"benchmark": "defaults", **C.provenance(__file__, argv), "json": C.repo_relative(out),
            "settings": {"presets": sorted({r["preset"] for r in rows}, key=lambda p: order_key({"preset": p, "dataset": ""})),
                         "datasets": [d for d in P.datasets() if any(r["dataset"] == d for r in rows)],
                         "id_datasets": [d for d in P.datasets() if d not in P.OPEN_SET], "open_set": list(P.OPEN_SET),
                         "harness_backbones": {p: P.harness_backbone(p) for p in P.presets()},
                         "target_r1_gap": V.TARGET_R1_GAP, "threads": threads, "tuned_row": R.TUNED_ROW},
            "datasets": facts, "runs": rows}


def with_tuned(runs: list[dict[str, Any]], results: Path = C.RESULTS / "datasets") -> list[dict[str, Any]]:
    """Each run with the datasets harness's tuned DVA row of its (dataset, backbone) as the result files
    hold it now, and the comparisons with it (none on the open set)."""
    out = []
    for r in runs:
        bb = P.harness_backbone(r["preset"])  # today's harness (a preset may have gained a main profile since)
        tuned = R.tuned_row(r["dataset"], bb, results) if r["dataset"] not in P.OPEN_SET else None
        out.append({**r, "backbone": bb, "tuned": tuned, "compare": R.compare(r, tuned)})
    return out


def refresh(result: dict[str, Any], results: Path = C.RESULTS / "datasets") -> dict[str, Any]:
    """``result`` with every run's tuned row and comparisons read again (a main profile that landed since
    the defaults ran: its row fills the tuned column without running anything)."""
    settings = {**result.get("settings", {}), "harness_backbones": {p: P.harness_backbone(p) for p in P.presets()}}
    return {**result, "settings": settings, "runs": with_tuned(result.get("runs") or [], results)}


def _facts(datasets: list[str], roots: dict[str, str | None], preset: str, old: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for d in datasets:
        out[d] = P.split_facts(d, roots[d], preset) if roots.get(d) else old.get(d) or P.approximate_facts(d, preset)
    return out


# ----------------------------------------------------------------------------- --plan
def plan_printout(pairs: list[Pair], roots: dict[str, str | None], reused: dict) -> list[str]:
    """Each run with its expected budget and time estimate; the sittings (each under 2 hours) as commands."""
    costs = K.load_costs()
    lines, todo = [], []
    for pair in pairs:
        root = roots.get(pair.dataset)
        f = P.split_facts(pair.dataset, root, pair.preset) if root else P.approximate_facts(pair.dataset, pair.preset)
        d = f["default_run"]
        done = (pair.folder / "record.json").is_file() or (pair.preset, pair.dataset, pair.digest) in reused
        est, how = P.estimate(costs, pair.preset, d["steps"], f["train_images"] + f["test_images"])
        held = f"{d['val_classes']} val classes" if "val_classes" in d else "hold-out ~auto"
        lines.append(f"  {pair.preset:<12} {pair.dataset:<11} {d['steps']:>5} steps  {d['train_images']:>5} train img"
                     f"{' (approx.: data not found)' if f['approximate'] else ''}  {held:<15} "
                     + ("[done]" if done else f"~{K.format_minutes(est)} ({how})"))
        if not done:
            todo.append((pair.preset, pair.dataset, est))
    total = sum(e for *_, e in todo if e is not None)
    lines.append(f"  estimated total ~{total / 60:.0f} min for {len(todo)} run(s) to do (full budgets: early "
                 "stopping only shortens a run; 2 CPU cores, as the measured runs)")
    for i, group in enumerate(P.sittings(todo), 1):
        sec = sum(e or P.SITTING_S / 4 for p, d, e in todo if (p, d) in group)
        lines.append(f"  sitting {i} (~{sec / 60:.0f} min):")
        lines += [f"    {c}" for c in P.sitting_commands(group)]
    return lines


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.defaults.run``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.defaults.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=None, help="comma-separated presets (default: every packaged one)")
    p.add_argument("--datasets", default=None, help="comma-separated datasets (default: cub100,cars196,aircraft47,pets37)")
    p.add_argument("--plan", action="store_true", help="print the runs, their estimates and the sittings; run nothing")
    p.add_argument("--reuse", nargs="+", metavar="JSON", default=None,
                   help="finished runs of other result files: a run of the same settings is not run again")
    p.add_argument("--out", default=None, help=f"the JSON (default {C.repo_relative(RESULT)}; merged, not replaced)")
    p.add_argument("--root", nargs="+", metavar="NAME=DIR", default=None,
                   help="a dataset's folder (default $DVA_<NAME> or ../shared/data/<name>)")
    p.add_argument("--work-dir", default=None, help=f"run folders (default {C.repo_relative(WORK)})")
    p.add_argument("--cache-dir", default=None, help="the shared prefix caches (default WORK/cache)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--render", nargs="?", const=str(RESULT), default=None, metavar="JSON",
                   help="run nothing: print the markdown section of this result file")
    return p


def _names(value: str | None, every: list[str], what: str) -> list[str]:
    names = value.split(",") if value else list(every)
    bad = [n for n in names if n not in every]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {every}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the default commands (or print the plan, or render a result); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render:
        print(V.render_section(json.loads(Path(args.render).read_text())))
        return 0
    presets = _names(args.presets, P.presets(), "preset(s)")
    datasets = _names(args.datasets, P.datasets(), "dataset(s)")
    given = dict(kv.split("=", 1) for kv in args.root or [])
    roots = {d: P.find_root(d, given.get(d)) for d in datasets}
    work = Path(args.work_dir) if args.work_dir else WORK
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    out = Path(args.out) if args.out else RESULT
    reused = reuse_index([out, *(args.reuse or [])])
    pairs = [make_pair(p, d, roots[d] or f"<{d}>", work, cache, args.threads) for p in presets for d in datasets]
    if args.plan:
        print("\n".join(plan_printout(pairs, roots, reused)))
        return 0
    missing = [d for d in datasets if not roots[d]]
    if missing:
        raise SystemExit(f"{missing} not found ($DVA_<NAME> or ../shared/data/<name>): pass --root NAME=DIR")
    old = json.loads(out.read_text()) if out.is_file() else {}
    facts = _facts(datasets, roots, presets[0], old.get("datasets") or {})
    done = {(r["preset"], r["dataset"]): r for r in old.get("runs") or []}
    cache.mkdir(parents=True, exist_ok=True)
    try:
        for pair in pairs:
            print(f"[{time.strftime('%H:%M:%S')}] {pair.preset} x {pair.dataset} -> {pair.folder}", flush=True)
            done[(pair.preset, pair.dataset)] = run_pair(pair, args.threads, reused)
            result = build_result(list(done.values()), facts, argv, out, args.threads)
            C.write_json(out, result)
    except (RuntimeError, ValueError) as e:  # a failed run, a refused folder, a test-split selection
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(V.render_section(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
