"""Generic class-per-folder reader."""
from __future__ import annotations

import pytest

from dva.data import load_split


def _tree(fx, root, classes=("a", "b", "c", "d", "e"), per_class=2):
    for c in classes:
        for j in range(per_class):
            fx.touch_image(root / c / "sub" / f"{j}.png" if j else root / c / f"{j}.jpg")
    return root


def test_open_sorted_class_halves(tmp_path, fx):
    _tree(fx, tmp_path, classes=("zebra", "ant", "cat", "dog", "emu"))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / "readme.md").write_text("x")
    s = load_split("folder", str(tmp_path), "open")
    assert s.class_names == {0: "ant", 1: "cat", 2: "dog", 3: "emu", 4: "zebra"}
    assert s.train_classes == [0, 1] and s.test_classes == [2, 3, 4]  # C // 2 train
    assert len(s.train) == 4 and len(s.test) == 6  # nested files found, non-images ignored


def test_closed_needs_train_test(tmp_path, fx):
    _tree(fx, tmp_path)
    with pytest.raises(ValueError, match="closed protocol needs"):
        load_split("folder", str(tmp_path), "closed")


def test_train_val_test_layout(tmp_path, fx):
    _tree(fx, tmp_path / "train", per_class=2)
    _tree(fx, tmp_path / "val", classes=("a",), per_class=1)
    _tree(fx, tmp_path / "test", per_class=1)
    s = load_split("folder", str(tmp_path), "closed")
    assert len(s.train) == 11 and len(s.test) == 5
    assert s.train_classes == s.test_classes == [0, 1, 2, 3, 4]
    s = load_split("folder", str(tmp_path), "open")
    assert len(s.train) + len(s.test) == 16 and s.test_classes == [2, 3, 4]


def test_images_subfolder_and_empty_class(tmp_path, fx):
    _tree(fx, tmp_path / "images", classes=("a", "b", "c"))
    (tmp_path / "images" / "empty").mkdir()
    with pytest.warns(UserWarning, match="holds no images"):
        s = load_split("folder", str(tmp_path), "open")
    assert s.class_names == {0: "a", 1: "b", 2: "c"}
    assert any("empty" in w for w in s.warnings)


def test_too_few_classes(tmp_path, fx):
    _tree(fx, tmp_path, classes=("only",))
    with pytest.raises(ValueError, match="at least 2"):
        load_split("folder", str(tmp_path), "open")


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split("folder", str(tmp_path / "nope"), "open")
