"""The select profile's choice: the best candidate of each stage by its validation score, and the JSON.

Pure functions of the candidates' results (the runs' ``result.json``): :func:`choose` picks a
stage's winner (:func:`choose_with_margin`: a dear candidate must win by a margin),
:func:`select_record` writes every candidate, its validation score and the chosen values, and the
tokens the main profile reads (:func:`benchmarks.datasets.plan.chosen_tokens`).
"""
from __future__ import annotations

import math
from typing import Any

from benchmarks.datasets.plan import SCOPES, RunSpec, Table, is_dear, stage_tokens


def val_score(result: dict[str, Any], metric: str) -> tuple[float, float]:
    """``(metric, R@1)`` of a candidate's validation evaluation; refuses a run scored on the test split.

    Raises:
        ValueError: the run was evaluated on another split than ``val`` (it would leak the test
            classes into the choice).
    """
    if result.get("eval_split") != "val":
        raise ValueError(f"candidate {result.get('name')}: evaluated on {result.get('eval_split')!r}, not on the "
                         "validation split: a choice must never see the test classes")
    m = result.get("metrics") or {}
    return float(m.get(metric, math.nan)), float(m.get("recall@1", math.nan))


def choose(scores: dict[str, tuple[float, float]]) -> str:
    """The best candidate: highest metric, ties broken by R@1, then by the earlier candidate (NaN loses)."""
    if not scores:
        raise ValueError("choose: no candidates")

    def key(item: tuple[int, tuple[str, tuple[float, float]]]) -> tuple[float, float, int]:
        i, (_, (m, r1)) = item
        return (-math.inf if math.isnan(m) else m, -math.inf if math.isnan(r1) else r1, -i)

    return max(enumerate(scores.items()), key=key)[1][0]


def choose_with_margin(scores: dict[str, tuple[float, float]], dear: set[str], margin: float) -> tuple[str, str]:
    """The winner when the ``dear`` candidates must beat the best of the others by ``margin``; and why.

    A dear candidate (adapters below the cached frozen prefix: every step a full backward pass;
    on cub100, ICA alone 19 img/s against 39-117, DVA with OPA 3.4 against about 30) is chosen only when its metric is at least ``margin``
    above the best cheap candidate's: a smaller lead is within what a validation split of 5-20
    classes resolves, and every later stage and main row would pay its cost.

    Returns:
        ``(winner, how)``: ``how`` is ``"best"``, or ``"margin"`` when a dear candidate scored best
        but by less than ``margin`` (the best cheap candidate wins).
    """
    best = choose(scores)
    cheap = {k: v for k, v in scores.items() if k not in dear}
    if best not in dear or not cheap or margin <= 0:
        return best, "best"
    runner_up = choose(cheap)
    lead = scores[best][0] - scores[runner_up][0]
    return (best, "best") if math.isnan(scores[runner_up][0]) or lead >= margin else (runner_up, "margin")


def stage_record(name: str, scope: str, runs: list[RunSpec], results: list[dict[str, Any]],
                 metric: str, margin: float = 0.0) -> dict[str, Any]:
    """One stage of the select JSON: each candidate's overrides, folder, validation score and whether it is
    dear (:func:`is_dear`); the winner (:func:`choose_with_margin`) and how it won."""
    names = [r.name.split(":", 1)[1] for r in runs]
    scores = {n: val_score(res, metric) for n, res in zip(names, results)}
    dear = {n for n, r in zip(names, runs) if is_dear(r.row_overrides)}
    best, how = choose_with_margin(scores, dear, margin)
    cands = [{"name": n, "overrides": r.row_overrides, "folder": r.tag,
              "val_metrics": res.get("metrics"), "steps": res.get("steps"), "train_seconds": res.get("train_seconds"),
              "trainable_params": (res.get("params") or {}).get("trainable_params"),
              "trainable_pct": 100.0 * float((res.get("params") or {}).get("trainable_fraction") or 0.0),
              "dear": n in dear, "chosen": n == best}
             for n, r, res in zip(names, runs, results)]
    return {"name": name, "scope": scope, "metric": metric, "dear_margin": margin, "chosen_by": how,
            "candidates": cands, "chosen": best}


def select_record(table: Table, backbone: str, stages: list[dict[str, Any]],
                  frozen_val: dict[str, Any] | None) -> dict[str, Any]:
    """The select JSON's body: the stages, the chosen candidate of each, and the chosen tokens per scope.

    ``complete`` is true when every stage of the table was run: only then does the main profile
    read it.
    """
    chosen = {s["name"]: s["chosen"] for s in stages}
    return {"stages": stages, "chosen": chosen,
            "chosen_tokens": {scope: stage_tokens(table, backbone, chosen, (scope,)) for scope in SCOPES},
            "complete": len(stages) == len(table.stages), "frozen_val_metrics": frozen_val}
