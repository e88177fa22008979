"""The defaults benchmark's plan: (preset, dataset) -> the default command, its settings, its expected budget.

The command is exactly what a user types (``dva train --preset P --data.dataset READER --data.root
ROOT --output_dir RUN``) plus only what cannot change the result: the thread count and a shared
prefix-cache folder (:data:`MACHINE_KEYS`). A run's *settings* are that command without places
and machine settings, the config it resolves to (the preset as packaged now) and the data-scaled
rules the trainer applies at run time (``AUTO_STEPS``, ``AUTO_VAL_CLASSES``, ``TRAINABLE_DEFAULTS``):
a run folder is named by their digest, so a changed default never reads back an older run.
The datasets are the datasets harness's (``benchmarks/datasets/harness.yaml``): its three ID
datasets and the pets37 open set (its ``ood_extra`` entry). Nothing here trains or opens an image.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from benchmarks.datasets import costs as K
from benchmarks.datasets.plan import TABLE, DatasetSpec, locate, reader_root, settings_of

# Cheapest first (the order of the tables); a preset added to src/dva/configs/ later comes after them.
PRESET_ORDER = ("mobilenetv2", "lite0", "lite1", "lite2", "vit_s14")
OPEN_SET = ("pets37",)  # the harness's OOD gallery trained on here as an open-set dataset of its own
MACHINE_KEYS = ("--train.threads", "--train.cache_dir")  # what the harness adds to the user's command
PLACES = ("--data.root", "--output_dir")
SITTING_S = 7200.0  # a sitting of the benchmark stays under 2 hours


def presets() -> list[str]:
    """Every packaged per-backbone preset (``dva train --preset``), cheapest first."""
    from dva.config import presets as packaged

    names = list(packaged())
    return [p for p in PRESET_ORDER if p in names] + sorted(p for p in names if p not in PRESET_ORDER)


def datasets() -> list[str]:
    """The ID datasets of the datasets harness, then the open set(s)."""
    return list(TABLE.datasets) + [d for d in OPEN_SET if d in TABLE.ood_extra]


def dataset_spec(name: str) -> DatasetSpec:
    """The harness's entry of ``name`` (an ID dataset or the pets37 gallery)."""
    spec = TABLE.datasets.get(name) or TABLE.ood_extra.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; the defaults benchmark runs {datasets()}")
    return spec


def harness_backbone(preset: str) -> str | None:
    """The datasets harness's backbone built on ``preset`` (its main profile's DVA row is the tuned row), or None."""
    return next((name for name, bb in TABLE.backbones.items() if bb.preset == preset), None)


def find_root(name: str, explicit: str | None = None) -> str | None:
    """What ``--data.root`` reads for dataset ``name``: an explicit folder (taken as given; the reader's
    subfolder added, e.g. pets37's ``images/``), else the located one; None when absent."""
    spec = dataset_spec(name)
    if explicit:
        return reader_root(spec, Path(explicit).expanduser().resolve())
    folder = locate(spec)
    return reader_root(spec, folder) if folder else None


# ----------------------------------------------------------------------------- the command
def default_argv(preset: str, dataset: str, root: str, out: str | Path, threads: int, cache: str | Path) -> list[str]:
    """The default command of ``(preset, dataset)``, as a user types it, plus :data:`MACHINE_KEYS`."""
    return ["dva", "train", "--preset", preset, "--data.dataset", dataset_spec(dataset).reader, "--data.root", root,
            "--output_dir", str(out), "--train.threads", str(threads), "--train.cache_dir", str(cache)]


def user_command(argv: list[str]) -> list[str]:
    """``argv`` without the harness's machine settings: the command as a user types it."""
    out, skip = [], False
    for t in argv:
        if skip:
            skip = False
        elif t in MACHINE_KEYS:
            skip = True
        else:
            out.append(t)
    return out


