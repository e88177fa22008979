"""FGVC-Aircraft reader (variant level) on a fixture in the 2013b format."""
from __future__ import annotations

import pytest

from dva.data import load_split


@pytest.mark.parametrize("trainval", [True, False])
def test_protocols(tmp_path, fx, trainval):
    fx.build_aircraft(tmp_path, trainval=trainval)
    s = load_split("aircraft", str(tmp_path), "closed")  # root above fgvc-aircraft-2013b/data
    assert len(s.train) == 200 and len(s.test) == 100
    assert s.train_classes == s.test_classes == list(range(100))
    s = load_split("aircraft", str(tmp_path / "fgvc-aircraft-2013b"), "open")
    assert s.train_classes == list(range(50)) and s.test_classes == list(range(50, 100))
    assert len(s.train) == len(s.test) == 150
    assert s.class_names[0] == "F/A-18" and s.class_names[1] == "Cessna 172"


def test_box_is_zero_based_xywh(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    s = load_split("aircraft", str(base), "open")
    # 1-based inclusive corners (11, 21)-(110, 70)
    assert {r.box for r in s.train} == {(10.0, 20.0, 100.0, 50.0)}


def test_variant_names_with_spaces_and_slashes(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    s = load_split("aircraft", str(base), "closed")
    labels = {r.path.rsplit("/", 1)[1]: r.label for r in s.train + s.test}
    assert labels["1000001.jpg"] == 0 and labels["1000004.jpg"] == 1


def test_unknown_variant_named(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    fx.rewrite_line(base / "images_variant_test.txt", 4, "1000010 Boeing 999")
    with pytest.raises(ValueError, match=fx.line_error(base / "images_variant_test.txt", 4)):
        load_split("aircraft", str(base), "open")


def test_train_test_overlap(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    first_train = (base / "images_variant_trainval.txt").read_text().splitlines()[0]
    fx.rewrite_line(base / "images_variant_test.txt", 1, first_train)
    with pytest.raises(ValueError, match="also listed for training"):
        load_split("aircraft", str(base), "closed")


def test_missing_test_list(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    (base / "images_variant_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="images_variant_test.txt"):
        load_split("aircraft", str(base), "open")


def test_bad_box_named(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    fx.rewrite_line(base / "images_box.txt", 5, "1000005 50 50 10 60")
    with pytest.raises(ValueError, match=fx.line_error(base / "images_box.txt", 5)):
        load_split("aircraft", str(base), "open")


def test_published_counts_in_warning(tmp_path, fx):
    base = fx.build_aircraft(tmp_path)
    assert any("6,667 / 3,333" in w for w in load_split("aircraft", str(base), "closed").warnings)
    assert any("5,000 / 5,000" in w for w in load_split("aircraft", str(base), "open").warnings)
