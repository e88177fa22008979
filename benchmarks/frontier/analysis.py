"""The frontier's numbers from the runs' results: points, the validation choice, Pareto curves, equal time.

Pure functions of JSON-shaped dicts (nothing trains or reads images), every value in percent:

* :func:`points` — one point per (method, budget, alpha) of the seed-0 runs, alpha 0 the frozen run's;
* :func:`recommend` — a method's (budget, alpha) by validation scores alone;
* :func:`pareto`, :func:`interp`, :func:`compare` — the upper ID/OOD frontier of a method, its
  piecewise-linear interpolation, and the OOD difference of two frontiers at equal ID R@1;
* :func:`time_curve`, :func:`equal_time` — ID R@1 against training minutes and who is ahead;
  :func:`timed_steps`, :func:`reaches` — the runs that extend a curve to a comparison minute.
"""
from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks import _common as C
from benchmarks.frontier.sweep import akey

Point = tuple[float, float]


def _pct(metrics: dict[str, Any] | None, key: str) -> float | None:
    return None if not metrics or metrics.get(key) is None else 100.0 * float(metrics[key])


def step_seconds(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, its training seconds per step over its trained runs (every budget and seed): the least,
    the median and the most, and how many runs (a re-scored run whose training was reused counts with the
    seconds of that training, which it carries).

    Why the least: on a shared machine whatever runs beside a run only adds to its clock, as does filling
    the shared frozen-prefix cache inside its steps (the first run of a dataset); runs of the same settings
    (the seeds) differed up to several-fold. The least time per step of a method's runs is the one nearest
    its cost alone (timeit's rule); :func:`spread` says how large the accidents were."""
    by: dict[str, list[float]] = {}
    for r in runs:
        n = r.get("steps") or 0
        if r.get("kind") == "frozen" or not n or r.get("train_seconds") is None:
            continue
        by.setdefault(r["method"], []).append(float(r["train_seconds"]) / n)
    return {m: {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": len(v)} for m, v in by.items()}


def spread(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The largest ratio of training seconds between two runs of the same settings (a method's seeds at one
    budget: the same work), with where it was; None without two such runs."""
    by: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        if r.get("kind") != "frozen" and r.get("steps") and r.get("train_seconds"):
            by.setdefault((r["method"], int(r["steps"])), []).append(float(r["train_seconds"]))
    worst = max(((max(v) / min(v), k, len(v)) for k, v in by.items() if len(v) >= 2), default=None)
    return None if worst is None else {"ratio": worst[0], "method": worst[1][0], "steps": worst[1][1], "runs": worst[2]}


def minutes_of(run: dict[str, Any], clock: str = "train_seconds",
               per_step: dict[str, dict[str, Any]] | None = None) -> float | None:
    """A run's training minutes on ``clock``: ``train_seconds`` or ``train_and_prep_seconds`` (as the run
    measured them), or ``least_step_seconds`` (its steps x its method's least seconds per step,
    ``per_step`` from :func:`step_seconds`); the frozen run's 0; None when a trained run did not record
    them (it then stays off the equal-compute curves)."""
    if run.get("kind") == "frozen":
        return 0.0
    if clock == "least_step_seconds":
        least = (per_step or {}).get(run.get("method") or "")
        return None if least is None or not run.get("steps") else float(run["steps"]) * least["min"] / 60.0
    if run.get("train_seconds") is None:
        return None
    s = float(run["train_seconds"])
    if clock == "train_and_prep_seconds":
        s += float(run.get("prep_seconds") or 0.0)
    return s / 60.0


def point_of(run: dict[str, Any], alpha: float, ood: Sequence[str], method: str | None = None,
             clock: str = "train_seconds", per_step: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """A run's figures at ``alpha``: validation and ID test R@1/MAP@R, each OOD R@1 and their mean.

    The mean is over every gallery of ``ood``; None when one was not scored. None when the run
    has no scores at ``alpha``.
    """
    sc = (run.get("scores") or {}).get(akey(alpha))
    if not sc:
        return None
    o = {g: _pct(sc.get(g), "recall@1") for g in ood}
    vals = list(o.values())
    return {"method": method or run.get("method"), "budget": run.get("budget"), "alpha": float(alpha),
            "seed": run.get("seed"), "folder": run.get("folder"), "frozen": run.get("kind") == "frozen",
            "val_r1": _pct(sc.get("val"), "recall@1"), "val_map": _pct(sc.get("val"), "map@r"),
            "id_r1": _pct(sc.get("test"), "recall@1"), "id_map": _pct(sc.get("test"), "map@r"), "ood": o,
            "mean_ood": sum(vals) / len(vals) if vals and None not in vals else None,
            "train_minutes": minutes_of(run, clock, per_step), "images": run.get("images_processed") or 0}


def points(frozen: dict[str, Any] | None, runs: list[dict[str, Any]], alphas: Sequence[float], ood: Sequence[str],
           clock: str = "train_seconds", per_step: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every measured point: the frozen backbone (alpha 0, once), then each seed-0 run at each alpha > 0
    (``per_step``: the :func:`step_seconds` of the ``least_step_seconds`` clock)."""
    out = []
    if frozen is not None and (p := point_of(frozen, 0.0, ood, "frozen", clock)) is not None:
        out.append({**p, "budget": 0})
    for run in runs:
        if run.get("seed") == 0 and run.get("kind") == "train":
            out += [p for a in alphas if a > 0 and (p := point_of(run, a, ood, clock=clock, per_step=per_step))
                    is not None]
    return out


def method_points(pts: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """A method's points, the frozen backbone's (its alpha 0) first."""
    return [p for p in pts if p["frozen"]] + [p for p in pts if p["method"] == method]


# ----------------------------------------------------------------------------- the validation choice
def _finite(v: float | None) -> float:
    return -math.inf if v is None or math.isnan(v) else v


def recommend(pts: list[dict[str, Any]], method: str, budgets: Sequence[int], alphas: Sequence[float],
              metric: str = "map@r") -> dict[str, Any] | None:
    """The method's (budget, alpha) with the best validation ``metric`` (ties: R@1, the smaller budget, alpha).

    Candidates: every measured budget at every alpha; alpha 0 is the frozen backbone at any budget
    (so on a tie it is the smallest budget's). Only the ``val_*`` fields are read: the test split
    and the OOD galleries never take part. None when nothing of the method was measured.
    """
    key = "val_map" if metric == "map@r" else "val_r1"
    frozen = next((p for p in pts if p["frozen"]), None)
    cands = []
    for b in budgets:
        if not any(q["method"] == method and q["budget"] == b for q in pts):
            continue  # a budget not (yet) trained: none of its alphas is a candidate, not even 0
        for a in alphas:
            p = frozen if a == 0 else next((q for q in pts if q["method"] == method and q["budget"] == b
                                            and q["alpha"] == a), None)
            if p is not None:
                cands.append((b, a, p))
    if not cands:
        return None
    b, a, p = max(cands, key=lambda c: (_finite(c[2][key]), _finite(c[2]["val_r1"]), -c[0], -c[1]))
    return {"method": method, "budget": b, "alpha": a, "frozen": a == 0, "val_r1": p["val_r1"],
            "val_map": p["val_map"], "metric": metric}


def seed_stats(runs: list[dict[str, Any]], alpha: float, ood: Sequence[str]) -> dict[str, Any]:
    """Mean and sample SD over ``runs`` (seeds) at ``alpha``: validation, ID test, each OOD R@1, mean OOD."""
    pts = [p for r in runs if (p := point_of(r, alpha, ood)) is not None]

    def ms(vals: list[float | None]) -> list[float] | None:
        return None if not vals or None in vals else list(C.mean_std(vals))  # type: ignore[arg-type]

    return {"seeds": [p["seed"] for p in pts], "folders": [p["folder"] for p in pts],
            **{k: ms([p[k] for p in pts]) for k in ("val_r1", "val_map", "id_r1", "id_map", "mean_ood")},
            "ood": {g: ms([p["ood"][g] for p in pts]) for g in ood}}


# ----------------------------------------------------------------------------- frontiers
def pareto(pts: Sequence[Point]) -> list[Point]:
    """The upper Pareto set of ``(ID, OOD)`` points (none has another at least as high in both), by ID ascending.

    Points with a missing or non-finite coordinate are left out (a NaN would make the order undefined).
    """
    out: list[Point] = []
    best = -math.inf
    finite = {(x, y) for x, y in pts if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)}
    for x, y in sorted(finite, key=lambda p: (-p[0], -p[1])):  # ID descending: keep a point above all to its right
        if y > best:
            out.append((x, y))
            best = y
    return out[::-1]


def interp(front: Sequence[Point], x: float) -> float | None:
    """The frontier's OOD at ID ``x``, linear between its points; None outside its ID range."""
    if not front or x < front[0][0] or x > front[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(front):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return front[-1][1]  # a single point: x is its ID


def compare(a: Sequence[Point], b: Sequence[Point], skip: Point | None = None) -> dict[str, Any] | None:
    """OOD of frontier ``a`` less that of ``b`` at equal ID, over the ID range both cover.

    Levels: the ID of every point of either frontier inside the common range, except ``skip`` (the
    frozen backbone) when it lies on both, where the difference is 0 by construction (``skipped``
    says whether it did). ``min_diff`` is the smallest difference at those levels: the difference is
    linear between levels, so it is the minimum over the range from the first level on (between a
    skipped frozen point and the first level it runs linearly from 0); None when the range holds no
    level but the skipped point. ``mean_diff`` is its mean over the whole range (the integral of the
    piecewise-linear difference / the range's width). None when the two ID ranges do not overlap.
    """
    if not a or not b:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if lo > hi:
        return None
    xs = sorted({x for x, _ in [*a, *b] if lo <= x <= hi} | {lo, hi})
    diff = {x: interp(a, x) - interp(b, x) for x in xs}  # type: ignore[operator]
    shared = skip is not None and skip in a and skip in b
    levels = [x for x in xs if not (shared and x == skip[0])]  # type: ignore[index]
    if hi > lo:
        mean = sum((diff[x0] + diff[x1]) / 2 * (x1 - x0) for x0, x1 in itertools.pairwise(xs)) / (hi - lo)
    else:
        mean = diff[lo]
    mn = min((diff[x] for x in levels), default=None)
    return {"lo": lo, "hi": hi, "skipped": shared and skip[0] in xs,  # type: ignore[index]
            "levels": [{"id_r1": x, "a": interp(a, x), "b": interp(b, x), "diff": diff[x]} for x in levels],
            "min_diff": mn, "mean_diff": mean, "at_or_above": None if mn is None else mn >= 0.0}


# ----------------------------------------------------------------------------- equal compute
def time_curve(pts: list[dict[str, Any]], method: str, hold: bool = True) -> list[Point]:
    """``(training minutes, ID R@1)`` of the method's alpha-1 points, one per budget, by minutes, from the
    frozen backbone at 0 minutes (every method's model before its first step) when it was measured.

    A point without recorded minutes is left out. With ``hold``, a timed run stopped early (``stopped_early``:
    by its validation or the collapse guard) stays at its best model from its last step to the minute it was sized for (``timed``): a user given that
    many minutes would have stopped where it did.
    """
    own = [p for p in pts if p["method"] == method and p["alpha"] == 1.0 and p["id_r1"] is not None
           and p["train_minutes"] is not None]
    curve = sorted([(p["train_minutes"], p["id_r1"]) for p in own]
                   + [(float(p["timed"]), p["id_r1"]) for p in own
                      if hold and p.get("stopped_early") and p.get("timed") is not None
                      and p["timed"] > p["train_minutes"]])
    frozen = next((p for p in pts if p["frozen"] and p["id_r1"] is not None), None)
    return ([(0.0, frozen["id_r1"])] if frozen is not None and curve else []) + curve


def at_minutes(curve: Sequence[Point], t: float) -> float | None:
    """ID R@1 at ``t`` minutes, linear between measured budgets; None outside them."""
    if not curve or t < curve[0][0] or t > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= t <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (t - x0) / (x1 - x0)
    return curve[-1][1]


def common_horizon(pts: list[dict[str, Any]], methods: Sequence[str]) -> float | None:
    """The longest training time every measured method of ``methods`` reached (its curve's end); None
    unless two or more were measured."""
    ends = [c[-1][0] for m in methods if (c := time_curve(pts, m))]
    return min(ends) if len(ends) >= 2 else None


def equal_time(pts: list[dict[str, Any]], methods: Sequence[str], minutes: Sequence[float],
               noise: float = 0.0) -> list[dict[str, Any]]:
    """At each of ``minutes``, and at the :func:`common_horizon` when it is below the first of them
    (``horizon``: True): every method's ID R@1 (None: not measured), the one ahead (None unless two or
    more were measured there; ``tie`` when the best two are equal as printed, to one decimal;
    ``within_noise`` when the lead is at most ``noise``, the seed-to-seed spread of :func:`seed_noise`:
    one run each cannot tell them apart).

    At a minute, a method's figure is its run sized to that minute (:func:`timed_point`: the model its
    validation chose) where one was measured, else read off its :func:`time_curve` (linear between its
    measured points); ``source`` says which (``timed``, ``curve``; None: not measured)."""
    # the horizon is the sweep's (last models, no timed run and no held best model): where every method trained
    sweep = [p for p in pts if p.get("timed") is None]
    curves = {m: time_curve(pts, m) for m in methods}
    h = common_horizon(sweep, methods)
    at = [(h, True)] if h is not None and h > 0 and (not minutes or h < min(minutes)) else []
    out = []
    for t, horizon in at + [(float(t), False) for t in minutes]:
        timed = {m: None if horizon else timed_point(pts, m, t) for m in methods}
        vals = {m: timed[m]["id_r1"] if timed[m] else at_minutes(time_curve(sweep, m) if horizon else c, t)
                for m, c in curves.items()}
        src = {m: "timed" if timed[m] else "curve" if vals[m] is not None else None for m in methods}
        got = sorted(((v, m) for m, v in vals.items() if v is not None), reverse=True)
        tie = len(got) >= 2 and round(got[0][0], 1) == round(got[1][0], 1)
        # as printed (one decimal), like the tie: the words never show a lead above the spread as none
        within = len(got) >= 2 and not tie and round(got[0][0], 1) - round(got[1][0], 1) <= round(noise, 1) + 1e-9
        out.append({"minutes": t, "horizon": horizon, "id_r1": vals, "source": src,
                    "ahead": got[0][1] if len(got) >= 2 and not (tie or within) else None, "tie": tie,
                    "within_noise": within})
    return out


def seed_noise(recommended: dict[str, Any]) -> dict[str, Any] | None:
    """The largest sample std of test ID R@1 over the seeds of a recommended point (one measured with
    two or more seeds): how far one run of a method's settings moves from another's. ``{"std", "method",
    "seeds"}``; None when no point has seeds."""
    best = None
    for m, r in recommended.items():
        st = (r or {}).get("stats") or {}
        if len(st.get("seeds") or []) >= 2 and st.get("id_r1") and (best is None or st["id_r1"][1] > best["std"]):
            best = {"std": float(st["id_r1"][1]), "method": m, "seeds": len(st["seeds"])}
    return best


def timed_point(pts: list[dict[str, Any]], method: str, minutes: float) -> dict[str, Any] | None:
    """The method's point of a run sized to ``minutes`` (``--timed``) that answers for it: its clock reached
    the minute, or it stopped before (its validation, or the collapse guard) and holds its best model there;
    the last of several (a run that fell short is planned again). None: no such run."""
    got = [p for p in pts if p["method"] == method and p.get("timed") is not None
           and math.isclose(float(p["timed"]), minutes, rel_tol=1e-6)
           and p["id_r1"] is not None and p["train_minutes"] is not None
           and (p["train_minutes"] >= minutes or p.get("stopped_early"))]
    return got[-1] if got else None


def reaches(pts: list[dict[str, Any]], method: str, minutes: float) -> bool:
    """Whether the method was measured at ``minutes`` by a run sized to it (:func:`timed_point`): the sweep's
    budgets alone never answer, as their last models are not what validation would choose within the minute."""
    return timed_point(pts, method, float(minutes)) is not None


def timed_steps(minutes: float, least_s_per_step: float, margin: float = 1.0) -> int:
    """The steps of a run sized to train ``minutes`` at ``least_s_per_step`` (the least-step clock), times
    ``margin`` (so it stays past the minute when a later run lowers the least)."""
    if not least_s_per_step > 0:
        raise ValueError(f"seconds per step must be positive, got {least_s_per_step}")
    return max(1, math.ceil(minutes * 60.0 * margin / least_s_per_step))
