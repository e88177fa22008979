"""The frontier benchmark's plan: ``frontier.yaml`` + the datasets harness -> the runs of a (dataset, backbone).

Every run is a run of the datasets harness (:mod:`benchmarks.datasets.plan`): the packaged ``demo``
config, the harness's common overrides with the dataset's validation classes held out, and a main
row's overrides (``dva``, ``ica``, ``full``) expanded by :func:`benchmarks.datasets.plan.main_runs`
from the select JSON's chosen tokens, with the step budget replaced by each budget of the sweep.
Nothing here trains or reads images.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.cub100.plan import _strict_yaml, _tokens
from benchmarks.datasets import plan as P

HERE = Path(__file__).resolve().parent
FRONTIER_FILE = HERE / "frontier.yaml"
DIALS = ("ica_scale", "wise_ft")
CLOCKS = ("least_step_seconds", "train_seconds", "train_and_prep_seconds")
SELECT_COMMAND = "python -m benchmarks.datasets.run --dataset {d} --backbone {b} --profile select"


class Method(NamedTuple):
    """A method of the sweep: its label, the harness main row it runs and how alpha is applied."""

    name: str
    label: str
    row: str
    dial: str
    extra: tuple[str, ...] = ()  # overrides after the row's own (e.g. a loss weight the row does not set)
    variant: bool = False  # a design change of frontier.yaml's ``variants``: run when named (--methods)
    per_backbone: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a variant's extra per backbone (resolve())
    more_stages: int = 0  # a variant's adapters in this many stages (blocks) more than the chosen placement

    def applies_to(self, backbone: str) -> bool:
        """Whether the method runs on ``backbone`` (a variant with per-backbone overrides: where it has some)."""
        by = dict(self.per_backbone)
        return not by or backbone in by or "default" in by

    def resolve(self, backbone: str, chosen: dict[str, list[str]]) -> Method | None:
        """The method on ``backbone`` with the pair's chosen tokens: a variant's common extra, its extra for
        ``backbone``, and its placement ``more_stages`` deeper than the chosen ``--ica.blocks '-N:'`` (None:
        the variant has nothing for ``backbone``, or the chosen placement has no stage to add, e.g. ``all``)."""
        if not self.variant:
            return self
        if not self.applies_to(backbone):
            return None
        by = dict(self.per_backbone)
        extra = self.extra + by.get(backbone, by.get("default", ()))
        if self.more_stages:
            blocks = effective(list(chosen.get("adapters") or []) + list(extra)).get("--ica.blocks", "")
            last = re.fullmatch(r"'?-(\d+):'?", blocks)
            if last is None:
                return None
            extra += ("--ica.blocks", f"'-{int(last.group(1)) + self.more_stages}:'")
        return self._replace(extra=extra, per_backbone=(), more_stages=0)


class Frontier(NamedTuple):
    """Everything ``frontier.yaml`` holds, checked against the datasets harness's table."""

    datasets: list[str]
    backbones: list[str]
    budgets: list[int]
    alphas: list[float]
    methods: dict[str, Method]
    variants: dict[str, Method]  # run when named (--methods), not part of the profile
    metric: str
    seeds: int
    minutes: list[float]
    clock: str
    timed_methods: list[str]  # the methods whose equal-compute curves --timed runs extend
    margin: float  # a timed run's steps: minutes x 60 x margin / least seconds per step
    targets: dict[str, Any]
    image_cache: bool
    prefix_cache: bool
    runtime: str
    # a timed run's validation: evaluate every this many epochs, keep the best model, stop after patience
    # evaluations without a better one (0: never stop early)
    timed_eval_every: int = 1
    timed_patience: int = 5


