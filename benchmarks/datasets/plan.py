"""The datasets benchmark's plan: ``harness.yaml`` -> the runs of a (dataset, backbone, profile).

Two profiles. ``select`` trains candidates on the dataset's validation split (its last
``val_classes`` training classes; the test classes are never loaded) one stage after another
(:func:`select_stage_runs`); ``main`` scores the test classes for the values ``select`` chose
(:func:`main_runs`), read from the select JSON: one source of truth. Every run is the packaged
``demo`` config plus overrides; its run folder is named by the row, the seed and a digest of its
settings, so that a run of other settings never lands in (or reuses) another's folder. Nothing
here trains or reads images.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.cub100.plan import _strict_yaml, _tokens, preset_backbone

HERE = Path(__file__).resolve().parent
TABLE_FILE = HERE / "harness.yaml"
SCOPES = ("adapters", "trained", "opa")
# Override keys whose values are places or machine settings, not what a run measures.
NOT_SETTINGS = ("--data.root", "--train.cache_dir", "--train.threads", "--train.eval_frozen", "--output_dir")


class DatasetSpec(NamedTuple):
    """An ID dataset (or an OOD gallery): its reader, where it is found, its COCO class and hold-out."""

    name: str
    reader: str
    env: str
    marker: str
    coco_class: str
    val_classes: int
    images: tuple[int, int]  # train, test (time estimates only)
    subdir: str = ""  # the reader's root below the located folder (pets37: images/)


class BackboneSpec(NamedTuple):
    """A backbone: its packaged preset, timm model, input size and default number of seeds."""

    preset: str
    model: str
    img_size: int
    default_seeds: int
    main_rows: tuple[str, ...] = ()  # the main rows it runs, in the table's order (harness.yaml)


class MainRow(NamedTuple):
    """A row of the main profile: label and overrides with ``@chosen`` / ``@beta`` / ``@coco`` markers."""

    label: str
    overrides: list[str]


class Stage(NamedTuple):
    """A select stage: its name, scope and candidates per backbone (``default`` for the others)."""

    name: str
    scope: str
    candidates: dict[str, dict[str, list[str]]]

    def of(self, backbone: str) -> dict[str, list[str]]:
        """The candidates of ``backbone`` (its own, else the default ones), in order."""
        return self.candidates.get(backbone) or self.candidates["default"]


class Table(NamedTuple):
    """Everything ``harness.yaml`` holds, checked."""

    datasets: dict[str, DatasetSpec]
    ood_extra: dict[str, DatasetSpec]
    backbones: dict[str, BackboneSpec]
    seeded_rows: list[str]
    main_rows: dict[str, MainRow]
    quick_rows: list[str]
    metric: str
    stages: list[Stage]
    dear_margin: float  # the lead (in the metric) a dear candidate needs over the best cheap one


DEAR_TOKENS = ("--train.cache_prefix", "off")  # adapters below the cached prefix: a full backward pass per step


def is_dear(tokens: list[str]) -> bool:
    """A candidate whose steps cannot use the cached frozen prefix (``--train.cache_prefix off``)."""
    return any(tokens[i:i + 2] == list(DEAR_TOKENS) for i in range(len(tokens) - 1))


def _dataset(name: str, d: dict[str, Any]) -> DatasetSpec:
    return DatasetSpec(name, str(d["reader"]), str(d["env"]), str(d["marker"]), str(d.get("coco_class", "")),
                       int(d.get("val_classes", 0)), tuple(int(n) for n in d["images"]), str(d.get("subdir", "")))


def _stage(i: int, s: dict[str, Any]) -> Stage:
    where = f"select.stages[{i}]"
    if s.get("scope") not in SCOPES:
        raise ValueError(f"harness.yaml {where}: scope must be one of {SCOPES}, got {s.get('scope')!r}")
    cands = {bb: {n: _tokens(t, f"{where}.candidates.{bb}.{n}") for n, t in c.items()}
             for bb, c in s["candidates"].items()}
    return Stage(str(s["name"]), str(s["scope"]), cands)


def load_table(path: str | Path = TABLE_FILE) -> Table:
    """Read and check ``harness.yaml``.

    Returns:
        The table; every override a string, every quick/seeded row a main row, every stage
        with candidates for every backbone (its own or ``default``).
    """
    raw = _strict_yaml(Path(path).read_text())
    main = {n: MainRow(str(r["label"]), _tokens(r["overrides"], f"main.rows.{n}"))
            for n, r in raw["main"]["rows"].items()}
    backbones = {}
    for k, b in raw["backbones"].items():
        bb = preset_backbone(str(b["preset"]))
        rows = _tokens(b.get("main_rows", list(main)), f"backbones.{k}.main_rows")
        if not rows or set(rows) - set(main):
            raise ValueError(f"harness.yaml backbones.{k}.main_rows: main rows ({list(main)}), got {rows}")
        backbones[k] = BackboneSpec(str(b["preset"]), bb.model, bb.img_size, int(b["default_seeds"]),
                                    tuple(n for n in main if n in rows))
    table = Table(datasets={n: _dataset(n, d) for n, d in raw["datasets"].items()},
                  ood_extra={n: _dataset(n, d) for n, d in (raw.get("ood_extra") or {}).items()},
                  backbones=backbones, seeded_rows=_tokens(raw["seeded_rows"], "seeded_rows"), main_rows=main,
                  quick_rows=_tokens(raw["main"]["quick"], "main.quick"), metric=str(raw["select"]["metric"]),
                  stages=[_stage(i, s) for i, s in enumerate(raw["select"]["stages"])],
                  dear_margin=float(raw["select"].get("dear_margin", 0.0)))
    bad = [f"main.quick {n}" for n in table.quick_rows if n not in main]
    bad += [f"seeded_rows {n}" for n in table.seeded_rows if n not in main]
    bad += [f"select.stages {s.name}: no candidates for {b}" for s in table.stages for b in backbones
            if not s.of(b)]
    if bad:
        raise ValueError(f"harness.yaml: {bad}")
    return table


TABLE = load_table()


# ----------------------------------------------------------------------------- data
def locate(spec: DatasetSpec, explicit: str | os.PathLike | None = None) -> Path | None:
    """The dataset's folder: ``explicit``, else ``$ENV`` or ``../shared/data/<name>``; None when absent."""
    from dva.data.locate import shared_candidates

    cands = [Path(explicit)] if explicit else shared_candidates(f"data/{spec.name}", spec.env)
    return next((c for c in cands if (c / spec.marker).exists()), None)


