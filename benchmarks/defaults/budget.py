#!/usr/bin/env python
"""The step-budget evidence for ``AUTO_STEPS``: the steps chosen on validation splits, and the rule that fits them.

From the repository root::

    python -m benchmarks.defaults.budget                 # read the select profiles' "steps" stages
    python -m benchmarks.defaults.budget --run-pets37    # also run the pets37 steps selection
    python -m benchmarks.defaults.budget --render        # the markdown of benchmarks/results/defaults_budget.json

Reads the ``steps`` stage of every ``benchmarks/results/datasets/*_select.json`` (candidate budgets
trained on held-out training classes, scored by validation MAP@R / R@1) and, with
``--run-pets37``, runs the same kind of selection on pets37: the MobileNetV2 preset's adapters, ICA
alone, the auto rule's number of training breeds held out, through the datasets harness's
validation-only worker (the test breeds are never loaded). Per (dataset, backbone): training
images after the hold-out, batch, each candidate's steps, epochs and validation scores, the one
chosen, and what the current rule (``AUTO_STEPS``, imported) gives. :func:`fit_rule` finds the
clamp rule's ``{epochs, min, max}`` that best reproduces the chosen budgets. Writes
``benchmarks/results/defaults_budget.json``; :func:`render_budget` is the markdown for docs/METHOD.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.datasets import plan as DP
from benchmarks.defaults import record as R

RESULT = C.RESULTS / "defaults_budget.json"
SELECT_GLOB = "datasets/*_select.json"
WORK = C.REPO / "runs" / "bench_defaults" / "budget"
STAGE = "steps"  # the select stage whose candidates are budgets
PETS37 = "pets37"
PETS37_BACKBONE = "mobilenetv2"
PETS37_STEPS = (60, 120, 240, 480)  # 140 training images after the hold-out: 14 to 110 epochs of 32
EPOCH_GRID = tuple(range(1, 17))


# ----------------------------------------------------------------------------- the rule
def rule_steps(images: int, batch: int, epochs: int, lo: int, hi: int) -> int:
    """The clamp rule: ``clamp(epochs x (images // batch), lo, hi)`` (``resolve_budget``'s auto budget;
    the test suite checks that they agree at ``AUTO_STEPS``)."""
    return min(hi, max(lo, epochs * max(1, images // batch)))


def _loss(points: Sequence[tuple[int, int, int]], e: int, lo: int, hi: int) -> float:
    return sum(abs(math.log(rule_steps(n, b, e, lo, hi) / s)) for n, b, s in points)


def fit_rule(points: Sequence[Sequence[int]], epochs_grid: Sequence[int] = EPOCH_GRID,
             current: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``{epochs, min, max}`` of the clamp rule that best reproduces the chosen budgets.

    ``min`` is the chosen budget of the dataset with the fewest training images (the median-low
    over its points): a small set gets at least what its validation chose. ``epochs`` (over
    ``epochs_grid``) and ``max`` (over the chosen budgets and the current ``max``, none below
    ``min``) minimise the summed ``|log(rule steps / chosen steps)|``; ties go to the values
    nearest the current rule (the evidence does not ask for a change there).

    Args:
        points: ``(training images, batch size, chosen steps)`` per (dataset, backbone).
        epochs_grid: the ``epochs`` tried.
        current: the rule in force (default ``dva.config.AUTO_STEPS``).

    Returns:
        ``{"epochs", "min", "max", "loss", "tied_epochs": every E of ``epochs_grid`` with the same loss
        at that min and max, "steps": the rule's steps per point, "current":
        {"epochs", "min", "max", "loss", "steps"}}``.
    """
    from dva.config import AUTO_STEPS

    cur = dict(current or AUTO_STEPS)
    pts = [(int(n), int(b), int(s)) for n, b, s in points]
    if not pts or any(min(p) <= 0 for p in pts):
        raise ValueError(f"fit_rule needs points of positive (images, batch, steps); got {points}")
    fewest = min(n for n, _, _ in pts)
    lo = statistics.median_low([s for n, _, s in pts if n == fewest])
    highs = sorted({s for *_, s in pts} | {int(cur["max"])})
    cands = [(e, hi) for e in epochs_grid for hi in highs if hi >= lo]

    def key(c: tuple[int, int]) -> tuple[float, int, float]:
        e, hi = c
        return (round(_loss(pts, e, lo, hi), 9), abs(e - cur["epochs"]), abs(math.log(hi / cur["max"])))

    e, hi = min(cands, key=key)
    best = round(_loss(pts, e, lo, hi), 9)
    return {"epochs": e, "min": lo, "max": hi, "loss": _loss(pts, e, lo, hi),
            "tied_epochs": [t for t in epochs_grid if round(_loss(pts, t, lo, hi), 9) == best],
            "steps": [rule_steps(n, b, e, lo, hi) for n, b, _ in pts],
            "current": {**{k: int(cur[k]) for k in ("epochs", "min", "max")},
                        "loss": _loss(pts, int(cur["epochs"]), int(cur["min"]), int(cur["max"])),
                        "steps": [rule_steps(n, b, int(cur["epochs"]), int(cur["min"]), int(cur["max"]))
                                  for n, b, _ in pts]}}


# ----------------------------------------------------------------------------- the evidence
def steps_stage(select: dict[str, Any]) -> dict[str, Any] | None:
    """The ``steps`` stage of a select result, or None (not run yet)."""
    return next((s for s in select.get("stages") or [] if s.get("name") == STAGE), None)


def _run_folder(cand: dict[str, Any], dataset: str, backbone: str) -> Path:
    run = cand.get("run") or {}
    if run.get("checkpoint"):
        return Path(run["checkpoint"]).parent
    return C.REPO / "runs" / "bench_datasets" / f"{dataset}_{backbone}" / str(cand.get("folder"))


def train_images(select: dict[str, Any], cand: dict[str, Any]) -> tuple[int | None, str]:
    """Training images of a candidate's run after the hold-out, and where the count came from: the
    run's ``log.jsonl`` setup row, else the split as the trainer prepares it (data located), else none."""
    s = select["settings"]
    setup = R.read_log(_run_folder(cand, s["dataset"], s["backbone"]) / "log.jsonl").get("setup") or {}
    if setup.get("train_images"):
        return int(setup["train_images"]), "run log"
    spec = DP.TABLE.datasets.get(s["dataset"]) or DP.TABLE.ood_extra.get(s["dataset"])
    folder = DP.locate(spec) if spec else None
    if folder is None:
        return None, "unknown (no run log, data not found)"
    from dva.config import load_config
    from dva_train.train import prepare_data

    cfg = load_config("demo", ["--data.dataset", spec.reader, "--data.root", DP.reader_root(spec, folder),
                               "--data.val_classes", str(s["val_classes"])])
    return len(prepare_data(cfg).train_labels), "split (prepare_data)"


def auto_budget(images: int, batch: int) -> dict[str, Any]:
    """What the rule in force (``resolve_budget`` with no budget set) gives ``images`` in batches of ``batch``."""
    from dva.config import TrainConfig
    from dva_train.budget import resolve_budget

    b = resolve_budget(TrainConfig(), images, batch)
    return {"steps": b.steps, "epochs": b.steps * batch / images, "rule": b.rule}


def budget_row(select: dict[str, Any], source: str) -> dict[str, Any]:
    """One (dataset, backbone): its steps stage's candidates with epochs and validation scores, the
    chosen one, and the current rule's budget; ``stage_missing`` when the stage has not run."""
    s = select.get("settings") or {}
    row: dict[str, Any] = {"dataset": s.get("dataset"), "backbone": s.get("backbone"), "json": source,
                           "val_classes": s.get("val_classes"), "metric": None, "candidates": [],
                           "stage_missing": True}
    st = steps_stage(select)
    if st is None:
        return row
    cands = st["candidates"]
    n, how = train_images(select, cands[0])
    b = (cands[0].get("run") or {}).get("batch") or {}
    batch = int(b.get("classes_per_batch", 0)) * int(b.get("images_per_class", 0)) or None
    row.update(stage_missing=False, metric=st.get("metric"), train_images=n, train_images_source=how, batch=batch,
               batch_shape=[b.get("classes_per_batch"), b.get("images_per_class")], chosen=st["chosen"])
    for c in cands:
        m = c.get("val_metrics") or {}
        R.selection_split({"checkpoints": {"best": ((c.get("run") or {}).get("checkpoints") or {}).get("best")}},
                          f"{source} {c['name']}")
        row["candidates"].append({"name": c["name"], "steps": c.get("steps"), "chosen": bool(c.get("chosen")),
                                  "epochs": c["steps"] * batch / n if n and batch and c.get("steps") else None,
                                  "val_r1": m.get("recall@1"), "val_map_r": m.get("map@r"),
                                  "eval_split": (c.get("run") or {}).get("eval_split")})
    row["chosen_steps"] = next(c["steps"] for c in row["candidates"] if c["chosen"])
    row["auto"] = auto_budget(n, batch) if n and batch else None
    return row


def evidence(files: Sequence[Path], pets37: dict[str, Any] | None) -> dict[str, Any]:
    """Every row, the fitted rule over the rows with a chosen budget, and the rule in force."""
    from dva.config import AUTO_STEPS

    rows = [budget_row(json.loads(Path(f).read_text()), C.repo_relative(Path(f))) for f in sorted(files)]
    if pets37:
        rows.append(budget_row(pets37, "pets37 (--run-pets37)"))
    used = [r for r in rows if not r["stage_missing"] and r.get("train_images") and r.get("batch")]
    pts = [(r["train_images"], r["batch"], r["chosen_steps"]) for r in used]
    fit = fit_rule(pts) if pts else None
    for r, fitted, current in zip(used, (fit or {}).get("steps", []), (fit or {}).get("current", {}).get("steps", [])):
        r["fit_steps"], r["current_rule_steps"] = fitted, current
    return {"auto_steps": dict(AUTO_STEPS), "rows": rows, "points": [list(p) for p in pts], "fit": fit,
            "pets37": pets37}


# ----------------------------------------------------------------------------- pets37
def run_pets37(root: str, steps: Sequence[int], work: Path, threads: int) -> dict[str, Any]:
    """The steps selection on pets37's training breeds: a select-shaped record (settings, one stage).

    The MobileNetV2 preset's adapters, ICA alone (OPA off, as the harness's steps stage), the auto
    rule's hold-out of training breeds, each candidate a subprocess of the datasets harness's
    validation-only worker: the test breeds' records are dropped where the split is read.
    """
    from benchmarks.datasets.run import run_one
    from benchmarks.datasets.select import stage_record
    from dva.config import AUTO
    from dva.data import load_split
    from dva_train.budget import held_out_classes

    ds, bb = DP.TABLE.ood_extra[PETS37], DP.TABLE.backbones[PETS37_BACKBONE]
    n_val = held_out_classes(AUTO, len({r.label for r in load_split(ds.reader, root, "open").train}))[0]
    if not n_val:
        raise ValueError(f"{root}: too few pets37 training breeds to hold some out")
    cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    common = DP.common_overrides(ds, root, cache, threads, bb, n_val) + DP.backbone_overrides(DP.TABLE, PETS37_BACKBONE)
    specs, results = [], []
    for n in steps:
        own = ["--opa.enabled", "false", "--train.steps", str(n)]
        ov = common + own + ["--train.seed", "0"]
        spec = DP.RunSpec(f"{STAGE}:st{n}", "train", 0, ov, f"sel_s0_{DP.digest(ov)}", own[2:])
        specs.append(spec)
        results.append(run_one(spec, work / f"{PETS37}_{PETS37_BACKBONE}" / spec.tag, cache, threads,
                               {"validation_only": True}))
    rec = stage_record(STAGE, "trained", specs, results, DP.TABLE.metric)
    for c, res in zip(rec["candidates"], results):
        c["run"] = res
    return {"settings": {"dataset": PETS37, "backbone": PETS37_BACKBONE, "model": bb.model, "img_size": bb.img_size,
                         "val_classes": n_val, "threads": threads, "profile": "select (steps stage only)"},
            "stages": [rec]}


# ----------------------------------------------------------------------------- markdown
def _n(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_budget(result: dict[str, Any]) -> str:
    """The markdown for docs/METHOD.md: candidates per (dataset, backbone), the rule in force, the fit."""
    body, per = [], []
    for r in result["rows"]:
        if r["stage_missing"]:
            per.append([r["dataset"], r["backbone"], "-", "-", "steps stage not run yet", "-", "-"])
            continue
        for c in r["candidates"]:
            body.append([r["dataset"], r["backbone"], _n(r.get("train_images"), "d"), _n(r.get("batch"), "d"),
                         c["steps"], _n(c["epochs"], ".1f"), _n(c["val_r1"] and 100 * c["val_r1"], ".1f"),
                         _n(c["val_map_r"] and 100 * c["val_map_r"], ".1f"), "**chosen**" if c["chosen"] else ""])
        a, fitted = r.get("auto") or {}, r.get("fit_steps")
        # The grid's largest budget chosen: the best budget may lie beyond it (the fit takes it as found).
        top = r["chosen_steps"] == max(c["steps"] for c in r["candidates"])
        per.append([r["dataset"], r["backbone"], _n(r.get("train_images"), "d"),
                    f"{r['chosen_steps']}{' (largest tried)' if top else ''}",
                    f"{_n(a.get('steps'), 'd')} ({_n(a.get('epochs'), '.1f')} epochs)", _n(fitted, "d"),
                    "-" if fitted is None else f"{math.log(fitted / r['chosen_steps']):+.2f}"])
    fit, cur = result.get("fit"), result["auto_steps"]
    pts = result.get("points") or []
    out = [C.md_table(["dataset", "backbone", "train images (after hold-out)", "batch", "steps", "epochs",
                       "val R@1", "val MAP@R", ""], body, "llrrrrrrl"), "",
           C.md_table(["dataset", "backbone", "train images", "chosen steps",
                       f"rule in force: clamp({cur['epochs']} epochs, {cur['min']}, {cur['max']})",
                       "fitted rule's steps", "log(fitted / chosen)"], per, "llrrrrr")]
    if fit:
        c = fit["current"]
        same = all(fit[k] == c[k] for k in ("epochs", "min", "max"))
        force = ("the rule in force is this rule" if same else
                 f"against {c['loss']:.2f} for the rule in force (E = {c['epochs']}, MIN = {c['min']}, MAX = {c['max']})")
        tied = fit.get("tied_epochs") or [fit["epochs"]]
        tie = ("" if len(tied) < 2 else
               f" E = {tied[0]} to {tied[-1]} fit these points equally well (budgets that lie on both sides of "
               "every such rule), so the tie went to the E nearest the rule in force; more datasets would narrow it.")
        out += ["", (f"The clamp rule `steps = clamp(E x (images // batch), MIN, MAX)` that best reproduces the "
                    f"{len(pts)} chosen budgets: E = {fit['epochs']}, MIN = {fit['min']} (the chosen budget of the "
                    f"smallest set), MAX = {fit['max']}; summed |log(rule / chosen)| {fit['loss']:.2f}; {force}.{tie}")]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.defaults.budget``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.defaults.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-pets37", action="store_true", help="run the pets37 steps selection (else: the one recorded)")
    p.add_argument("--pets37-steps", default=",".join(map(str, PETS37_STEPS)), help="its candidate budgets")
    p.add_argument("--root", default=None, help="the pets37 folder (default $DVA_PETS37 or ../shared/data/pets37)")
    p.add_argument("--select", nargs="+", metavar="JSON", default=None,
                   help=f"select results to read (default benchmarks/results/{SELECT_GLOB})")
    p.add_argument("--out", default=str(RESULT), help="the JSON")
    p.add_argument("--work-dir", default=str(WORK), help="the pets37 run folders")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--render", action="store_true", help="run nothing: print the markdown of --out")
    return p


def main(argv: list[str] | None = None) -> int:
    """Gather (and optionally run) the evidence, fit the rule, write the JSON; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.render:
        print(render_budget(json.loads(out.read_text())))
        return 0
    old = json.loads(out.read_text()) if out.is_file() else {}
    pets37 = old.get("pets37")
    if args.run_pets37:
        folder = DP.locate(DP.TABLE.ood_extra[PETS37], args.root)
        if folder is None:
            raise SystemExit(f"pets37 not found at {args.root or '$DVA_PETS37 or ../shared/data/pets37'}: "
                             "point --root at the folder holding pets37.csv")
        steps = [int(s) for s in args.pets37_steps.split(",")]
        pets37 = run_pets37(DP.reader_root(DP.TABLE.ood_extra[PETS37], folder), steps, Path(args.work_dir),
                            args.threads)
    files = [Path(f) for f in args.select] if args.select else sorted(C.RESULTS.glob(SELECT_GLOB))
    result = {"benchmark": "defaults_budget", **C.provenance(__file__, argv), "json": C.repo_relative(out),
              **evidence(files, pets37)}
    C.write_json(out, result)
    print(render_budget(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
