"""NABirds reader: 555 leaf classes with gappy ids, hierarchy-only classes ignored."""
from __future__ import annotations

import pytest

from dva.data import load_split


def test_open_protocol_255_300(tmp_path, fx):
    fx.build_nabirds(tmp_path)
    s = load_split("nabirds", str(tmp_path), "open")
    assert s.train_classes == list(range(255))
    assert s.test_classes == list(range(255, 555))
    assert len(s.train) == 2 * 255 and len(s.test) == 2 * 300
    # ids are ranks of the NABirds ids that carry images, in ascending order
    assert s.class_names[0] == f"Leaf bird {fx.nabirds_leaves[0]} (Adult)"
    assert s.class_names[554] == f"Leaf bird {fx.nabirds_leaves[-1]} (Adult)"
    assert "Birds" not in s.class_names.values()


def test_closed_protocol_and_boxes(tmp_path, fx):
    fx.build_nabirds(tmp_path)
    s = load_split("nabirds", str(tmp_path / "nabirds"), "closed")
    assert len(s.train) == len(s.test) == 555
    assert s.train_classes == s.test_classes == list(range(555))
    assert {r.box for r in s.train} == {(0.0, 3.0, 40.0, 50.0)}
    assert {r.box for r in s.test} == {(1.0, 3.0, 40.0, 50.0)}


def test_counts_warning(tmp_path, fx):
    fx.build_nabirds(tmp_path)
    s = load_split("nabirds", str(tmp_path), "closed")
    assert any("23,929 / 24,633" in w for w in s.warnings)
    s = load_split("nabirds", str(tmp_path), "open")  # no published open counts: total checked
    assert any("48,562" in w for w in s.warnings)


def test_label_not_in_classes(tmp_path, fx):
    base = fx.build_nabirds(tmp_path)
    line = (base / "image_class_labels.txt").read_text().splitlines()[6]
    fx.rewrite_line(base / "image_class_labels.txt", 7, line.split()[0] + " 77777")
    with pytest.raises(ValueError, match=fx.line_error(base / "image_class_labels.txt", 7)):
        load_split("nabirds", str(tmp_path), "open")


def test_box_for_unknown_image(tmp_path, fx):
    base = fx.build_nabirds(tmp_path)
    fx.rewrite_line(base / "bounding_boxes.txt", 3, "nonexistent 1 2 3 4")
    with pytest.raises(ValueError, match=fx.line_error(base / "bounding_boxes.txt", 3)):
        load_split("nabirds", str(tmp_path), "open")
