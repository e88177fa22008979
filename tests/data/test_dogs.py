"""Stanford Dogs reader: list .mat files, Images/ and optional XML annotations."""
from __future__ import annotations

import shutil

import pytest

from dva.data import load_split


def test_protocols(tmp_path, fx):
    fx.build_dogs(tmp_path)
    s = load_split("dogs", str(tmp_path), "open")
    assert s.train_classes == list(range(60)) and s.test_classes == list(range(60, 120))
    assert len(s.train) == len(s.test) == 120
    s = load_split("dogs", str(tmp_path), "closed")
    assert s.train_classes == s.test_classes == list(range(120))
    assert all(r.path.endswith("_0.jpg") for r in s.train)
    assert s.class_names[0] == "Breed_1"
    assert any("12,000 / 8,580" in w for w in s.warnings)


def test_largest_box_from_xml(tmp_path, fx):
    fx.build_dogs(tmp_path)
    s = load_split("dogs", str(tmp_path), "open")
    assert {r.box for r in s.train} == {(99.0, 99.0, 300.0, 200.0)}


def test_without_annotations(tmp_path, fx):
    fx.build_dogs(tmp_path, annotations=False)
    s = load_split("dogs", str(tmp_path), "open")
    assert all(r.box is None for r in s.train + s.test)


def test_file_list_only_supports_open(tmp_path, fx):
    fx.build_dogs(tmp_path)
    (tmp_path / "lists" / "train_list.mat").unlink()
    assert len(load_split("dogs", str(tmp_path), "open").test) == 120
    with pytest.raises(FileNotFoundError, match="train_list.mat"):
        load_split("dogs", str(tmp_path), "closed")


def test_lists_in_root(tmp_path, fx):
    fx.build_dogs(tmp_path)
    for f in (tmp_path / "lists").iterdir():
        shutil.move(str(f), tmp_path / f.name)
    assert len(load_split("dogs", str(tmp_path), "closed").train) == 120


def test_malformed_xml_named(tmp_path, fx):
    fx.build_dogs(tmp_path)
    xml = tmp_path / "Annotation" / "n02000003-Breed_3" / "n02000003_1"
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match=str(xml)):
        load_split("dogs", str(tmp_path), "open")


def test_missing_lists(tmp_path, fx):
    fx.build_dogs(tmp_path)
    shutil.rmtree(tmp_path / "lists")
    with pytest.raises(FileNotFoundError, match="train_list.mat"):
        load_split("dogs", str(tmp_path), "open")
