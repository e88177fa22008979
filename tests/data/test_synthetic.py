"""Synthetic dataset generator and reader."""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from PIL import Image

from dva.data import load_split, make_synthetic


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    t0 = time.perf_counter()
    out = make_synthetic(str(root), num_classes=6, per_class=4, size=64, seed=3)
    return root, out, time.perf_counter() - t0


def test_layout_and_csvs(syn):
    root, out, _dt = syn
    assert out == str(root.resolve())
    assert (root / "images" / "class_005" / "img_0003.png").is_file()
    with open(root / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "label"] and len(rows) == 25
    assert rows[1] == ["images/class_000/img_0000.png", "0"]
    with open(root / "boxes.csv") as fh:
        boxes = list(csv.reader(fh))
    assert boxes[0] == ["path", "x", "y", "w", "h"] and len(boxes) == 25


def test_boxes_cover_the_object(syn):
    root, _out, _dt = syn
    with open(root / "boxes.csv") as fh:
        for row in list(csv.reader(fh))[1:]:
            x, y, w, h = map(int, row[1:])
            img = Image.open(root / row[0])
            assert img.size == (64, 64) and img.mode == "RGB"
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
            assert 64 * 0.25 <= max(w, h) <= 64 * 0.7  # object scale range of the generator


def test_deterministic_and_seed_dependent(syn, tmp_path):
    root, _out, _dt = syn
    make_synthetic(str(tmp_path / "a"), num_classes=6, per_class=4, size=64, seed=3)
    make_synthetic(str(tmp_path / "b"), num_classes=6, per_class=4, size=64, seed=4)
    rel = "images/class_002/img_0001.png"
    same = np.asarray(Image.open(tmp_path / "a" / rel))
    assert np.array_equal(same, np.asarray(Image.open(root / rel)))
    assert not np.array_equal(same, np.asarray(Image.open(tmp_path / "b" / rel)))
    assert (tmp_path / "a" / "boxes.csv").read_text() == (root / "boxes.csv").read_text()


def test_classes_differ_images_vary(syn):
    import csv

    from dva.data.synthetic import _class_style

    root, _out, _dt = syn
    a0 = np.asarray(Image.open(root / "images/class_000/img_0000.png"), dtype=float)
    a1 = np.asarray(Image.open(root / "images/class_000/img_0001.png"), dtype=float)
    assert np.abs(a0 - a1).mean() > 10  # position/scale/background vary within a class
    # Every class has its own look; a fine-grained pair (2j, 2j+1) shares shape and main colour.
    styles = [_class_style(c) for c in range(6)]
    assert len({tuple(sorted(st.items())) for st in styles}) == 6
    for j in range(3):
        a, b = styles[2 * j], styles[2 * j + 1]
        assert a["shape"] == b["shape"] and a["hue1"] == b["hue1"] and a["pattern"] != b["pattern"]
    assert styles[0]["shape"] != styles[2]["shape"] and styles[0]["hue1"] != styles[2]["hue1"]
    # And the images show it: inside the object boxes, class 0's mean colour is farther from
    # class 2's (another shape and colour) than any two of its own images are from each other.
    boxes = {r["path"]: [float(r[k]) for k in "xywh"] for r in csv.DictReader(open(root / "boxes.csv"))}

    def box_colour(c, i):
        path = f"images/class_{c:03d}/img_{i:04d}.png"
        x, y, w, h = (int(v) for v in boxes[path])
        return np.asarray(Image.open(root / path).convert("RGB"), float)[y:y + h, x:x + w].reshape(-1, 3).mean(0)

    own = [box_colour(0, i) for i in range(4)]
    within = max(np.abs(p - q).mean() for p in own for q in own)
    between = np.abs(np.mean(own, 0) - np.mean([box_colour(2, i) for i in range(4)], 0)).mean()
    assert between > 2 * within


def test_load_open_and_closed(syn):
    root, _out, _dt = syn
    s = load_split("synthetic", str(root), "open")
    assert s.train_classes == [0, 1, 2] and s.test_classes == [3, 4, 5]
    assert all(r.box is not None for r in s.train + s.test)
    assert s.class_names[4] == "class_004"
    c = load_split("synthetic", str(root), "closed")
    assert len(c.train) == len(c.test) == 12
    assert c.train_classes == c.test_classes == list(range(6))


def test_fast(syn):
    _root, _out, dt = syn
    assert dt < 5.0  # 24 images of 64 px; 240 of 96 px take about a second


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic(str(tmp_path), num_classes=1)


def test_folder_and_csv_readers_see_the_same_tree(syn):
    root, _out, _dt = syn
    a = load_split("folder", str(root), "open")
    b = load_split("csv", str(root), "open")
    c = load_split("synthetic", str(root), "open")
    key = lambda s: sorted((r.path, r.label) for r in s.test)  # noqa: E731
    assert key(a) == key(b) == key(c)
