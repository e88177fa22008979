"""ID against OOD R@1 over training budgets and alphas, per (dataset, backbone): DVA, ICA alone, full fine-tune.

From the repository root (issue 26; frontier.yaml holds the grid):

    python -m benchmarks.frontier.run --dataset cub100 --backbone mobilenetv2 --plan
    python -m benchmarks.frontier.run --dataset cub100 --backbone mobilenetv2
    python -m benchmarks.frontier.run --dataset cub100 --backbone mobilenetv2 --timed 15
    python -m benchmarks.frontier.run --render benchmarks/results/frontier/*.json [--markdown F] [--figures docs]

Every run trains on the dataset's training classes less its validation classes for a fixed budget
(the last model; no early stopping) and is scored at every alpha on the validation classes, the
ID test classes and the OOD galleries of the datasets harness; alpha 0 is one ``frozen`` run. DVA
and ICA move along alpha with the adapter scale, the full fine-tune with WiSE-FT. Each method's
recommended (budget, alpha) is chosen on validation MAP@R and its seeds run afterwards. The runs go
through the datasets harness's runner (a subprocess and a folder each, resumable); the profile
JSON (benchmarks/results/frontier/<dataset>_<backbone>.json) is written after every finished run:
stop the command at any time and start it again to go on. The adapter tokens come from the
datasets harness's select JSON (``python -m benchmarks.datasets.run ... --profile select``), or,
with ``--unselected``, from each select stage's first candidate (labelled so).

``--timed MINUTES`` answers the equal-compute question: for each method of frontier.yaml's
``equal_compute.timed_methods``, one run sized to reach the minute, validated every epoch on the held-out
classes and scored at alpha 1 with the model its validation chose (``timed_select``); at that minute it is
the method's figure, and its point joins the ID R@1 against training time curve (never the frontier).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C
from benchmarks.datasets import costs as K
from benchmarks.datasets import ood as O
from benchmarks.datasets import plan as P
from benchmarks.datasets import run as D
from benchmarks.frontier import analysis as A
from benchmarks.frontier import plan as F
from benchmarks.frontier import render as R
from benchmarks.frontier.sweep import akey, resolve_runtime

RESULTS = C.RESULTS / "frontier"
WORK = C.REPO / "runs" / "bench_frontier"


class Sweep(NamedTuple):
    """What one invocation sweeps: from frontier.yaml and the command line."""

    methods: list[F.Method]
    budgets: list[int]
    alphas: list[float]
    seeds: int
    chosen: dict[str, list[str]]
    selected: bool  # False: --unselected (each select stage's first candidate)
    select_json: str | None
    galleries: list[O.Gallery]
    ood_missing: list[str]
    image_cache: Path | None
    prefix_cache: Path | None
    runtime: str  # what scores the models: torch, onnx or auto (benchmarks/frontier/sweep.py)
    frontier: F.Frontier
    timed: tuple[float, ...] = ()  # --timed: the minutes this sitting's timed runs reach (no sweep, no seeds)


# ----------------------------------------------------------------------------- one run
def covers(res: dict[str, Any], alphas: list[float], sets: list[str]) -> bool:
    """Whether a run's result holds every set at every alpha."""
    sc = res.get("scores") or {}
    return all(s in (sc.get(akey(a)) or {}) for a in alphas for s in sets)


def section(sw: Sweep, method: str, budget: int, dial: str, alphas: list[float], model: str = "last") -> dict[str, Any]:
    """A run's ``frontier`` section of its spec (what the worker scores; ``model``: ``last``, or ``best``, the
    model its periodic validation chose: a timed run)."""
    return {"method": method, "budget": budget, "dial": dial, "alphas": alphas,
            "ood": [g._asdict() for g in sw.galleries], "image_cache": str(sw.image_cache) if sw.image_cache else None,
            "prefix_cache": str(sw.prefix_cache) if sw.prefix_cache else None, "runtime": sw.runtime, "model": model}


def run_point(ctx: D.Context, spec: P.RunSpec, fr: dict[str, Any]) -> dict[str, Any]:
    """One run through the datasets harness's runner: resumed, reused (``--reuse``) or run.

    A finished run lacking an alpha or a set of ``fr`` (e.g. run with fewer ``--alphas``) is run
    again: its worker reuses the finished training and scores only what is missing.
    """
    folder = ctx.work / spec.tag
    sets = ["val", "test", *[g["name"] for g in fr["ood"]]]
    old = ctx.reused.get(spec.tag)
    if old and not (folder / "result.json").is_file() and covers(old, fr["alphas"], sets):
        C.write_json(folder / "result.json", old)
    print(f"[{time.strftime('%H:%M:%S')}] {spec.name} b{fr['budget']} s{spec.seed} -> {folder}", flush=True)
    res = D.run_one(spec, folder, ctx.cache, ctx.threads, {"frontier": fr})
    if not covers(res, fr["alphas"], sets):
        (folder / "result.json").unlink()
        res = D.run_one(spec, folder, ctx.cache, ctx.threads, {"frontier": fr})
        if not covers(res, fr["alphas"], sets):
            raise RuntimeError(f"{folder / 'result.json'}: the worker did not score every alpha and set of {fr}")
    return res