def check_alphas(alphas: list[float], where: str) -> list[float]:
    """``alphas`` as sorted distinct floats in [0, 1] (ValueError naming ``where`` otherwise)."""
    out = sorted({float(a) for a in alphas})
    bad = [a for a in out if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
    if bad or not out:
        raise ValueError(f"{where}: alphas must be numbers in [0, 1] (0 = frozen, 1 = trained), got {alphas}")
    return out


def check_budgets(budgets: list[int], where: str) -> list[int]:
    """``budgets`` as sorted distinct positive step counts (ValueError naming ``where`` otherwise)."""
    out = sorted({int(b) for b in budgets})
    if not out or out[0] < 1 or any(int(b) != float(b) for b in budgets):
        raise ValueError(f"{where}: budgets must be positive whole numbers of steps, got {budgets}")
    return out


def load_frontier(path: str | Path = FRONTIER_FILE, table: P.Table = P.TABLE) -> Frontier:
    """Read and check ``frontier.yaml`` (every method's row a harness main row, every dataset/backbone the harness's)."""
    raw = _strict_yaml(Path(path).read_text())
    where = Path(path).name
    methods = {n: Method(n, str(m["label"]), str(m["row"]), str(m["dial"]),
                         tuple(_tokens(m.get("extra", []), f"methods.{n}.extra"))) for n, m in raw["methods"].items()}
    keys = {"label", "row", "dial", "extra"}
    bad = [f"methods.{n}: unknown key(s) {sorted(set(m) - keys)}" for n, m in raw["methods"].items() if set(m) - keys]
    variants, vkeys = {}, {"label", "row", "dial", "extra", "extra_per_backbone", "more_stages"}
    for n, m in (raw.get("variants") or {}).items():
        if set(m) - vkeys or n in methods:
            bad.append(f"variants.{n}: " + (f"unknown key(s) {sorted(set(m) - vkeys)}" if set(m) - vkeys
                                             else "a name of methods too"))
            continue
        per = tuple((str(b), tuple(_tokens(t, f"variants.{n}.extra_per_backbone.{b}")))
                    for b, t in (m.get("extra_per_backbone") or {}).items())
        bad += [f"variants.{n}.extra_per_backbone: {b} is no backbone of harness.yaml (or default)"
                for b, _ in per if b != "default" and b not in table.backbones]
        variants[n] = Method(n, str(m["label"]), str(m["row"]), str(m["dial"]),
                             tuple(_tokens(m.get("extra", []), f"variants.{n}.extra")), True, per,
                             int(m.get("more_stages", 0)))
    every = {**methods, **variants}
    bad += [f"{'variants' if m.variant else 'methods'}.{m.name}.row {m.row!r} is no main row of harness.yaml"
            for m in every.values() if m.row not in table.main_rows or m.row == "frozen"]
    bad += [f"{'variants' if m.variant else 'methods'}.{m.name}.dial {m.dial!r} is not one of {DIALS}"
            for m in every.values() if m.dial not in DIALS]
    bad += [f"datasets: {d} is no ID dataset of harness.yaml" for d in raw["datasets"] if d not in table.datasets]
    bad += [f"backbones: {b} is no backbone of harness.yaml" for b in raw["backbones"] if b not in table.backbones]
    if raw["runtime"] not in ("auto", "torch", "onnx"):
        bad.append(f"runtime must be auto, torch or onnx, got {raw['runtime']!r}")
    ec = raw["equal_compute"]
    if ec["clock"] not in CLOCKS:
        bad.append(f"equal_compute.clock must be one of {CLOCKS}, got {ec['clock']!r}")
    bad += [f"equal_compute.timed_methods: {m} is no method of methods" for m in ec.get("timed_methods", [])
            if m not in methods]
    if not 1.0 <= float(ec.get("margin", 1.0)) <= 2.0:
        bad.append(f"equal_compute.margin must be in [1, 2], got {ec.get('margin')!r}")
    sel = ec.get("timed_select") or {}
    if set(sel) - {"eval_every", "patience"}:
        bad.append(f"equal_compute.timed_select: unknown key(s) {sorted(set(sel) - {'eval_every', 'patience'})}")
    if not int(sel.get("eval_every", 1)) >= 1 or not int(sel.get("patience", 5)) >= 0:
        bad.append(f"equal_compute.timed_select: eval_every must be 1 or more epochs and patience 0 or more, got {sel}")
    if any(not (float(m) > 0) for m in ec["minutes"]):
        bad.append(f"equal_compute.minutes must be positive, got {ec['minutes']!r}")
    if bad:
        raise ValueError(f"{where}: {bad}")
    return Frontier(datasets=_tokens(raw["datasets"], "datasets"), backbones=_tokens(raw["backbones"], "backbones"),
                    budgets=check_budgets(raw["budgets"], f"{where} budgets"),
                    alphas=check_alphas(raw["alphas"], f"{where} alphas"), methods=methods, variants=variants,
                    metric=str(raw["select_metric"]), seeds=int(raw["seeds"]),
                    minutes=[float(m) for m in ec["minutes"]], clock=str(ec["clock"]),
                    timed_methods=[str(m) for m in ec.get("timed_methods", [])], margin=float(ec.get("margin", 1.0)),
                    targets=dict(raw["targets"]),
                    image_cache=bool(raw["image_cache"]), prefix_cache=bool(raw["prefix_cache"]),
                    runtime=str(raw["runtime"]), timed_eval_every=int(sel.get("eval_every", 1)),
                    timed_patience=int(sel.get("patience", 5)))


FRONTIER = load_frontier()


# ----------------------------------------------------------------------------- the chosen values
def first_candidates(table: P.Table, backbone: str) -> dict[str, list[str]]:
    """Every select stage at its first candidate, per scope (the ``--unselected`` tokens)."""
    return {s: P.stage_tokens(table, backbone, {}, (s,)) for s in P.SCOPES}


def load_chosen(table: P.Table, dataset: str, backbone: str, path: Path,
                unselected: bool = False) -> dict[str, list[str]]:
    """The select JSON's chosen tokens per scope, or (``unselected``) each stage's first candidate.

    Raises:
        FileNotFoundError: no select JSON, naming the command that makes it.
        ValueError: a select JSON of another pair, or one that did not finish, naming the command.
    """
    if unselected:
        return first_candidates(table, backbone)
    cmd = SELECT_COMMAND.format(d=dataset, b=backbone)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no select result for ({dataset}, {backbone}); make it with `{cmd}` "
                                "(or pass --unselected to run every select stage's first candidate, labelled so)")
    try:
        return P.chosen_tokens({"json": str(path), **json.loads(Path(path).read_text())}, dataset, backbone)
    except ValueError as e:
        raise ValueError(f"{e}. The command: `{cmd}` (or pass --unselected to run every stage's first "
                         "candidate, labelled so)") from None