def check_argv(argv: list[str]) -> None:
    """Refuse a command that is not the default one: after ``dva train`` only the preset, the dataset,
    places and :data:`MACHINE_KEYS` (each once).

    Raises:
        ValueError: naming the token that does not belong.
    """
    allowed = ("--preset", "--data.dataset") + PLACES + MACHINE_KEYS
    if argv[:2] != ["dva", "train"] or len(argv) % 2:
        raise ValueError(f"not a `dva train KEY VALUE ...` command: {argv}")
    keys = argv[2::2]
    bad = [k for k in keys if k not in allowed] + [k for k in set(keys) if keys.count(k) > 1]
    missing = [k for k in ("--preset", "--data.dataset", "--data.root", "--output_dir") if k not in keys]
    if bad or missing:
        raise ValueError(f"the default command takes only {allowed}; got extra/repeated {bad}, missing {missing}")


# Config keys added after runs were recorded, each with the value at which it changes nothing (its
# default): at that value it is left out of a run's settings, so adding such a key to the config does
# not rename (and so re-run) every recorded run. A key added later with an "off" default goes here.
UNUSED_AT: dict[str, Any] = {"train.ica_lr": None, "loss.w_anchor": 0.0}


def run_settings(argv: list[str]) -> dict[str, Any]:
    """What a run's result depends on: the command less places and machine settings, the resolved
    config (the packaged preset now), and the trainer's data-scaled rules."""
    from dva.config import AUTO_STEPS, AUTO_VAL_CLASSES, TRAINABLE_DEFAULTS, load_config

    keys = argv[2::2]
    args = dict(zip(keys, argv[3::2]))
    cfg = load_config(args["--preset"], ["--data.dataset", args["--data.dataset"]]).to_dict()
    cfg.pop("output_dir", None)
    cfg["data"].pop("root", None)
    for k in ("cache_dir", "threads"):
        cfg["train"].pop(k, None)
    for key, off in UNUSED_AT.items():  # a later-added key at its "unused" value: not a setting of the run
        section, name = key.split(".")
        if name in cfg[section] and cfg[section][name] == off:
            del cfg[section][name]
    # Through JSON: what spec.json holds compares equal to it (tuples become lists).
    return json.loads(json.dumps({"command": settings_of(user_command(argv)), "config": cfg,
                                  "auto_steps": AUTO_STEPS, "auto_val_classes": AUTO_VAL_CLASSES,
                                  "trainable_defaults": TRAINABLE_DEFAULTS}))