def reuse_index(files: list[str] | None) -> dict[str, dict[str, Any]]:
    """Finished runs of earlier frontier JSONs, by run folder (its settings digest): a run of the same settings."""
    out: dict[str, dict[str, Any]] = {}
    for f in files or []:
        for run in json.loads(Path(f).read_text()).get("runs") or []:
            if run.get("folder") and "wall_seconds" in run:
                out.setdefault(run["folder"], {**run, "reused_from": C.repo_relative(Path(f))})
    return out


# ----------------------------------------------------------------------------- the profile
def settings(ctx: D.Context, sw: Sweep) -> dict[str, Any]:
    """The JSON's ``settings``: what was swept, how points are chosen, and where the tokens came from."""
    bb, fr = ctx.table.backbones[ctx.backbone], sw.frontier
    return {"dataset": ctx.dataset, "backbone": ctx.backbone, "model": bb.model, "img_size": bb.img_size,
            "threads": ctx.threads, "val_classes": ctx.table.datasets[ctx.dataset].val_classes,
            "methods": {m.name: method_settings(m) for m in sw.methods},
            # the seeds the recommended points are to have: frontier.yaml's (a --seeds 1 sitting does not
            # make one seed final), or more when asked
            "budgets": sw.budgets, "alphas": sw.alphas, "metric": fr.metric,
            "seeds": max(sw.seeds, fr.seeds) if any(not m.variant for m in sw.methods) else fr.seeds,
            # frontier.yaml's whole profile: a sitting's own methods and budgets above may be fewer
            "profile": {"methods": list(fr.methods), "budgets": list(fr.budgets), "alphas": list(fr.alphas)},
            "clock": fr.clock, "minutes": fr.minutes, "timed_select": F.timed_select(fr), "targets": fr.targets,
            "selected": sw.selected,
            "selection": ("the select JSON's chosen values" if sw.selected else
                          "UNSELECTED: every select stage's first candidate (--unselected), not a validation choice"),
            "select_json": sw.select_json, "chosen_tokens": sw.chosen, "ood": [g.name for g in sw.galleries],
            "ood_missing": sw.ood_missing}


