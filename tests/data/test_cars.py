"""Stanford Cars reader in its five layouts (cars_annos.mat, devkit, Kaggle CSV, numbered and named class folders)."""
from __future__ import annotations

import re

import pytest

from dva.data import load_split
from dva.data.protocols import PUBLISHED, DatasetWarning

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


# --------------------------------------------------------------------------- class-folder copies
def _numbered(fx, root, ids=range(1, 197), per_class=2):
    """``images/<NNN>_<Name>/`` (the shared data's layout); some ids unpadded so that a name sort
    ("10_..." before "7_...") is not the id order."""
    for i in ids:
        prefix = str(i) if i in (7, 10) else f"{i:03d}"
        name = "Ram_C_V_Cargo_Van_Minivan_2012" if i == 174 else f"Make{i}_Model_{2000 + i % 13}"
        for j in range(per_class + (i == 3)):  # class 3 has one image more
            fx.touch_image(root / "images" / f"{prefix}_{name}" / f"{j:05d}.jpg")
    return root


def test_numbered_folders_split_by_official_id(tmp_path, fx):
    _numbered(fx, tmp_path)
    s = load_split("cars196", str(tmp_path), "open")
    assert s.train_classes == list(range(98)) and s.test_classes == list(range(98, 196))
    assert (len(s.train), len(s.test)) == (98 * 2 + 1, 98 * 2)
    assert s.class_names[0] == "Make1 Model 2001" and s.class_names[173] == "Ram C V Cargo Van Minivan 2012"
    assert s.class_names[6] == "Make7 Model 2007" and s.class_names[9] == "Make10 Model 2010"
    assert {r.label for r in s.train if "/10_Make10_" in r.path} == {9}
    assert all(r.box is None for r in s.train + s.test)
    assert s.rule == "open: the classes with official ids 1-98 train, 99-196 test"
    # the folder above images/ or images/ itself
    again = load_split("cars196", str(tmp_path / "images"), "open")
    assert sorted(r.path for r in again.test) == sorted(r.path for r in s.test)


def test_numbered_folders_refuse_closed(tmp_path, fx):
    _numbered(fx, tmp_path)
    with pytest.raises(ValueError, match=r"closed protocol needs the official train/test split.*--protocol open"):
        load_split("cars196", str(tmp_path), "closed")


def test_numbered_missing_class_keeps_official_ids(tmp_path, fx):
    _numbered(fx, tmp_path, ids=[i for i in range(1, 197) if i not in (50, 99)])
    with pytest.warns(DatasetWarning, match="2 of the 196 classes have no class folder.*ids 050, 099"):
        s = load_split("cars196", str(tmp_path), "open")
    assert 49 not in s.train_classes and len(s.train_classes) == 97
    assert s.test_classes[0] == 99 and len(s.test_classes) == 97  # id 100 is still label 99
    assert 49 not in s.class_names and s.class_names[99] == "Make100 Model 2009"
    assert any("97 train / 97 test classes instead of 98 / 98" in w for w in s.warnings)


def test_numbered_stray_files_and_folders(tmp_path, fx):
    _numbered(fx, tmp_path)
    images = tmp_path / "images"
    (images / "001_Make1_Model_2001" / "Thumbs.db").write_text("not an image")
    fx.touch_image(images / "loose.jpg")
    fx.touch_image(images / "misc" / "x.jpg")
    with pytest.warns(DatasetWarning):
        s = load_split("cars196", str(tmp_path), "open")
    assert (len(s.train), len(s.test)) == (98 * 2 + 1, 98 * 2)  # none of the strays counted
    assert any("1 image(s) directly in" in w and str(images) in w for w in s.warnings)
    assert any(f"folder {images / 'misc'} is not named <NNN>_<Name>" in w for w in s.warnings)
    assert all(w.startswith("cars196") for w in s.warnings)


@pytest.mark.parametrize("bad, match", [("197_Extra_2020", "id 197 outside 1..196"),
                                        ("005_Other_Name", "both have id 005")])
def test_numbered_bad_ids(tmp_path, fx, bad, match):
    _numbered(fx, tmp_path, per_class=1)
    fx.touch_image(tmp_path / "images" / bad / "1.jpg")
    with pytest.raises(ValueError, match=match):
        load_split("cars196", str(tmp_path), "open")