# ----------------------------------------------------------------------------- runs
def common(table: P.Table, dataset: str, backbone: str, root: str, cache: Path, threads: int) -> list[str]:
    """The harness's common overrides with the dataset's validation classes held out (every run of the sweep)."""
    ds = table.datasets[dataset]
    if ds.val_classes < 2:
        raise ValueError(f"harness.yaml datasets.{dataset}.val_classes is {ds.val_classes}: the frontier chooses "
                         "its points on held-out validation classes, set it to 2 or more")
    return P.common_overrides(ds, root, cache, threads, table.backbones[backbone], ds.val_classes)


def frozen_run(table: P.Table, dataset: str, backbone: str, base: list[str]) -> P.RunSpec:
    """The frozen backbone's run (alpha 0 of every method): the harness's frozen row, no training."""
    (_, _, _, runs), = P.main_runs(table, table.datasets[dataset], backbone, base, first_candidates(table, backbone),
                                   [0], ["frozen"])
    return runs[0]


def method_run(table: P.Table, dataset: str, backbone: str, base: list[str], chosen: dict[str, list[str]],
               method: Method, budget: int, seed: int) -> P.RunSpec:
    """One trained run: the method's harness row (its tokens expanded by ``main_runs``) at ``budget`` steps."""
    at_budget = {**chosen, "trained": ["--train.steps", str(budget)]}  # the sweep's budget, not select's steps
    (_, _, _, runs), = P.main_runs(table, table.datasets[dataset], backbone, base, at_budget, [seed], [method.row])
    spec = runs[0]
    if method.extra:  # after the row's tokens: they win (the tag's digest covers them)
        spec = spec._replace(overrides=spec.overrides + list(method.extra),
                             row_overrides=spec.row_overrides + list(method.extra))
    return spec._replace(name=method.name, tag=f"{method.name}_b{budget}_s{seed}_{P.digest(spec.overrides)}")


def timed_select(fr: Frontier) -> dict[str, int]:
    """How a timed run is validated (``equal_compute.timed_select``): what its plan and result record."""
    return {"eval_every": fr.timed_eval_every, "patience": fr.timed_patience}


def timed_method(method: Method, fr: Frontier) -> Method:
    """``method`` as a timed run trains it: evaluated on the validation classes every ``timed_eval_every``
    epochs, ``best.safetensors`` kept, stopped after ``timed_patience`` evaluations without a better
    validation MAP@R (after the harness's ``--train.eval_every 0 --train.patience 0``: these win, and the
    run's tag digest covers them)."""
    return method._replace(extra=method.extra + ("--train.eval_every", str(fr.timed_eval_every),
                                                 "--train.patience", str(fr.timed_patience)))


def effective(tokens: list[str]) -> dict[str, str]:
    """``--key value`` overrides as the config sees them: the last value of each key wins."""
    return {k: v for k, v in itertools.pairwise(tokens) if k.startswith("--")}


def same_as_row(table: P.Table, dataset: str, backbone: str, base: list[str], chosen: dict[str, list[str]],
                method: Method, budget: int) -> bool:
    """Whether ``method`` trains exactly what its row does on this pair (a variant whose change the select
    profile had already chosen, e.g. a DPT weight equal to the chosen one): nothing new to measure."""
    plain = method._replace(name=method.row, extra=())
    return (effective(method_run(table, dataset, backbone, base, chosen, method, budget, 0).overrides)
            == effective(method_run(table, dataset, backbone, base, chosen, plain, budget, 0).overrides))


def sweep_runs(table: P.Table, dataset: str, backbone: str, base: list[str], chosen: dict[str, list[str]],
               methods: list[Method], budgets: list[int]) -> list[tuple[Method, int, P.RunSpec]]:
    """Seed 0 of every (method, budget), budget by budget (a stopped profile has whole smaller budgets)."""
    return [(m, b, method_run(table, dataset, backbone, base, chosen, m, b, 0)) for b in budgets for m in methods]


def seed_runs(table: P.Table, dataset: str, backbone: str, base: list[str], chosen: dict[str, list[str]],
              method: Method, budget: int, seeds: int) -> list[P.RunSpec]:
    """The extra seeds (1 .. seeds-1) of a recommended (method, budget)."""
    return [method_run(table, dataset, backbone, base, chosen, method, budget, s) for s in range(1, seeds)]


def steps_of(spec: P.RunSpec) -> int:
    """The run's step budget (its last ``--train.steps``)."""
    from benchmarks.datasets.costs import steps_of as steps

    return steps(spec.overrides)
