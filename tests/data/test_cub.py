"""CUB-200-2011 reader on a fixture tree in the official format (200 classes, 2 images each)."""
from __future__ import annotations

import re

import pytest

from dva.data import DatasetWarning, load_split


def test_open_protocol_class_ranges(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    s = load_split("cub200", str(tmp_path), "open")  # the parent of CUB_200_2011 works too
    assert s.name == "cub200" and s.protocol == "open"
    assert s.train_classes == list(range(100))  # CUB classes 1-100
    assert s.test_classes == list(range(100, 200))  # CUB classes 101-200
    assert len(s.train) == len(s.test) == 200
    assert s.class_names[0] == "Bird_1" and s.class_names[199] == "Bird_200"
    assert all(r.path.startswith(str(base / "images")) for r in s.train + s.test)
    assert s.query is None and s.gallery is None


def test_closed_protocol_uses_official_flags(tmp_path, fx):
    fx.build_cub(tmp_path)
    s = load_split("cub200", str(tmp_path / "CUB_200_2011"), "closed")
    assert s.train_classes == s.test_classes == list(range(200))
    assert all(r.path.endswith("_0000.jpg") for r in s.train)  # flag 1 = train
    assert all(r.path.endswith("_0001.jpg") for r in s.test)


def test_boxes_and_labels(tmp_path, fx):
    fx.build_cub(tmp_path)
    s = load_split("cub200", str(tmp_path), "closed")
    r = next(r for r in s.test if r.path.endswith("Bird_7_0001.jpg"))
    assert r.label == 6
    assert r.box == (7.0, 2.5, 17.0, 20.0)


def test_boxes_optional(tmp_path, fx):
    fx.build_cub(tmp_path, boxes=False)
    s = load_split("cub200", str(tmp_path), "open")
    assert all(r.box is None for r in s.train + s.test)


def test_counts_differ_from_published_warn_loudly(tmp_path, fx):
    fx.build_cub(tmp_path)
    with pytest.warns(DatasetWarning, match="5,864 / 5,924"):
        s = load_split("cub200", str(tmp_path), "open")
    assert any("NOT be comparable" in w for w in s.warnings)
    with pytest.raises(ValueError, match="strict_counts"):
        load_split("cub200", str(tmp_path), "open", strict_counts=True)


def test_missing_annotation_file_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    (base / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(base / "train_test_split.txt"))):
        load_split("cub200", str(tmp_path), "open")


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.txt"):
        load_split("cub200", str(tmp_path), "open")


def test_malformed_line_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "image_class_labels.txt", 5, "5")
    with pytest.raises(ValueError, match=fx.line_error(base / "image_class_labels.txt", 5)):
        load_split("cub200", str(tmp_path), "open")


def test_non_integer_label_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "image_class_labels.txt", 9, "9 five")
    with pytest.raises(ValueError, match=fx.line_error(base / "image_class_labels.txt", 9)):
        load_split("cub200", str(tmp_path), "open")


def test_label_outside_classes_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "image_class_labels.txt", 3, "3 201")
    with pytest.raises(ValueError, match=r"image_class_labels.txt:3: class id 201"):
        load_split("cub200", str(tmp_path), "open")


def test_bad_split_flag_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "train_test_split.txt", 4, "4 2")
    with pytest.raises(ValueError, match=fx.line_error(base / "train_test_split.txt", 4)):
        load_split("cub200", str(tmp_path), "closed")


def test_bad_box_named(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "bounding_boxes.txt", 2, "2 1 1 0 5")
    with pytest.raises(ValueError, match=fx.line_error(base / "bounding_boxes.txt", 2)):
        load_split("cub200", str(tmp_path), "open")


def test_duplicate_and_mismatched_ids(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    fx.rewrite_line(base / "images.txt", 2, "1 001.Bird_1/Bird_1_0001.jpg")
    with pytest.raises(ValueError, match=r"images.txt:2: duplicate id '1'"):
        load_split("cub200", str(tmp_path), "open")
    base = fx.build_cub(tmp_path / "b")
    fx.rewrite_line(base / "image_class_labels.txt", 2, "9999 1")
    with pytest.raises(ValueError, match="9999"):
        load_split("cub200", str(tmp_path / "b"), "open")


def test_missing_images_listed(tmp_path, fx):
    base = fx.build_cub(tmp_path)
    victim = base / "images" / "150.Bird_150" / "Bird_150_0001.jpg"
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(victim))):
        load_split("cub200", str(tmp_path), "open")


def test_unknown_protocol(tmp_path, fx):
    fx.build_cub(tmp_path)
    with pytest.raises(ValueError, match="open, closed"):
        load_split("cub200", str(tmp_path), "zeroshot")