def _named_folders(fx, root):
    """The Kaggle download without its CSVs: car_data/car_data/{train,test}/<Class Name>/."""
    fx.build_cars_kaggle(root)
    for split in ("train", "test"):
        (root / f"anno_{split}.csv").unlink()
    return root


def test_named_folders_ids_from_names_csv(tmp_path, fx):
    _named_folders(fx, tmp_path)
    s = load_split("cars196", str(tmp_path), "open")
    # ids follow names.csv, not the sorted folder names ("Make10 ..." sorts before "Make2 ...")
    assert s.class_names[2] == "Make2 Model 2002" and s.class_names[10] == "Make10 Model 2010"
    assert {r.label for r in s.train if "/Make10 Model 2010/" in r.path} == {10}
    assert s.train_classes == list(range(98)) and s.test_classes == list(range(98, 196))
    assert (len(s.train), len(s.test)) == (196, 196)
    ram = [r for r in s.test if "/Ram C-V Cargo Van Minivan 2012/" in r.path]
    assert len(ram) == 2 and {r.label for r in ram} == {195}
    c = load_split("cars196", str(tmp_path), "closed")  # the train/ and test/ folders
    assert all("/train/" in r.path for r in c.train) and all("/test/" in r.path for r in c.test)
    assert (len(c.train), len(c.test)) == (196, 196)
    assert c.train_classes == c.test_classes == list(range(196))


def test_named_folders_ids_from_cars_meta(tmp_path, fx):
    import numpy as np
    import scipy.io

    _named_folders(fx, tmp_path)
    names = (tmp_path / "names.csv").read_text().splitlines()
    (tmp_path / "names.csv").unlink()
    cell = np.empty((1, len(names)), dtype=object)
    cell.flat[:] = names[::-1]  # a reversed order, to see that the file decides the ids
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_meta.mat", {"class_names": cell})
    s = load_split("cars196", str(tmp_path), "open")
    assert s.class_names[0] == "Ram C/V Cargo Van Minivan 2012"
    assert {r.label for r in s.train if "/Ram C-V Cargo Van Minivan 2012/" in r.path} == {0}
    assert {r.label for r in s.test if "/Make0 Model 2000/" in r.path} == {195}


def test_named_folders_without_names_refused(tmp_path, fx):
    _named_folders(fx, tmp_path)
    (tmp_path / "names.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"give no official class ids.*names\.csv.*cars_meta\.mat"):
        load_split("cars196", str(tmp_path), "open")


def test_named_folders_unknown_and_missing_class(tmp_path, fx):
    _named_folders(fx, tmp_path)
    test_dir = tmp_path / "car_data" / "car_data" / "test"
    (test_dir / "Make150 Model 2007").rename(test_dir / "Mystery Car 2030")
    with pytest.raises(ValueError, match=r"1 class folder.*match no class name of .*names\.csv: test/Mystery Car 2030"):
        load_split("cars196", str(tmp_path), "open")
    import shutil

    shutil.rmtree(test_dir / "Mystery Car 2030")
    fx.touch_image(test_dir / "stray.jpg")
    with pytest.warns(DatasetWarning, match="196 train / 195 test classes"):  # absent from test/ only
        s = load_split("cars196", str(tmp_path), "closed")
    assert 150 not in s.test_classes and 150 in s.train_classes and len(s.test) == 195
    assert any("1 image(s) directly in" in w for w in s.warnings)  # the stray file, ignored
    shutil.rmtree(test_dir.parent / "train" / "Make150 Model 2007")
    with pytest.warns(DatasetWarning, match="1 of the 196 classes have no class folder.*ids 151$"):
        s = load_split("cars196", str(tmp_path), "open")
    assert s.test_classes == [c for c in range(98, 196) if c != 150] and len(s.test) == 97 * 2


def test_named_folders_leak_refused(tmp_path, fx):
    _named_folders(fx, tmp_path)
    data = tmp_path / "car_data" / "car_data"
    first = next((data / "train" / "Make0 Model 2000").iterdir())
    (data / "test" / "Make0 Model 2000" / "copy.jpg").symlink_to(first)
    with pytest.raises(ValueError, match="listed under two classes"):
        load_split("cars196", str(tmp_path), "open")