def digest(settings: dict[str, Any]) -> str:
    """Eight hex digits naming :func:`run_settings` (the run folder's suffix)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def current_digest(preset: str, dataset: str) -> str:
    """The settings digest the default command of ``(preset, dataset)`` resolves to now (places and
    machine settings do not enter it): a recorded run with another was made with an earlier preset or rule."""
    return digest(run_settings(default_argv(preset, dataset, "ROOT", "RUN", 1, "CACHE")))


def is_current(run: dict[str, Any]) -> bool:
    """Whether a recorded run (``preset``, ``dataset``, ``settings_digest``) is what the command gives now."""
    return run.get("settings_digest") == current_digest(run["preset"], run["dataset"])


# ----------------------------------------------------------------------------- what the data give
def split_facts(dataset: str, root: str, preset: str = PRESET_ORDER[0]) -> dict[str, Any]:
    """The reader's open split of ``root`` (rule, classes and images of each side) and what ``preset``'s
    default command makes of it: hold-out, batch and budget (the trainer's own functions:
    ``prepare_data``, ``resolve_budget``). Lists files; opens no image."""
    from dva.config import load_config
    from dva.data import load_split
    from dva_train.budget import resolve_budget
    from dva_train.train import prepare_data

    spec = dataset_spec(dataset)
    with warnings.catch_warnings(record=True) as caught:  # e.g. a subset's counts: recorded, not printed
        warnings.simplefilter("always")
        split = load_split(spec.reader, root, "open")
        cfg = load_config(preset, ["--data.dataset", spec.reader, "--data.root", root])
        data = prepare_data(cfg)
    budget = resolve_budget(cfg.train, len(data.train_labels), data.batch.size)
    n_val = len(set(data.eval_labels.tolist())) if data.eval_name == "val" else 0
    return {"reader": spec.reader, "rule": split.rule,
            "train_classes": len({r.label for r in split.train}), "train_images": len(split.train),
            "test_classes": len({r.label for r in split.test}), "test_images": len(split.test),
            "default_run": {"val_classes": n_val, "val_images": len(data.eval_paths) if n_val else 0,
                            "train_images": len(data.train_labels), "batch": list(data.batch),
                            "steps": budget.steps, "rule": budget.rule, "eval_split": data.eval_name},
            "warnings": sorted({str(w.message) for w in caught}), "approximate": False}


def approximate_facts(dataset: str, preset: str = PRESET_ORDER[0]) -> dict[str, Any]:
    """:func:`split_facts` without the data (``--plan`` elsewhere): the harness's image counts, the
    hold-out at the auto rule's fraction, the preset's batch; ``approximate`` says so."""
    from dva.config import AUTO_VAL_CLASSES, load_config
    from dva_train.budget import resolve_budget

    spec = dataset_spec(dataset)
    tc = load_config(preset).train
    n = round(spec.images[0] * (1.0 - AUTO_VAL_CLASSES["fraction"]))
    batch = tc.classes_per_batch * tc.images_per_class
    budget = resolve_budget(tc, n, batch)
    return {"reader": spec.reader, "rule": "", "train_images": spec.images[0], "test_images": spec.images[1],
            "default_run": {"train_images": n, "batch": [tc.classes_per_batch, tc.images_per_class],
                            "steps": budget.steps, "rule": budget.rule},
            "approximate": True}


# ----------------------------------------------------------------------------- estimates and sittings
def estimate(costs: dict, preset: str, steps: int, images: int) -> tuple[float | None, str]:
    """Seconds of one default run (a DVA run of ``steps`` steps, the full budget: early stopping only
    shortens it), from the measured runs (:mod:`benchmarks.datasets.costs`), and where it came from.

    A backbone never measured (Lite0, Lite1) takes the measured cost of the same family's
    nearest model, scaled by the pixels per image: a rough figure, labelled so.
    """
    from dva.config import load_config

    b = load_config(preset).backbone
    ov = ["--train.steps", str(steps)]
    est = K.estimate(costs, b.name, b.img_size, ov, False, images)
    if est is not None:
        return est, "measured"
    family = b.name.rstrip("0123456789")
    near = sorted((m, s) for (m, s, kind) in costs if kind == "dva" and m.rstrip("0123456789") == family)
    if not near:
        return None, "no measured run of this backbone"
    m, s = near[0]
    scaled = K.estimate(costs, m, s, ov, False, images)
    return scaled * (b.img_size / s) ** 2, f"scaled from {m} at {s} px"


def sittings(runs: list[tuple[str, str, float | None]], budget_s: float = SITTING_S) -> list[list[tuple[str, str]]]:
    """Consecutive groups of ``(preset, dataset, seconds)`` runs, each estimated within ``budget_s``
    (a run with no estimate counts as ``budget_s / 4``; a single run over the budget is a sitting alone)."""
    out: list[list[tuple[str, str]]] = []
    total = math.inf
    for preset, ds, sec in runs:
        sec = budget_s / 4 if sec is None else sec
        if total + sec > budget_s:
            out.append([])
            total = 0.0
        out[-1].append((preset, ds))
        total += sec
    return out


def sitting_commands(group: list[tuple[str, str]]) -> list[str]:
    """The ``python -m benchmarks.defaults.run`` commands of a sitting: one per run of datasets shared
    by consecutive presets."""
    by_preset: dict[str, list[str]] = {}
    for p, d in group:
        by_preset.setdefault(p, []).append(d)
    cmds: list[tuple[list[str], list[str]]] = []
    for p, ds in by_preset.items():
        if cmds and cmds[-1][1] == ds:
            cmds[-1][0].append(p)
        else:
            cmds.append(([p], ds))
    return [f"python -m benchmarks.defaults.run --presets {','.join(ps)} --datasets {','.join(ds)}"
            for ps, ds in cmds]


def env_threads(threads: int) -> dict[str, str]:
    """The child's environment: offline, ``threads`` for OpenMP/MKL, the repository importable."""
    from benchmarks import _common as C

    return C.child_env(dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                            HF_HUB_OFFLINE="1"))
