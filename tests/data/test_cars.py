"""Stanford Cars reader in its three layouts (cars_annos.mat, devkit, Kaggle CSV)."""
from __future__ import annotations

import re

import pytest

from dva.data import load_split
from dva.data.protocols import PUBLISHED

LAYOUTS = ["annos", "devkit", "devkit_labels_in_devkit", "kaggle"]


def _build(fx, root, layout):
    if layout == "annos":
        return fx.build_cars_annos(root)
    if layout == "kaggle":
        return fx.build_cars_kaggle(root)
    return fx.build_cars_devkit(root, labels_in_devkit=layout.endswith("in_devkit"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_protocol_class_ranges(tmp_path, fx, layout):
    _build(fx, tmp_path, layout)
    s = load_split("cars196", str(tmp_path), "open")
    assert s.train_classes == list(range(98)) and s.test_classes == list(range(98, 196))
    assert len(s.train) == len(s.test) == 196
    assert s.class_names[195] == "Ram C/V Cargo Van Minivan 2012"
    s = load_split("cars196", str(tmp_path), "closed")
    assert s.train_classes == s.test_classes == list(range(196))
    assert len(s.train) == len(s.test) == 196


def test_annos_boxes_zero_based(tmp_path, fx):
    fx.build_cars_annos(tmp_path)
    s = load_split("cars196", str(tmp_path), "closed")
    # corners (5, 7)-(104, 56) inclusive, 1-based
    assert {r.box for r in s.train} == {(4.0, 6.0, 100.0, 50.0)}
    r = next(r for r in s.train if r.path.endswith("000003.jpg"))
    assert r.label == 1


def test_kaggle_files_found_in_class_folders(tmp_path, fx):
    fx.build_cars_kaggle(tmp_path)
    s = load_split("cars196", str(tmp_path), "closed")
    r = next(r for r in s.test if r.label == 195)
    assert "/test/Ram C-V Cargo Van Minivan 2012/" in r.path
    assert r.box == (2.0, 3.0, 48.0, 57.0)


def test_devkit_without_test_labels(tmp_path, fx):
    fx.build_cars_devkit(tmp_path)
    (tmp_path / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(FileNotFoundError, match="cars_test_annos_withlabels.mat"):
        load_split("cars196", str(tmp_path), "open")


def test_class_out_of_range(tmp_path, fx):
    fx.build_cars_kaggle(tmp_path)
    path = tmp_path / "anno_test.csv"
    fx.rewrite_line(path, 7, "00007.jpg,3,4,50,60,197")
    with pytest.raises(ValueError, match=re.escape(f"{path}:7: class 197 outside 1..196")):
        load_split("cars196", str(tmp_path), "open")


def test_kaggle_malformed_line(tmp_path, fx):
    fx.build_cars_kaggle(tmp_path)
    path = tmp_path / "anno_train.csv"
    fx.rewrite_line(path, 3, "00003.jpg,3,4,50")
    with pytest.raises(ValueError, match=fx.line_error(path, 3)):
        load_split("cars196", str(tmp_path), "open")


def test_corrupt_mat_named(tmp_path, fx):
    fx.build_cars_annos(tmp_path)
    (tmp_path / "cars_annos.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="cars_annos.mat"):
        load_split("cars196", str(tmp_path), "open")


def test_missing_image_listed(tmp_path, fx):
    fx.build_cars_annos(tmp_path)
    (tmp_path / "car_ims" / "000042.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000042.jpg"):
        load_split("cars196", str(tmp_path), "open")


def test_no_known_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="cars_annos.mat"):
        load_split("cars196", str(tmp_path), "open")


def test_published_cars_counts_are_consistent():
    # Some sources quote 8,054 / 8,154 for the open split; the dataset has 16,185 images in all,
    # so the open test side must hold 16,185 - 8,054 = 8,131 (the literature's number).
    pub = PUBLISHED["cars196"]
    assert pub.open_images == (8_054, 8_131)
    assert sum(pub.open_images) == sum(pub.closed_images) == pub.total_images == 16_185
