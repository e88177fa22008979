"""Time estimates of a plan from measured runs (``benchmarks/results/*.json``): the ``--plan`` printout.

A run's cost is its steps x the measured seconds per step of its kind on its backbone (the
median over the cub100 harness's rows of that name), plus the measured overhead of a run
(wall less training: caches, boxes, evaluation) scaled by the images the dataset holds against
cub100's, plus the OOD galleries embedded at the measured embedding speed. Estimates on 2 CPU
cores, as those runs were; another load on the machine makes every run slower.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C

CUB100_IMAGES = 2949 + 2953  # the images of the runs the costs were measured on
KINDS = ("frozen", "head", "ica", "dva", "full")
# cub100 harness row name -> the cost kind it measures (ica_opa: the same views as DVA).
ROW_KIND = {"frozen": "frozen", "head": "head", "ica": "ica", "ica_opa": "dva", "dva": "dva", "full": "full"}


class Cost(NamedTuple):
    """Measured cost of a kind of run on a backbone."""

    s_per_step: float
    overhead_s: float  # wall - training, on cub100
    embed_img_per_s: float
    sources: int  # runs measured


def load_costs(files: Iterable[Path] | None = None) -> dict[tuple[str, int, str], Cost]:
    """``(model, img_size, kind)`` -> the median measured :class:`Cost` over the result files' main rows."""
    samples: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    for f in files if files is not None else sorted(C.RESULTS.glob("cub100_*.json")):
        try:
            res = json.loads(Path(f).read_text())
        except (OSError, ValueError):
            continue
        s = res.get("settings") or {}
        model, img = s.get("model") or "mobilenetv2_100", s.get("img_size")
        for row in res.get("rows") or []:
            kind = ROW_KIND.get(row.get("name"))
            for run in row.get("runs") or [] if kind else []:
                steps, wall = run.get("steps") or 0, run.get("wall_seconds")
                if wall is None or (kind != "frozen" and not steps) or run.get("reused_from") or run.get("same_run_as"):
                    continue
                train = run.get("train_seconds") or 0.0
                samples.setdefault((model, int(img), kind), []).append(
                    (train / steps if steps else 0.0, max(0.0, wall - train), run.get("embed_img_per_s") or 0.0))
    return {k: Cost(*(statistics.median(x[i] for x in v) for i in range(3)), len(v)) for k, v in samples.items()}


def run_kind(overrides: list[str], frozen: bool = False) -> str:
    """The cost kind of a run from its overrides (the last value of a key wins, as in the config)."""
    def last(key: str, default: str) -> str:
        vals = [overrides[i + 1] for i, t in enumerate(overrides[:-1]) if t == key]
        return vals[-1] if vals else default

    if frozen:
        return "frozen"
    trainable = last("--train.trainable", "ica")
    if trainable in ("full", "head"):
        return trainable
    if last("--train.cache_prefix", "auto") == "off":  # adapters in every stage: the whole network every step
        return "full"
    return "ica" if last("--opa.enabled", "true") == "false" else "dva"


def steps_of(overrides: list[str]) -> int:
    """The run's ``--train.steps`` (the last one given)."""
    vals = [int(overrides[i + 1]) for i, t in enumerate(overrides[:-1]) if t == "--train.steps"]
    return vals[-1] if vals else 0


def estimate(costs: dict[tuple[str, int, str], Cost], model: str, img_size: int, overrides: list[str],
             frozen: bool, images: int, ood_images: int = 0) -> float | None:
    """Estimated seconds of one run; None when no run of that kind was measured on that backbone.

    Args:
        costs: from :func:`load_costs`.
        model, img_size: the backbone.
        overrides: the run's overrides (kind and steps).
        frozen: an embedding pass, not a training run.
        images: images of the dataset the run reads (overhead scale).
        ood_images: images of the OOD galleries embedded after training.
    """
    kind = run_kind(overrides, frozen)
    c = costs.get((model, img_size, kind))
    if c is None:
        return None
    speed = c.embed_img_per_s or costs.get((model, img_size, "frozen"), c).embed_img_per_s or 50.0
    return c.s_per_step * steps_of(overrides) * (not frozen) + c.overhead_s * images / CUB100_IMAGES \
        + ood_images / speed


def format_minutes(seconds: float | None) -> str:
    """``12 min``, or ``?`` for no estimate."""
    return "?" if seconds is None else f"{seconds / 60:.0f} min"


def plan_lines(rows: list[tuple[str, str, float | None]], budget_s: float = 7200.0,
               done: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The printout: one line per run (name, folder, estimate), the total and whether it fits ``budget_s``.

    ``done``: the folders whose run finished (``[done]``, not in the total: what is left to run).
    """
    lines = [f"  {name:<24} {tag:<44} " + ("[done]" if tag in done else f"~{format_minutes(est)}")
             for name, tag, est in rows]
    left: dict[str, float | None] = {}
    for _, tag, e in rows:  # a run listed twice (a select candidate equal to an earlier stage's) counts once
        if tag not in done:
            left.setdefault(tag, e)
    known = [e for e in left.values() if e is not None]
    total = sum(known)
    fits = "within" if total <= budget_s else "OVER"
    missing = len(left) - len(known)
    n_done = len({tag for _, tag, _ in rows if tag in done})
    if left and not known:  # no figure at all (a backbone with no measured run): "~0 min" would read as nothing to do
        lines.append(f"  estimated total: unknown ({missing} run(s) without a measured cost: no run of this kind "
                     "measured yet)")
        return lines
    lines.append(f"  estimated total ~{total / 60:.0f} min ({fits} the {budget_s / 3600:.0f} h of a profile"
                 + (f"; {missing} run(s) without a measured cost" if missing else "")
                 + (f"; {n_done} run(s) done, not counted" if n_done else "") + ")")
    return lines


def result_costs(res: dict[str, Any]) -> dict[str, float]:
    """Measured seconds per step of each row of a harness result (to compare with the estimates)."""
    out = {}
    for row in res.get("rows") or []:
        runs = [r for r in row.get("runs") or [] if r.get("steps")]
        if runs:
            out[row["name"]] = statistics.median(r["train_seconds"] / r["steps"] for r in runs)
    return out