def reader_root(spec: DatasetSpec, folder: Path) -> str:
    """What the reader reads (``--data.root``): the located folder or its ``subdir``."""
    return str(folder / spec.subdir) if spec.subdir else str(folder)


# ----------------------------------------------------------------------------- runs
class RunSpec(NamedTuple):
    """One run (one subprocess): a row and seed, its full overrides and run folder name."""

    name: str
    kind: str  # "train" or "frozen"
    seed: int
    overrides: list[str]  # everything the worker loads the config with
    tag: str  # the run folder: row, seed, settings digest
    row_overrides: list[str]  # the row's own, markers expanded (recorded in the JSON)


def settings_of(overrides: list[str]) -> list[str]:
    """``overrides`` without the places and machine settings (:data:`NOT_SETTINGS`) and their values."""
    out, skip = [], False
    for t in overrides:
        if skip:
            skip = False
            continue
        if t in NOT_SETTINGS:
            skip = True
            continue
        out.append(t)
    return out


def digest(overrides: list[str]) -> str:
    """Eight hex digits naming a run's settings (:func:`settings_of`): the folder suffix."""
    return hashlib.sha1(json.dumps(settings_of(overrides)).encode()).hexdigest()[:8]


def common_overrides(ds: DatasetSpec, root: str, cache: Path, threads: int, bb: BackboneSpec,
                     val_classes: int) -> list[str]:
    """The overrides of every run: data and split, shared caches, threads, backbone and one final evaluation.

    The budget is in steps, never in epochs: the same number of steps on every dataset whatever
    its size; 184 (cub100's) unless a select candidate or the chosen values say otherwise. ``val_classes`` > 0: the
    select profile's hold-out (and its test records are dropped by the worker).
    """
    return ["--data.dataset", ds.reader, "--data.protocol", "open", "--data.root", root,
            "--data.val_classes", str(val_classes), "--train.cache_dir", str(cache), "--train.threads", str(threads),
            "--backbone.name", bb.model, "--backbone.img_size", str(bb.img_size),
            "--train.epochs", "0", "--train.max_steps", "0", "--train.steps", "184", "--train.patience", "0",
            "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "20"]


def backbone_overrides(table: Table, backbone: str) -> list[str]:
    """The ICA setting every run of ``backbone`` starts from: the first candidate of the first stage
    (placement; the setting chosen on cub100 alone). Every adapter row's own tokens come after it and
    override it; it stays in each run's tokens, and so in its folder's digest."""
    st = table.stages[0]
    cands = st.candidates.get(backbone) or st.candidates.get("default")
    if not cands:
        raise ValueError(f"harness.yaml: stage {table.stages[0].name!r} has no candidates for {backbone!r}: its "
                         "first candidate is the ICA setting every run of the backbone starts from")
    return list(next(iter(cands.values())))


def stage_tokens(table: Table, backbone: str, chosen: dict[str, str], scopes: tuple[str, ...] = SCOPES) -> list[str]:
    """The tokens of every stage of ``scopes``: each its chosen candidate, else its first.

    Args:
        table: the harness table.
        backbone: whose candidates.
        chosen: stage name -> chosen candidate name.
        scopes: only stages of these scopes.
    """
    out: list[str] = []
    for st in table.stages:
        if st.scope in scopes:
            cands = st.of(backbone)
            out += cands[chosen.get(st.name, next(iter(cands)))]
    return out


def select_stage_runs(table: Table, backbone: str, common: list[str], stage: int, chosen: dict[str, str],
                      seed: int = 0) -> list[RunSpec]:
    """The candidates of select stage ``stage``, the earlier stages at their chosen values.

    Every other stage stands at its chosen candidate (earlier ones) or its first (later ones); a
    stage of scope ``opa`` runs DVA with self boxes, the others ICA alone (OPA off), without
    the ``opa`` stages' tokens. ``common`` must hold the validation hold-out (``val_classes`` > 0).
    """
    st = table.stages[stage]
    opa = st.scope == "opa"
    runs = []
    for cand in st.of(backbone):
        toks = stage_tokens(table, backbone, {**chosen, st.name: cand}, SCOPES if opa else ("adapters", "trained"))
        row = toks + (["--opa.box_source", "self"] if opa else ["--opa.enabled", "false"])
        ov = common + backbone_overrides(table, backbone) + row + ["--train.seed", str(seed)]
        # The folder is named by the settings alone: a candidate equal to an earlier stage's winner
        # (e.g. the first learning rate) is that run, not a second one.
        runs.append(RunSpec(f"{st.name}:{cand}", "train", seed, ov, f"sel_s{seed}_{digest(ov)}", row))
    return runs


def chosen_tokens(select: dict[str, Any], dataset: str, backbone: str) -> dict[str, list[str]]:
    """The select JSON's chosen tokens per scope, checked to be that (dataset, backbone)'s and complete.

    Raises:
        ValueError: another dataset or backbone, or a select profile that did not finish.
    """
    s = select.get("settings") or {}
    if (s.get("dataset"), s.get("backbone")) != (dataset, backbone):
        raise ValueError(f"{select.get('json')}: the choice of ({s.get('dataset')}, {s.get('backbone')}), not of "
                         f"({dataset}, {backbone}): pass --select with that pair's select JSON")
    if not select.get("complete"):
        raise ValueError(f"{select.get('json')}: the select profile did not finish every stage; run it again "
                         f"(it resumes) before the main profile")
    return {k: _tokens(select["chosen_tokens"][k], f"chosen_tokens.{k}") for k in SCOPES}


def row_seeds(table: Table, name: str, seeds: list[int]) -> tuple[list[int], str]:
    """The seeds a main row runs and their label: seeded rows every seed, others the first; frozen: one
    (an embedding pass, seed-independent)."""
    if name == "frozen":
        return [0], "deterministic (no training: seed-independent)"
    if name in table.seeded_rows and len(seeds) > 1:
        return list(seeds), f"{len(seeds)} seeds"
    return [seeds[0]], "1 seed"


def main_runs(table: Table, ds: DatasetSpec, backbone: str, common: list[str], chosen: dict[str, list[str]],
              seeds: list[int], rows: list[str] | None = None) -> list[tuple[str, str, str, list[RunSpec]]]:
    """The main profile's runs: ``(row name, label, seeds label, runs)`` in execution order.

    ``@chosen`` -> the chosen adapter tokens, ``@beta`` -> the chosen DPT weight, ``@coco`` -> the
    dataset's COCO class; every trained row gets the chosen budget. The frozen row embeds the
    test split itself (trained rows skip their frozen pass: ``--train.eval_frozen false``).
    """
    own_rows = table.backbones[backbone].main_rows or tuple(table.main_rows)
    names = rows or list(own_rows)
    unknown = [n for n in names if n not in own_rows]
    if unknown:
        raise ValueError(f"unknown row(s) {unknown}; the main rows of {backbone}: {list(own_rows)}")
    marks = {"@chosen": chosen["adapters"], "@beta": chosen["opa"], "@coco": [ds.coco_class]}
    out = []
    for name in [n for n in table.main_rows if n in names]:
        row = table.main_rows[name]
        kind = "frozen" if name == "frozen" else "train"
        own = [t for tok in row.overrides for t in marks.get(tok, [tok])]
        if kind == "train":
            own = ([] if "--train.trainable" in own else backbone_overrides(table, backbone)) \
                + own + chosen["trained"]
        rs, label = row_seeds(table, name, seeds)
        runs = []
        for seed in rs:
            ov = common + own + ["--train.seed", str(seed)]
            ov += ["--train.eval_frozen", "false"] if kind == "train" else []
            runs.append(RunSpec(name, kind, seed, ov, f"{name}_s{seed}_{digest(ov)}", own))
        out.append((name, row.label, label, runs))
    return out
