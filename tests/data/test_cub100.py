"""cub100 reader: the real subset (skipped when absent) and a fixture in its layout."""
from __future__ import annotations

import os

import pytest

from dva.data import load_split

# The ``cub100`` fixture (tests/conftest.py) finds $DVA_CUB100 or <repo>/../shared/data/cub100
# and skips when neither exists.


def test_real_open_counts(cub100):
    s = load_split("cub100", str(cub100), "open", strict_counts=True)
    assert (len(s.train), len(s.test)) == (2_949, 2_953)
    assert s.train_classes == list(range(50)) and s.test_classes == list(range(50, 100))
    assert not s.warnings
    assert s.class_names[0] == "Black_footed_Albatross"
    assert all(os.path.isabs(r.path) for r in s.test)


def test_real_closed_counts(cub100):
    s = load_split("cub100", str(cub100), "closed", strict_counts=True)
    assert (len(s.train), len(s.test)) == (2_999, 2_903)
    assert s.train_classes == s.test_classes == list(range(100))


def test_fixture_layout_and_train_flag(tmp_path, fx):
    fx.build_cub100(tmp_path)
    s = load_split("cub100", str(tmp_path), "open")
    assert s.train_classes == list(range(50)) and s.test_classes == list(range(50, 100))
    s = load_split("cub100", str(tmp_path), "closed")
    assert all(r.path.endswith("0000.jpg") for r in s.train)  # flag 0 = train
    assert all(r.path.endswith("0001.jpg") for r in s.test)
    assert any("2,999 / 2,903" in w for w in s.warnings)


def test_fixture_malformed(tmp_path, fx):
    fx.build_cub100(tmp_path)
    fx.rewrite_line(tmp_path / "image_class_labels.txt", 12, "11 3")  # separator without comma
    with pytest.raises(ValueError, match=fx.line_error(tmp_path / "image_class_labels.txt", 12)):
        load_split("cub100", str(tmp_path), "open")


def test_fixture_class_ids_must_start_at_zero(tmp_path, fx):
    fx.build_cub100(tmp_path)
    text = (tmp_path / "classes.txt").read_text().replace("0, Species_0\n", "100, Species_0\n")
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(ValueError, match="classes.txt"):
        load_split("cub100", str(tmp_path), "open")


def test_closed_without_split_file(tmp_path, fx):
    fx.build_cub100(tmp_path)
    (tmp_path / "train_test_split.txt").unlink()
    assert len(load_split("cub100", str(tmp_path), "open").train) == 100
    with pytest.raises(FileNotFoundError, match="train_test_split.txt"):
        load_split("cub100", str(tmp_path), "closed")