def build_result(ctx: D.Context, sw: Sweep, frozen: dict[str, Any] | None, runs: list[dict[str, Any]],
                 seeds: dict[str, list[dict[str, Any]]], argv: list[str], out: Path, final: bool,
                 timed: list[dict[str, Any]] | None = None,
                 timed_plan: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The profile JSON from the runs finished so far (points, recommended points and their seeds, the
    timed runs' points); ``complete`` when ``final`` (the sitting ended, or it runs variants or timed runs
    alone) and the JSON holds the whole profile (:func:`is_full`)."""
    s = settings(ctx, sw)
    timed = timed or []
    trained = runs + [x for v in seeds.values() for x in v] + timed
    per_step = A.step_seconds(trained)
    pts = A.points(frozen, runs, sw.alphas, s["ood"], sw.frontier.clock, per_step)
    # a timed run: a point of the equal-compute curve only (alpha 1), never a candidate of the choice below
    tpts = [{**p, "timed": r["timed"]["minutes"], "steps": r.get("steps"), "model_step": r.get("model_step"),
             # stopped before its steps: by its validation (early_stop), or by the collapse guard (status stopped;
             # best.safetensors holds its best evaluation): either way it holds that model up to its minute
             "stopped_early": bool(r.get("early_stop")) or r.get("status") == "stopped",
             "stop": "validation" if r.get("early_stop") else "collapse guard" if r.get("status") == "stopped" else None,
             "select": r["timed"].get("select")} for r in timed
            if (p := A.point_of(r, 1.0, s["ood"], clock=sw.frontier.clock, per_step=per_step)) is not None]
    rec = {}
    for m in sw.methods:
        r = A.recommend(pts, m.name, sw.budgets, sw.alphas, sw.frontier.metric)
        if r is None:
            continue
        if r["frozen"]:
            r.update(seeds_label="deterministic (alpha 0: the frozen backbone)",
                     stats=A.seed_stats([frozen], 0.0, s["ood"]) if frozen else None)
        else:
            first = [x for x in runs if x["method"] == m.name and x["budget"] == r["budget"] and x["seed"] == 0]
            pool = first + [x for x in seeds.get(m.name, []) if x["budget"] == r["budget"]]
            stats = A.seed_stats(pool, r["alpha"], s["ood"])
            r.update(seeds_label=f"{len(stats['seeds'])} seed{'s' * (len(stats['seeds']) != 1)}", stats=stats)
        rec[m.name] = r
    every = ([frozen] if frozen else []) + runs + [x for v in seeds.values() for x in v] + timed
    result = {"benchmark": "frontier", **C.provenance(__file__, argv), "settings": s, "json": C.repo_relative(out),
              "complete": final and is_full(sw, runs, rec),
              "frozen_folder": frozen.get("folder") if frozen else None, "points": pts, "timed_points": tpts,
              "timed_plan": dict(timed_plan or {}), "recommended": rec, "step_seconds": per_step,
              "step_spread": A.spread(trained), "runs": every}
    result["summary"] = R.summary(result)
    return result


# What must match for an earlier JSON's runs to join this one's (the same points, scored and timed alike).
SAME_SWEEP = ("dataset", "backbone", "model", "img_size", "val_classes", "chosen_tokens", "selected", "alphas", "ood",
              "threads")


def method_settings(m: F.Method) -> dict[str, Any]:
    """A method as the JSON's settings record it (what its runs were trained with)."""
    return {"label": m.label, "row": m.row, "dial": m.dial, **({"extra": list(m.extra)} if m.extra else {}),
            **({"variant": True} if m.variant else {})}


def yaml_methods(sw: Sweep, backbone: str) -> dict[str, F.Method]:
    """frontier.yaml's methods, then its variants that apply to ``backbone``, resolved for it and the sweep's
    chosen tokens."""
    every = {**sw.frontier.methods, **sw.frontier.variants}
    return {n: r for n, m in every.items() if (r := m.resolve(backbone, sw.chosen)) is not None}


def earlier_runs(out: Path, ctx: D.Context, sw: Sweep) -> list[dict[str, Any]]:
    """The runs of ``out`` (an earlier sitting's JSON) that this sitting does not run: the seed-0 runs
    of every (method, budget) it does not sweep and the extra seeds of every method it does not run, of
    the methods (and variants) frontier.yaml still holds with the same settings, when the JSON swept the
    same settings (:data:`SAME_SWEEP`). A profile split into sittings (``--budgets``, ``--methods``) so
    gathers every finished point in one JSON, in any order. What does not match is left out, said.

    The JSON's finished runs also join ``ctx.reused`` (as ``--reuse`` does): a run of this sitting
    that an earlier sitting finished on another machine is taken from the JSON, not trained again."""
    if not out.is_file():
        return []
    old = json.loads(out.read_text())
    now, was = settings(ctx, sw), old.get("settings") or {}
    differ = [k for k in SAME_SWEEP if json.dumps(now.get(k)) != json.dumps(was.get(k))]
    if differ:
        if all(m.variant for m in sw.methods):  # a variants sitting would replace the profile's JSON with itself
            raise ValueError(f"{C.repo_relative(out)} swept other settings ({', '.join(differ)}): the variants "
                             "join a profile swept with this sitting's settings; run the profile first (or --out)")
        print(f"({C.repo_relative(out)}: swept other settings ({', '.join(differ)}); its runs are not carried over)")
        return []
    for tag, run in reuse_index([str(out)]).items():
        ctx.reused.setdefault(tag, run)
    doing = {(m.name, b) for m in sw.methods for b in sw.budgets}
    running = {m.name for m in sw.methods}
    known = {n: method_settings(m) for n, m in yaml_methods(sw, ctx.backbone).items()}
    keep, changed = [], set()
    for r in old.get("runs") or []:
        m = r.get("method")
        # this sitting's own: its (method, budget) at seed 0; a running method's seeds up to its --seeds. A timed
        # sitting runs neither (and takes its timed runs back from ctx.reused); a timed run is nobody else's.
        if sw.timed or r.get("timed"):
            ours = False
        else:
            ours = (m, r.get("budget")) in doing if r.get("seed") == 0 else m in running and r["seed"] < sw.seeds
        if m not in known or ours:
            continue
        if json.dumps((was.get("methods") or {}).get(m)) != json.dumps(known[m]):
            changed.add(m)
            continue
        keep.append(r)
    if changed:
        print(f"({C.repo_relative(out)}: method(s) {', '.join(sorted(changed))} had other settings; not carried over)")
    return keep


def is_full(sw: Sweep, runs: list[dict[str, Any]], rec: dict[str, dict[str, Any]]) -> bool:
    """Whether ``runs`` hold frontier.yaml's whole profile: a seed-0 run of every (method, budget), the
    sweep scoring every alpha, and each method's recommended point with all its seeds (variants aside)."""
    fr = sw.frontier
    have = {(r.get("method"), r.get("budget")) for r in runs if r.get("seed") == 0}
    seeded = all(m in rec and (rec[m]["frozen"] or len((rec[m].get("stats") or {}).get("seeds") or []) >= fr.seeds)
                 for m in fr.methods)
    return all((m, b) in have for m in fr.methods for b in fr.budgets) and set(fr.alphas) <= set(sw.alphas) and seeded


def same_sweep(out: Path, ctx: D.Context, sw: Sweep) -> dict[str, Any] | None:
    """The JSON ``out`` when it swept this sitting's settings (:data:`SAME_SWEEP`), else None."""
    if not out.is_file():
        return None
    old = json.loads(out.read_text())
    now, was = settings(ctx, sw), old.get("settings") or {}
    return old if all(json.dumps(now.get(k)) == json.dumps(was.get(k)) for k in SAME_SWEEP) else None


def kept_timed_plan(old: dict[str, Any] | None, ctx: D.Context, sw: Sweep) -> dict[str, dict[str, Any]]:
    """The JSON's ``timed_plan`` less the plans of methods whose settings changed since (their runs are not
    carried over either, :func:`earlier_runs`)."""
    known = {n: method_settings(m) for n, m in yaml_methods(sw, ctx.backbone).items()}
    was = ((old or {}).get("settings") or {}).get("methods") or {}
    sel = F.timed_select(sw.frontier)
    return {k: v for k, v in ((old or {}).get("timed_plan") or {}).items()
            if v["method"] in known and json.dumps(was.get(v["method"])) == json.dumps(known[v["method"]])
            and v.get("select") == sel}


def timed_runs(ctx: D.Context, sw: Sweep, base: list[str], result: dict[str, Any], tplan: dict[str, dict[str, Any]],
               say: Callable[[str], None] = print) -> list[tuple[F.Method, float, int, P.RunSpec]]:
    """The timed runs of a ``--timed`` sitting: (method, minutes, steps, spec) for every minute of ``sw.timed``
    and method that no run sized to that minute answers for yet in ``result`` (:func:`A.reaches`).

    A run's steps are fixed when first planned and kept in ``tplan`` (the JSON's ``timed_plan``), so a
    sitting cut short resumes the same run even after other runs have moved the method's least seconds per
    step. A finished timed run whose point fell short of its minute (it, or a later run, lowered the least)
    stays on the curve, and the minute is planned again on today's least: only a run that reaches the
    minute makes it done (one its validation or the collapse guard stopped holds its own minute:
    :func:`A.timed_point`).
    Each run trains as :func:`F.timed_method` says: validated every epoch, its best model scored."""
    sel = F.timed_select(sw.frontier)
    # (--plan reads the JSON as it is: the timed runs of another validation neither count nor size the runs)
    pts = R.time_points(result, sel)
    kept = [r for r in result.get("runs") or [] if not r.get("timed") or r["timed"].get("select") == sel]
    per = A.step_seconds([r for r in kept if r.get("kind") == "train"])
    finished = {(r["method"], int(r["budget"])) for r in kept if r.get("timed")}
    out = []
    for t in sw.timed:
        for m in sw.methods:
            key = f"{m.name}@{t:g}"
            if A.reaches(pts, m.name, t):
                say(f"[done] {m.name}: a run sized to {t:g} min measured")
                continue
            if key in tplan and (m.name, tplan[key]["steps"]) in finished and m.name in per:
                say(f"({m.name}: its {tplan[key]['steps']}-step timed run fell short of {t:g} min on today's "
                    "least seconds per step; planned again)")
                del tplan[key]
            if key not in tplan:
                if m.name not in per:
                    say(f"({m.name}: no trained run of it on this pair to size a {t:g}-min run from; run the profile "
                        "first)")
                    continue
                least = per[m.name]["min"]
                tplan[key] = {"method": m.name, "minutes": float(t), "s_per_step": least,
                              "margin": sw.frontier.margin, "steps": A.timed_steps(t, least, sw.frontier.margin),
                              "select": sel}
            steps = int(tplan[key]["steps"])
            out.append((m, float(t), steps, F.method_run(ctx.table, ctx.dataset, ctx.backbone, base, sw.chosen,
                                                         F.timed_method(m, sw.frontier), steps, 0)))
    return out


def run_profile(ctx: D.Context, sw: Sweep, out: Path, argv: list[str]) -> dict[str, Any]:
    """The frozen run, every (budget, method) at seed 0, then the recommended points' other seeds; or, in a
    ``--timed`` sitting, the timed runs alone (:func:`timed_runs`).

    The JSON also holds the earlier sittings' budgets (:func:`earlier_runs`); it is ``complete`` when
    the whole of frontier.yaml's profile (every method, budget and alpha, its seeds) is in it."""
    base = F.common(ctx.table, ctx.dataset, ctx.backbone, ctx.root, ctx.cache, ctx.threads)
    nonzero = [a for a in sw.alphas if a > 0]
    old = same_sweep(out, ctx, sw)
    if sw.timed and old is None:
        raise ValueError(f"{C.repo_relative(out)}: no frontier JSON of these settings to size the timed runs from; "
                         "run the profile first")
    tplan = kept_timed_plan(old, ctx, sw)
    prior = earlier_runs(out, ctx, sw)
    # a timed run validated otherwise than frontier.yaml's timed_select now (or not at all) is dropped, as its plan
    timed = [r for r in prior if r.get("timed") and r["timed"].get("select") == F.timed_select(sw.frontier)]
    prior = [r for r in prior if not r.get("timed")]
    carried = {r["method"] for r in prior}
    running = {m.name for m in sw.methods}
    shown = sw._replace(budgets=sorted(set(sw.budgets) | {r["budget"] for r in prior}),
                        methods=[m for n, m in yaml_methods(sw, ctx.backbone).items() if n in carried | running]
                        + [m for m in sw.methods if m.name not in yaml_methods(sw, ctx.backbone)])
    frozen = run_point(ctx, F.frozen_run(ctx.table, ctx.dataset, ctx.backbone, base),
                       section(sw, "frozen", 0, "frozen", [0.0]))
    runs: list[dict[str, Any]] = [r for r in prior if r["seed"] == 0]
    seeds: dict[str, list[dict[str, Any]]] = {}
    for r in prior:  # the other methods' seeds, kept as they were
        if r["seed"] != 0:
            seeds.setdefault(r["method"], []).append(r)

    # a sitting of variants (or timed runs) alone leaves the profile's methods as they were: its JSON is complete
    # (or not) while it runs too, so a sitting cut short does not make a finished profile read as one to run again
    keeps = all(m.variant for m in sw.methods) or bool(sw.timed)

    def write(final: bool = False) -> dict[str, Any]:
        result = build_result(ctx, shown, frozen, runs, seeds, argv, out, final or keeps, timed, tplan)
        C.write_json(out, result)
        return result

    if sw.timed:
        todo = timed_runs(ctx, sw, base, write(), tplan)
        write()  # the planned steps first: a sitting cut short resumes the same runs
        for m, t, steps, spec in todo:
            res = run_point(ctx, spec, section(sw, m.name, steps, m.dial, [1.0], model="best"))
            timed = [r for r in timed if r.get("folder") != res.get("folder")] + [
                {**res, "timed": {"minutes": t, "select": F.timed_select(sw.frontier)}}]
            write()
        return write(final=True)
    write()
    for m, b, spec in F.sweep_runs(ctx.table, ctx.dataset, ctx.backbone, base, sw.chosen, sw.methods, sw.budgets):
        if nonzero:
            runs.append(run_point(ctx, spec, section(sw, m.name, b, m.dial, nonzero)))
            write()
    for m in sw.methods:  # after the sweep: the choice sees every budget
        rec = write()["recommended"].get(m.name)
        if rec is None or rec["frozen"]:
            continue
        for spec in F.seed_runs(ctx.table, ctx.dataset, ctx.backbone, base, sw.chosen, m, rec["budget"], sw.seeds):
            seeds.setdefault(m.name, []).append(
                run_point(ctx, spec, section(sw, m.name, rec["budget"], m.dial, [rec["alpha"]])))
            write()
    return write(final=True)


# ----------------------------------------------------------------------------- --plan
class RunCost(NamedTuple):
    """What a frontier run of one method cost, from measured runs (medians): fixed seconds per dataset
    image (setup, caches, boxes), seconds per training step, seconds per scored (image, alpha)."""

    overhead_per_image: float
    s_per_step: float | None
    s_per_image_alpha: float
    runs: int


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return None if not xs else (xs[len(xs) // 2] + xs[(len(xs) - 1) // 2]) / 2


def measured_costs(table: P.Table, model: str, img_size: int, files: list[Path] | None = None,
                   runtime: str | None = None) -> dict[str, RunCost]:
    """method -> :class:`RunCost` from every frontier JSON's finished runs on this backbone and input size.

    A frontier run's scoring is what the datasets harness's costs cannot tell: an adapter model
    embeds the frozen prefix once per image and only its suffix per alpha, the full fine-tune's
    WiSE-FT a whole pass per alpha. A run re-scored with its training reused adds no overhead or step figure.
    ``runtime`` (torch or onnx): a method's scoring cost from its runs scored on that runtime when it
    has any (a run's record names it; one without scored on torch), else from all of them.
    """
    per: dict[str, dict[str, list[float]]] = {}
    for f in files if files is not None else sorted(RESULTS.glob("*.json")):
        res = json.loads(Path(f).read_text())
        st = res.get("settings") or {}
        if (st.get("model"), st.get("img_size")) != (model, img_size) or st.get("dataset") not in table.datasets:
            continue
        images = sum(table.datasets[st["dataset"]].images)
        for r in res.get("runs") or []:
            sw, wall = r.get("sweep") or {}, r.get("wall_seconds")
            if not sw.get("image_alphas") or wall is None or r.get("reused_from"):
                continue
            d = per.setdefault(r["method"], {"over": [], "step": [], "ia": [], "ia_rt": []})
            d["ia"].append(sw["embed_seconds"] / sw["image_alphas"])
            if runtime is not None and sw.get("runtime", "torch") == runtime:
                d["ia_rt"].append(d["ia"][-1])
            if not r.get("training_reused"):
                train = r.get("train_seconds") or 0.0
                d["over"].append(max(0.0, wall - train - sw["embed_seconds"]) / images)
                if r.get("steps"):
                    d["step"].append(train / r["steps"])
    return {m: RunCost(_median(d["over"]) or 0.0, _median(d["step"]), _median(d["ia_rt"] or d["ia"]), len(d["ia"]))
            for m, d in per.items() if d["ia"]}


def plan_lines(ctx: D.Context, sw: Sweep, result: dict[str, Any] | None = None,
               timed: list[tuple[F.Method, float, int, P.RunSpec]] | None = None) -> list[str]:
    """The runs of a profile (or of a ``--timed`` sitting: ``timed``) with time estimates; runs nothing.

    A method with finished frontier runs on this backbone is estimated from them (:func:`measured_costs`),
    the others from the datasets harness's measured runs (benchmarks/datasets/costs.py), which count
    every alpha as a whole embedding pass (an adapter run's sweep costs far less)."""
    ds, bb = ctx.table.datasets[ctx.dataset], ctx.table.backbones[ctx.backbone]
    costs = K.load_costs()
    # Scored per alpha: the validation classes (about 20% of the training images), the test classes, the OOD sets.
    ood = sum(ctx.table.datasets[n].images[1] if n in ctx.table.datasets else sum(ctx.table.ood_extra[n].images)
              for n in (g.name for g in sw.galleries))
    scored = round(0.2 * ds.images[0]) + ds.images[1] + ood
    nonzero = [a for a in sw.alphas if a > 0]

    # A method's measured runs serve when they include a trained one (the frozen run trains nothing);
    # an unmeasured method is estimated as a measured one of the same row and dial (the anchored DVA as
    # DVA: its extra frozen suffix pass per step not counted).
    measured = {m: c for m, c in measured_costs(ctx.table, bb.model, bb.img_size,
                                                runtime=resolve_runtime(sw.runtime)).items()
                if c.s_per_step is not None or m == "frozen"}
    every = {**sw.frontier.methods, **sw.frontier.variants}
    stand_in = {n: next((o for o, mo in every.items() if o in measured and (mo.row, mo.dial) == (m.row, m.dial)), "")
                for n, m in every.items() if n not in measured}

    def est(spec: P.RunSpec, passes: int, method: str) -> float | None:
        c = measured.get(method) or measured.get(stand_in.get(method, ""))
        if c is not None:
            steps = 0 if spec.kind == "frozen" else K.steps_of(spec.overrides)
            return c.overhead_per_image * sum(ds.images) + (c.s_per_step or 0.0) * steps \
                + c.s_per_image_alpha * scored * passes
        return K.estimate(costs, bb.model, bb.img_size, spec.overrides, spec.kind == "frozen", sum(ds.images),
                          scored * passes)

    base = F.common(ctx.table, ctx.dataset, ctx.backbone, ctx.root, ctx.cache, ctx.threads)
    fz = F.frozen_run(ctx.table, ctx.dataset, ctx.backbone, base)
    rows = [("frozen (alpha 0)", fz.tag, est(fz, 1, "frozen"))]
    sweep = ([] if timed is not None else
             F.sweep_runs(ctx.table, ctx.dataset, ctx.backbone, base, sw.chosen, sw.methods, sw.budgets))
    rows += [(f"{m.name} {b} steps", s.tag, est(s, len(nonzero), m.name)) for m, b, s in sweep]
    rows += [(f"{m.name} {t:g} min ({n} steps, alpha 1)", s.tag, est(s, 1, m.name)) for m, t, n, s in timed or []]
    label = "" if sw.selected else " [UNSELECTED: each select stage's first candidate]"
    what = (f"timed runs to {', '.join(f'{t:g}' for t in sw.timed)} min (alpha 1)" if timed is not None
            else f"budgets {sw.budgets}, alphas {sw.alphas}")
    lines = [(f"{ctx.dataset} x {ctx.backbone} ({bb.model}, {bb.img_size} px), frontier{label}: "
             f"{what}, {scored} images scored per alpha "
             f"({', '.join(g.name for g in sw.galleries) or 'no OOD gallery found'})")]
    # finished runs: [done], out of the total and the sittings; one the profile's JSON holds (ctx.reused, filled by
    # earlier_runs) counts when it scored what this sitting asks, as run_point takes it back only then
    sets = ["val", "test", *[g.name for g in sw.galleries]]
    wants = {fz.tag: [0.0], **{s.tag: nonzero for _, _, s in sweep}, **{s.tag: [1.0] for *_, s in timed or []}}
    done = {t for t in D.finished(ctx, [t for _, t, _ in rows])
            if D.finished_result(ctx.work / t) is not None or covers(ctx.reused[t], wants[t], sets)}
    lines += K.plan_lines(rows, done=done)
    if timed is not None:
        sel = F.timed_select(sw.frontier)
        return lines + [f"(timed runs: each its planned steps at most, as its validation every {sel['eval_every']} "
                        f"epoch(s) may stop it early (patience {sel['patience']}); those validation passes are not "
                        "in the estimate)"] * bool(timed)
    if measured:
        subs = [f"{n} as {o}" for n, o in stand_in.items() if o and n in {m.name for m in sw.methods}]
        lines.append("  (estimated from measured frontier runs of this backbone: "
                     + ", ".join(f"{m} {c.runs}" for m, c in measured.items())
                     + (f"; {', '.join(subs)}" if subs else "") + "; other methods from the datasets harness's runs)")
    lines += sittings(ctx, [(m.name, b, est(s, len(nonzero), m.name)) for m, b, s in sweep if s.tag not in done])
    worst = [est(s, 1, m.name) for m, b, s in sweep if b == sw.budgets[-1]]
    if sw.seeds > 1 and result and result.get("complete"):
        lines.append(f"  the recommended points' seeds: done ({result.get('json', 'the JSON')} is complete)")
    elif sw.seeds > 1:
        most = ("unknown (no measured run of this kind)" if not worst or None in worst
                else f"~{(sw.seeds - 1) * sum(w or 0.0 for w in worst) / 60:.0f} min")
        lines.append(f"  then {sw.seeds - 1} more seed(s) of each method's recommended (budget, alpha), known after "
                     f"the sweep: at most {most} (every method at {sw.budgets[-1]} steps)")
    return lines


def plan(ctx: D.Context, sw: Sweep, out: Path) -> list[str]:
    """:func:`plan_lines` of a sitting whose JSON is ``out``: the runs it holds are [done] (a sitting takes them
    back and trains none, on any machine)."""
    earlier_runs(out, ctx, sw)
    old = same_sweep(out, ctx, sw)  # a JSON of other settings: its seeds are not this sweep's
    if sw.timed:
        if old is None:
            return [f"{C.repo_relative(out)}: no frontier JSON of these settings to size the timed runs from; "
                    "run the profile first"]
        base = F.common(ctx.table, ctx.dataset, ctx.backbone, ctx.root, ctx.cache, ctx.threads)
        said: list[str] = []
        todo = timed_runs(ctx, sw, base, old, kept_timed_plan(old, ctx, sw), said.append)
        return plan_lines(ctx, sw, old, todo) + [f"  {s}" for s in said]
    return plan_lines(ctx, sw, old)


def sittings(ctx: D.Context, items: list[tuple[str, int, float | None]], limit_s: float = 6600.0) -> list[str]:
    """Commands that split a profile over 2 hours into sittings: one per budget (every method), or per
    (budget, method) where a budget alone is over ``limit_s``; the first also runs the frozen run.
    Each resumes and merges into the same JSON, so the order does not matter."""
    total = sum(e or 0.0 for *_, e in items)
    if total <= limit_s:
        return []
    head = f"python -m benchmarks.frontier.run --dataset {ctx.dataset} --backbone {ctx.backbone} --seeds 1"
    out = ["  sittings of under 2 h (each resumes; run all, then the whole command for the extra seeds):"]
    for b in dict.fromkeys(b for _, b, _ in items):
        per = [(m, e or 0.0) for m, bb, e in items if bb == b]
        if sum(e for _, e in per) <= limit_s:
            out.append(f"    {head} --budgets {b}   (~{sum(e for _, e in per) / 60:.0f} min)")
        else:
            out += [f"    {head} --budgets {b} --methods {m}   (~{e / 60:.0f} min)" for m, e in per]
    return out


# ----------------------------------------------------------------------------- command line
def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.frontier.run``."""
    fr = F.FRONTIER
    p = argparse.ArgumentParser(prog="python -m benchmarks.frontier.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=tuple(fr.datasets), default=None)
    p.add_argument("--backbone", choices=tuple(fr.backbones), default="mobilenetv2")
    p.add_argument("--methods", default=None, help=f"comma-separated (default all: {','.join(fr.methods)})")
    p.add_argument("--budgets", default=None, help=f"comma-separated steps (default {fr.budgets})")
    p.add_argument("--alphas", default=None, help=f"comma-separated in [0, 1] (default {fr.alphas})")
    p.add_argument("--timed", default=None, metavar="MINUTES",
                   help="comma-separated minutes (e.g. 15 or 15,45; frontier.yaml equal_compute): instead of the sweep, "
                        "a run of each method (default " + ",".join(fr.timed_methods) + ") sized to reach each minute, "
                        "validated every epoch, scored at alpha 1 with its validation's best model")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds of each recommended point (default {fr.seeds}); 1 elsewhere")
    p.add_argument("--unselected", action="store_true",
                   help="without a finished select JSON: each select stage's first candidate (labelled so)")
    p.add_argument("--select", default=None, help="the select JSON (default benchmarks/results/datasets/"
                                                  "<dataset>_<backbone>_select.json)")
    p.add_argument("--reuse", nargs="+", metavar="JSON", default=None,
                   help="finished runs of earlier frontier JSONs: a run of the same settings is not run again")
    p.add_argument("--plan", action="store_true", help="print the runs and time estimates; run nothing")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/frontier/<dataset>_<backbone>.json)")
    p.add_argument("--root", default=None, help="the dataset's folder (default $DVA_<NAME> or ../shared/data/<name>)")
    p.add_argument("--data", nargs="+", metavar="NAME=DIR", default=None, help="folders of the OOD galleries")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--work-dir", default=None, help=f"run folders (default {C.repo_relative(WORK)}/<dataset>_<backbone>)")
    p.add_argument("--cache-dir", default=None,
                   help=f"prefix caches, boxes and decoded images (default {C.repo_relative(D.WORK)}/cache, "
                        "shared with the datasets harness)")
    p.add_argument("--no-image-cache", action="store_true", help="decode the scored images in every run")
    p.add_argument("--no-prefix-cache", action="store_true",
                   help="run an adapter model's frozen prefix on the scored images in every run")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default=None,
                   help="what scores the models (default frontier.yaml's: auto = onnxruntime where installed)")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="run nothing: print the markdown of these frontier JSONs")
    p.add_argument("--markdown", default=None, help="with --render: also write the markdown to this file")
    p.add_argument("--figures", default=None, help="with --render: write frontier_<ds>_<bb>.png and "
                                                   "frontier_time_<ds>_<bb>.png into this folder (e.g. docs)")
    return p


def _sweep(args: argparse.Namespace, ctx: D.Context) -> Sweep:
    """The invocation's sweep: frontier.yaml narrowed by the flags, the chosen tokens and the OOD galleries."""
    fr = F.FRONTIER
    timed = tuple(sorted({float(t) for t in _floats(args.timed)})) if getattr(args, "timed", None) else ()
    if any(not (math.isfinite(t) and t > 0) for t in timed):
        raise ValueError(f"--timed: minutes must be positive numbers, got {args.timed!r}")
    if timed and args.budgets:
        raise ValueError("--timed sizes its runs in minutes: --budgets does not apply")
    names = args.methods.split(",") if args.methods else list(fr.timed_methods if timed else fr.methods)
    every = {**fr.methods, **fr.variants}
    unknown = [n for n in names if n not in every]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; frontier.yaml's: {list(fr.methods)}, "
                         f"its variants: {list(fr.variants)}")
    sel = Path(args.select) if args.select else D.RESULTS / f"{ctx.dataset}_{ctx.backbone}_select.json"
    chosen = F.load_chosen(ctx.table, ctx.dataset, ctx.backbone, sel, args.unselected)
    none_here = [n for n in names if every[n].resolve(ctx.backbone, chosen) is None]
    if none_here:
        raise ValueError(f"variant(s) {none_here} have nothing for {ctx.backbone} with the chosen placement "
                         f"{F.effective(chosen.get('adapters') or []).get('--ica.blocks')} (frontier.yaml: "
                         "variants.<name>.extra_per_backbone, more_stages)")
    gals, missing = O.galleries(ctx.table, ctx.dataset, dict(kv.split("=", 1) for kv in args.data or []))
    seeds = fr.seeds if args.seeds is None else args.seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    methods = [every[n].resolve(ctx.backbone, chosen) for n in names]
    if any(m.variant for m in methods):  # a variant that is DVA itself on this pair measures nothing new
        base = F.common(ctx.table, ctx.dataset, ctx.backbone, ctx.root, ctx.cache, ctx.threads)
        same = [m for m in methods if m.variant and F.same_as_row(ctx.table, ctx.dataset, ctx.backbone, base, chosen,
                                                                  m, fr.budgets[0])]
        for m in same:
            print(f"({m.name}: on {ctx.dataset} x {ctx.backbone} it trains exactly what {m.row} does (the select "
                  "profile chose its setting); skipped)")
        methods = [m for m in methods if m not in same]
        if not methods:
            raise ValueError("nothing to run: every variant named is DVA itself on this pair")
    return Sweep(methods=methods,
                 budgets=[] if timed else F.check_budgets([int(b) for b in args.budgets.split(",")], "--budgets")
                 if args.budgets else fr.budgets,
                 alphas=F.check_alphas(_floats(args.alphas), "--alphas") if args.alphas else fr.alphas,
                 seeds=seeds, chosen=chosen, selected=not args.unselected,
                 select_json=None if args.unselected else C.repo_relative(sel), galleries=gals, ood_missing=missing,
                 image_cache=None if args.no_image_cache or not fr.image_cache else ctx.cache / "frontier_images",
                 prefix_cache=None if args.no_prefix_cache or not fr.prefix_cache else ctx.cache / "frontier_prefix",
                 runtime=args.runtime or fr.runtime,
                 frontier=fr, timed=timed)


def _context(args: argparse.Namespace) -> D.Context:
    """Locate the data (a clear error before anything starts) and the folders of one invocation."""
    if args.dataset is None:
        raise SystemExit(f"--dataset is required ({' | '.join(F.FRONTIER.datasets)})")
    spec = P.TABLE.datasets[args.dataset]
    folder = P.locate(spec, args.root)
    if folder is None and not args.plan:
        raise SystemExit(f"{args.dataset} not found at {args.root or f'${spec.env} or ../shared/data/{args.dataset}'}: "
                         f"point --root at the folder holding {spec.marker}")
    work = Path(args.work_dir) if args.work_dir else WORK / f"{args.dataset}_{args.backbone}"
    cache = Path(args.cache_dir) if args.cache_dir else D.WORK / "cache"
    root = P.reader_root(spec, folder) if folder else f"<{args.dataset}>"
    return D.Context(P.TABLE, args.dataset, args.backbone, root, work, cache, args.threads, reuse_index(args.reuse))


def main(argv: list[str] | None = None) -> int:
    """Run a profile (or print its plan, or render results); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render:
        results = [json.loads(Path(f).read_text()) for f in args.render]
        text = R.render_section(results)
        print(text)
        if args.markdown:
            C.write_text(args.markdown, text)
        for f in R.figures(results, Path(args.figures)) if args.figures else []:
            print(f"wrote {f}")
        return 0
    ctx = _context(args)
    try:
        if args.plan and not args.unselected:
            try:
                _sweep(args, ctx)
            except (ValueError, FileNotFoundError) as e:  # a plan before the select profile has run
                print(f"({e}\n -> planned with every select stage's first candidate)")
                args.unselected = True
        sw = _sweep(args, ctx)
        out = Path(args.out) if args.out else RESULTS / f"{args.dataset}_{args.backbone}.json"
        if args.plan:
            print("\n".join(plan(ctx, sw, out)))
            return 0
        for m in sw.ood_missing:
            print(f"OOD gallery {m} not found: its column is left out", flush=True)
        ctx.cache.mkdir(parents=True, exist_ok=True)
        result = run_profile(ctx, sw, out, argv)
    except (ValueError, FileNotFoundError) as e:  # no select JSON, a wrong flag: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(R.render_section([result]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
