"""Issue 24 through the command line: `dva data-info` and `dva eval` say what is wrong with a split.

(End-to-end checks of the dataset rules of tests/data/test_listing.py and the evaluation refusals
of tests/test_evaluation.py; the model is replaced by a fake that counts its calls.)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dva_cli.cli import main


class CountingEmbedder:
    """Stands in for the model: a fixed vector per class folder, and a count of images embedded."""

    fingerprint, img_size, dim, runtime = "fake", 8, 4, "torch"

    def __init__(self) -> None:
        self.embedded = 0

    def embed_paths(self, paths, batch_size=64, num_workers=0, progress=True):
        self.embedded += len(paths)
        return np.stack([np.eye(4)[len(Path(p).parent.name) % 4] + 0.01 * i for i, p in enumerate(paths)])


@pytest.fixture
def model(monkeypatch):
    """The fake model `dva eval` gets; ``model.built`` counts how often one was built."""
    from dva_cli import _model

    fake = CountingEmbedder()
    fake.built = 0

    def build(args):
        fake.built += 1
        return fake

    monkeypatch.setattr(_model, "embedder_from_args", build)
    return fake


def _tree(fx, root: Path, classes, per_class=4) -> Path:
    for c in classes:
        for i in range(per_class):
            fx.touch_image(root / c / f"{i}.png")
    return root


def test_eval_refuses_a_one_test_class_split_before_building_the_model(tmp_path, fx, model, capsys):
    root = _tree(fx, tmp_path, ("Fox_Sparrow", "Henslow_Sparrow"))
    assert main(["eval", "--dataset", "folder", "--root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dva eval: error: folder (open) test split: the split has 1 class(es) ('Henslow_Sparrow')" in err
    assert "cannot measure retrieval" in err and "Traceback" not in err
    assert (model.built, model.embedded) == (0, 0)


def test_data_info_says_eval_will_refuse(tmp_path, fx, capsys):
    root = _tree(fx, tmp_path, ("Fox_Sparrow", "Henslow_Sparrow"))
    assert main(["data-info", "--dataset", "folder", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "PROBLEM: `dva eval` will refuse this split: folder (open) test split: the split has 1 class(es)" in err
    assert main(["data-info", "--dataset", "folder", "--root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["evaluation"]["refused"].startswith("folder (open) test split: the split has 1 class(es)")
    assert info["test_classes"] == 1


def test_data_info_on_the_audit_tree_counts_each_photo_once(tmp_path, fx, capsys):
    s = _tree(fx, tmp_path / "s", ("American_Goldfinch", "American_Redstart", "Fox_Sparrow", "Henslow_Sparrow"), 6)
    os.symlink("..", s / "American_Redstart" / "loop_up")
    os.symlink("American_Goldfinch", s / "Goldfinch_link")
    assert main(["data-info", "--dataset", "folder", "--root", str(s), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["train_images"], info["test_images"], info["test_class_names"]) == (
        12, 12, ["Fox_Sparrow", "Henslow_Sparrow"])
    assert len(info["warnings"]) == 2 and info["evaluation"] == {"refused": None, "warnings": []}
    assert main(["data-info", "--dataset", "folder", "--root", str(s)]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: folder: {s / 'American_Redstart' / 'loop_up'}: a symlink to {s}" in err
    assert f"WARNING: folder: class folder {s / 'Goldfinch_link'} is a symlink" in err


def test_data_info_and_eval_refuse_a_photo_in_two_classes(tmp_path, fx, model, capsys):
    root = _tree(fx, tmp_path, ("a", "b", "c", "d"))
    os.symlink(root / "a" / "0.png", root / "c" / "copy.png")
    for cmd in ("data-info", "eval"):
        assert main([cmd, "--dataset", "folder", "--root", str(root)]) == 2
        err = capsys.readouterr().err
        assert "train/test leak" in err and f"class 'a': {root / 'a' / '0.png'}" in err
        assert f"class 'c': {root / 'c' / 'copy.png'}" in err
    assert model.built == 0


def test_eval_excludes_a_lone_class_loudly(tmp_path, fx, model, capsys):
    root = _tree(fx, tmp_path, ("a", "b", "c", "d", "e"))
    for f in ("1.png", "2.png", "3.png"):
        (root / "e" / f).unlink()  # class e: one image, a query that can never be retrieved
    assert main(["eval", "--dataset", "folder", "--root", str(root), "--no-progress", "--k", "1,2"]) == 0
    out, err = capsys.readouterr()
    assert "WARNING: folder (open) test split: 1 of 3 query classes have a single image" in err and "'e'" in err
    assert "(scored: 8 of 9 queries)" in err
    assert out.startswith("folder (open, leave-one-out, 8 queries (1 EXCLUDED: no match to find), 3 classes)")
    assert (model.built, model.embedded) == (1, 9)
