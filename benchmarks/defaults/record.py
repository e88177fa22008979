"""A default run's record, read from its run folder (``summary.json``, ``log.jsonl``), and its comparisons.

* :func:`parse_run` — budget and its source, validation hold-out, batch, evaluation split, the
  frozen and trained metrics on validation and test, train seconds, images;
* :func:`selection_split` — which split chose the saved model (and ended training early): never
  the test split, or the record is refused;
* :func:`tuned_row` — the datasets harness's tuned DVA row of a (dataset, backbone);
* :func:`compare` — the default run against the frozen backbone and that row, in points (%).

Pure functions of the files; nothing here trains.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks import _common as C

TUNED_ROW = "dva"  # the datasets harness's main row the default command is held against
_HELD = re.compile(r"(\d+) of the (\d+) training classes are held out")
_TOO_FEW = re.compile(r"the training split has (\d+) classes \(<")
_AUTO = re.compile(r"= (\d+) steps, clamped to \[(\d+), (\d+)\]")


class SelectedOnTestError(ValueError):
    """A run whose saved model was chosen, or whose training was stopped, on the test split."""


def read_log(path: Path) -> dict[str, Any]:
    """The rows of a run's ``log.jsonl`` that the record needs: the last ``setup`` row and the last
    ``validation`` note (the hold-out rule's decision); ``{}`` for a missing file."""
    out: dict[str, Any] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") in ("setup", "validation"):
            out[row["kind"]] = row
    return out


def held_out(note: str) -> tuple[int | None, int | None]:
    """``(held-out classes, training classes before the hold-out)`` from the ``validation`` note."""
    m = _HELD.search(note or "")
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _TOO_FEW.search(note or "")
    return (0, int(m.group(1))) if m else (None, None)


def budget_source(rule: str) -> dict[str, Any]:
    """Where a run's budget came from, from its rule (``summary.json`` ``budget.rule``).

    Returns:
        ``{"source": "auto" | "steps" | "epochs" | "?", "raw": the auto rule's epochs x batches,
        "bound": "min" | "max" | None}``: ``bound`` says that the auto rule's clamp set the count.
    """
    rule = rule or ""
    src = "auto" if rule.startswith("train.steps=auto") else "epochs" if rule.startswith("train.epochs=") \
        else "steps" if rule.startswith("train.steps=") else "?"
    m = _AUTO.search(rule)
    raw = int(m.group(1)) if m else None
    bound = None
    if m:
        lo, hi = int(m.group(2)), int(m.group(3))
        bound = "min" if raw < lo else "max" if raw > hi else None
    return {"source": src, "raw": raw, "bound": bound}


def selection_split(summary: dict[str, Any], where: str = "summary.json") -> str | None:
    """The split that chose the saved model (``val``), or None when nothing was chosen.

    Raises:
        SelectedOnTestError: ``best.safetensors`` chosen on the test split, the tested model said
            to be chosen on it, or an early stop while evaluating on it.
    """
    best = (summary.get("checkpoints") or {}).get("best")
    model = summary.get("test_model") or {}
    splits = [s for s in ((best or {}).get("split"), model.get("chosen_on")) if s]
    if "test" in splits:
        raise SelectedOnTestError(f"{where}: the saved model was chosen on the test split "
                                 f"(best: {best}, test_model: {model}); a default run must select on validation")
    if summary.get("early_stop") and summary.get("eval_split") != "val":
        raise SelectedOnTestError(f"{where}: training stopped early while evaluating on the "
                                 f"{summary.get('eval_split')} split: {summary['early_stop']}")
    return splits[0] if splits else None


def parse_run(summary: dict[str, Any], log: dict[str, Any], where: str = "summary.json") -> dict[str, Any]:
    """The record of one default run from its ``summary.json`` and :func:`read_log` rows.

    Metrics stay as the trainer wrote them (fractions). Without a hold-out (too few classes) the
    evaluation split is the test split: its figures are the test ones and validation is None.
    """
    on_val = summary.get("eval_split") == "val"
    setup = log.get("setup") or {}
    n_val, n_classes = held_out((log.get("validation") or {}).get("message", ""))
    data = summary.get("data") or {}
    if "val_classes" in data:  # recorded by the trainer since train.eval_every=auto (else: the log's note)
        n_val, n_classes = data["val_classes"], data["train_classes"] + data["val_classes"]
    budget = summary.get("budget") or {}
    batch = summary.get("batch") or {}
    return {
        "status": summary.get("status"), "steps": summary.get("steps"), "budget_steps": budget.get("steps"),
        "budget_rule": budget.get("rule"), **{f"budget_{k}": v for k, v in budget_source(budget.get("rule")).items()},
        "val_classes": n_val, "train_classes_before_holdout": n_classes,
        "validation_note": (log.get("validation") or {}).get("message"),
        "batch": [batch.get("classes_per_batch"), batch.get("images_per_class")],
        "eval_split": summary.get("eval_split"), "early_stop": summary.get("early_stop"),
        "selection_split": selection_split(summary, where),
        "model_step": (summary.get("test_model") or {}).get("step"), "eval_every": summary.get("eval_every"),
        "val_frozen": summary.get("frozen_metrics") if on_val else None,
        "val_trained": summary.get("metrics") if on_val else None,
        "test_frozen": summary.get("test_frozen_metrics") if on_val else summary.get("frozen_metrics"),
        "test_trained": summary.get("test_metrics") if on_val else summary.get("metrics"),
        "train_seconds": summary.get("train_seconds"), "prep_seconds": summary.get("prep_seconds"),
        "train_images": setup.get("train_images"), "eval_images": setup.get("eval_images"),
        "trainable_params": (summary.get("params") or {}).get("trainable_params"),
        "collapse": summary.get("collapse"),
    }


def read_run(run_dir: Path) -> dict[str, Any]:
    """:func:`parse_run` of a finished run folder.

    Raises:
        FileNotFoundError: no ``summary.json`` (the run did not finish).
    """
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run did not finish (no summary.json)")
    return parse_run(json.loads(path.read_text()), read_log(run_dir / "log.jsonl"), str(path))


# ----------------------------------------------------------------------------- comparisons
def tuned_row(dataset: str, backbone: str | None, results: Path = C.RESULTS / "datasets") -> dict[str, Any] | None:
    """The datasets harness's tuned DVA row of ``(dataset, backbone)``: ``{json, label, r1, r1_sd,
    map_r, map_r_sd, seeds, steps}`` in percent; None where no main JSON (or no such row) exists."""
    if backbone is None:
        return None
    path = Path(results) / f"{dataset}_{backbone}_main.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    s = res.get("settings") or {}
    if (s.get("dataset"), s.get("backbone")) != (dataset, backbone):
        raise ValueError(f"{path}: holds ({s.get('dataset')}, {s.get('backbone')}), not ({dataset}, {backbone})")
    row = next((r for r in res.get("rows") or [] if r.get("name") == TUNED_ROW), None)
    if row is None:
        return None
    st = row["stats"]
    return {"json": C.repo_relative(path), "label": row.get("label"), "r1": st["recall@1"][0],
            "r1_sd": st["recall@1"][1], "map_r": st["map@r"][0], "map_r_sd": st["map@r"][1],
            "seeds": row.get("seeds"), "steps": row.get("steps")}


def _pct(m: dict[str, float] | None, key: str) -> float | None:
    return None if not m or m.get(key) is None else 100.0 * float(m[key])


def compare(rec: dict[str, Any], tuned: dict[str, Any] | None) -> dict[str, Any]:
    """The run's test R@1 and MAP@R (%) against the frozen backbone's (same run) and the tuned row's."""
    r1, mp = _pct(rec.get("test_trained"), "recall@1"), _pct(rec.get("test_trained"), "map@r")
    fr1, fmp = _pct(rec.get("test_frozen"), "recall@1"), _pct(rec.get("test_frozen"), "map@r")

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {"test_r1": r1, "test_map_r": mp, "frozen_test_r1": fr1, "frozen_test_map_r": fmp,
            "d_r1_vs_frozen": diff(r1, fr1), "d_map_r_vs_frozen": diff(mp, fmp),
            "tuned_r1": tuned and tuned["r1"], "tuned_map_r": tuned and tuned["map_r"],
            "d_r1_vs_tuned": diff(r1, tuned and tuned["r1"]), "d_map_r_vs_tuned": diff(mp, tuned and tuned["map_r"])}
