"""CSV image-list reader."""
from __future__ import annotations

import pytest

from dva.data import load_split


def _images(fx, root, n=6):
    for i in range(n):
        fx.touch_image(root / "img" / f"{i}.png")


def test_string_labels_sorted_and_boxes(tmp_path, fx):
    _images(fx, tmp_path)
    (tmp_path / "list.csv").write_text(
        "img/0.png,zebra,1,2,3,4\nimg/1.png,ant,,,,\nimg/2.png,cat,0,0,5,5\n"
        "img/3.png,zebra,1,1,1,1\nimg/4.png,ant,2,2,2,2\nimg/5.png,cat,3,3,3,3\n")
    s = load_split("csv", str(tmp_path / "list.csv"), "open")
    assert s.class_names == {0: "ant", 1: "cat", 2: "zebra"}
    assert s.train_classes == [0] and s.test_classes == [1, 2]
    rec = {r.path.rsplit("/", 1)[1]: r for r in s.train + s.test}
    assert rec["0.png"].label == 2 and rec["0.png"].box == (1.0, 2.0, 3.0, 4.0)
    assert rec["1.png"].box is None
    assert rec["0.png"].path == str(tmp_path / "img" / "0.png")


def test_integer_labels_numeric_order(tmp_path, fx):
    _images(fx, tmp_path)
    rows = ["path,label"] + [f"img/{i}.png,{lab}" for i, lab in enumerate([10, 9, 2, 10, 9, 2])]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    s = load_split("csv", str(tmp_path), "open")  # folder -> labels.csv
    assert s.class_names == {0: "2", 1: "9", 2: "10"}


def test_header_any_order_with_split(tmp_path, fx):
    _images(fx, tmp_path)
    rows = ["split,extra,label,path"] + [
        f"{'train' if i < 3 else 'test'},x,{i % 3},img/{i}.png" for i in range(6)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    s = load_split("csv", str(tmp_path), "closed")
    assert len(s.train) == 3 and len(s.test) == 3
    assert s.train_classes == s.test_classes == [0, 1, 2]


def test_query_gallery(tmp_path, fx):
    _images(fx, tmp_path)
    sp = ["train", "train", "query", "gallery", "gallery", "query"]
    rows = ["path,label,split"] + [f"img/{i}.png,{i % 2},{sp[i]}" for i in range(6)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    s = load_split("csv", str(tmp_path), "closed")
    assert [r.path[-5:] for r in s.query] == ["2.png", "5.png"]
    assert [r.path[-5:] for r in s.gallery] == ["3.png", "4.png"]
    assert len(s.test) == 4


def test_closed_without_split_column(tmp_path, fx):
    _images(fx, tmp_path)
    (tmp_path / "labels.csv").write_text("".join(f"img/{i}.png,{i % 2}\n" for i in range(6)))
    with pytest.raises(ValueError, match="split"):
        load_split("csv", str(tmp_path), "closed")


@pytest.mark.parametrize("bad_line, match", [
    ("img/1.png,a,1,2", "expected 6 columns"),
    ("img/1.png,a,1,2,x,4", "w must be a number"),
    ("img/1.png,a,1,2,,4", "all of x, y, w, h"),
    (",a,1,2,3,4", "empty path"),
    ("img/0.png,a,1,2,3,4", "already listed"),
])
def test_malformed_rows_named(tmp_path, fx, bad_line, match):
    _images(fx, tmp_path)
    lines = [f"img/{i}.png,{'ab'[i % 2]},1,2,3,4" for i in range(6)]
    lines[2] = bad_line
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=fx.line_error(tmp_path / "l.csv", 3) + ".*" + match):
        load_split("csv", str(tmp_path / "l.csv"), "open")


def test_missing_image(tmp_path, fx):
    _images(fx, tmp_path)
    (tmp_path / "l.csv").write_text("".join(f"img/{i}.png,{i % 2}\n" for i in range(7)))
    with pytest.raises(FileNotFoundError, match="6.png"):
        load_split("csv", str(tmp_path / "l.csv"), "open")


def test_bad_split_value(tmp_path, fx):
    _images(fx, tmp_path)
    rows = ["path,label,split"] + [f"img/{i}.png,{i % 2},{'train' if i else 'dev'}" for i in range(6)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=fx.line_error(tmp_path / "labels.csv", 2)):
        load_split("csv", str(tmp_path), "closed")
