"""The rules the README and docs/METHOD.md state in words are the ones in force (dva.config's constants)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dva.config import AUTO_STEPS, AUTO_VAL_CLASSES, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _flat(path: Path) -> str:
    """The file's text with every run of whitespace as one space (sentences wrap across lines)."""
    return re.sub(r"\s+", " ", path.read_text())


def stated_rules() -> list[tuple[str, str]]:
    """``(file, phrase)``: each rule as the docs word it, built from the constants in force."""
    e, lo, hi = AUTO_STEPS["epochs"], AUTO_STEPS["min"], AUTO_STEPS["max"]
    n, frac, least = int(AUTO_VAL_CLASSES["min_classes"]), AUTO_VAL_CLASSES["fraction"], int(AUTO_VAL_CLASSES["min"])
    t = TrainConfig()
    return [
        ("README.md", f"by default {e} passes over the training images, at least {lo} and at most {hi} steps"),
        ("README.md", f"with {n} or more training classes, {100 * frac:.0f}% of them (at least {least};"),
        # A folder tree trains on its first half of the class folders: twice the classes a hold-out needs.
        ("README.md", f"so this takes {2 * n} folders or more"),
        ("README.md", f"**batch**: {t.classes_per_batch} classes x {t.images_per_class} images"),
        ("docs/METHOD.md", f"(n_train // batch), {lo}, {hi})"),
        ("docs/METHOD.md", f"`max({least}, round({100 * frac:.0f}%))`"),
        ("docs/METHOD.md", f"({t.classes_per_batch} classes × {t.images_per_class} images [DVF])"),
    ]


@pytest.mark.parametrize("file,phrase", stated_rules())
def test_the_docs_state_the_rule_in_force(file, phrase):
    assert phrase in _flat(ROOT / file), f"{file} no longer says {phrase!r}: the constant or the text changed"


@pytest.mark.parametrize("table,key,value", [(AUTO_STEPS, "epochs", 7), (AUTO_STEPS, "min", 241),
                                             (AUTO_STEPS, "max", 2001), (AUTO_VAL_CLASSES, "fraction", 0.25),
                                             (AUTO_VAL_CLASSES, "min_classes", 12), (AUTO_VAL_CLASSES, "min", 3)])
def test_a_changed_constant_would_be_caught(monkeypatch, table, key, value):
    before = set(stated_rules())
    monkeypatch.setitem(table, key, value)
    changed = set(stated_rules()) - before
    assert changed and all(phrase not in _flat(ROOT / file) for file, phrase in changed)
