"""Folder listing and real-path de-duplication of every reader (issue 24, group 1).

The audit: a class folder with a symlink back up to the dataset root and a second class folder
that is a symlink to another counted 66 records from 24 files, the same photos under two labels
and on both sides of the split, and scored R@1 33.3 instead of 91.7. Nothing was said.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dva.data import DatasetWarning, ImageRecord, load_split
from dva.data._files import ImageRegistry, walk_images
from dva.data.protocols import finish_split


def _real_files(root: Path) -> set[str]:
    """Real image files under ``root`` that are not symlinks (what a reader must count once each)."""
    return {os.path.realpath(os.path.join(d, f)) for d, _dirs, files in os.walk(root)
            for f in files if f.endswith(".png") and not os.path.islink(os.path.join(d, f))}


def _g24(fx, root: Path, classes=("American_Goldfinch", "American_Redstart", "Fox_Sparrow", "Henslow_Sparrow"),
         per_class=6) -> Path:
    for c in classes:
        for i in range(per_class):
            fx.touch_image(root / c / f"{i:04d}.png")
    return root


def _counts(split) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in split.train + split.test:
        name = split.class_names[r.label]
        out[name] = out.get(name, 0) + 1
    return out


def test_the_audit_tree_counts_each_photo_once_and_names_the_links(tmp_path, fx):
    s = _g24(fx, tmp_path / "s")
    os.symlink("..", s / "American_Redstart" / "loop_up")  # a loop up to the dataset root
    os.symlink("American_Goldfinch", s / "Goldfinch_link")  # a second name of a class
    with pytest.warns(DatasetWarning) as caught:
        split = load_split("folder", str(s), "open")
    assert len(split.train) + len(split.test) == len(_real_files(s)) == 24  # before: 48 on this tree
    assert _counts(split) == {"American_Goldfinch": 6, "American_Redstart": 6, "Fox_Sparrow": 6,
                              "Henslow_Sparrow": 6}
    assert len({os.path.realpath(r.path) for r in split.train + split.test}) == 24
    said = [str(w.message) for w in caught]
    assert any(f"{s / 'American_Redstart' / 'loop_up'}: a symlink to {s}" in m and "loop" in m for m in said)
    assert any(f"class folder {s / 'Goldfinch_link'} is a symlink" in m and "'American_Goldfinch'" in m
               for m in said)
    assert len(split.warnings) == 2 and split.class_names == {0: "American_Goldfinch", 1: "American_Redstart",
                                                              2: "Fox_Sparrow", 3: "Henslow_Sparrow"}


def test_loops_of_every_kind_terminate_and_are_named(tmp_path, fx):
    s = _g24(fx, tmp_path / "s", ("a", "b", "c", "d"), per_class=2)
    os.symlink(s / "a", s / "a" / "self")  # to itself
    (s / "b" / "deep" / "er").mkdir(parents=True)
    fx.touch_image(s / "b" / "deep" / "er" / "x.png")
    os.symlink(s / "b" / "deep", s / "b" / "deep" / "er" / "up")  # to an ancestor inside the class
    os.symlink(tmp_path, s / "c" / "above")  # above the dataset root
    os.symlink(s, s / "root_again")  # a class folder that is the root
    with pytest.warns(DatasetWarning):
        split = load_split("folder", str(s), "open")
    assert _counts(split) == {"a": 2, "b": 3, "c": 2, "d": 2}
    said = "\n".join(split.warnings)
    for link in (s / "a" / "self", s / "b" / "deep" / "er" / "up", s / "c" / "above"):
        assert f"{link}: a symlink to" in said
    assert f"class folder {s / 'root_again'} is a symlink to {s}, which contains the dataset folder" in said


def test_a_photo_linked_into_another_class_is_a_leak_naming_both(tmp_path, fx):
    s = _g24(fx, tmp_path / "s", ("a", "b", "c", "d"), per_class=3)
    os.symlink(s / "d" / "0001.png", s / "a" / "borrowed.png")  # the class walked FIRST holds the link
    with pytest.raises(ValueError) as err:
        load_split("folder", str(s), "open")
    msg = str(err.value)
    assert "1 image file(s) are listed under two classes" in msg and "train/test leak" in msg
    assert f"class 'a': {s / 'a' / 'borrowed.png'}" in msg and f"class 'd': {s / 'd' / '0001.png'}" in msg
    assert "Fix: keep each photo in one class folder" in msg


def test_a_symlinked_folder_of_another_class_is_a_leak(tmp_path, fx):
    s = _g24(fx, tmp_path / "s", ("a", "b", "c", "d"), per_class=3)
    os.symlink(s / "a", s / "c" / "more")  # class c pulls in all of class a
    with pytest.raises(ValueError, match=r"3 image file\(s\) are listed under two classes") as err:
        load_split("folder", str(s), "open")
    assert f"class 'c': {s / 'c' / 'more' / '0000.png'}" in str(err.value)


def test_closed_layout_photo_in_train_and_test_is_a_leak(tmp_path, fx):
    for part in ("train", "test"):
        _g24(fx, tmp_path / part, ("a", "b"), per_class=2)
    os.symlink(tmp_path / "train" / "a" / "0000.png", tmp_path / "test" / "a" / "same.png")
    with pytest.raises(ValueError) as err:
        load_split("folder", str(tmp_path), "closed")
    assert "class 'a' (train)" in str(err.value) and "class 'a' (test)" in str(err.value)


def test_a_link_to_a_file_of_the_same_class_is_listed_once_by_its_plain_path(tmp_path, fx):
    s = _g24(fx, tmp_path / "s", ("a", "b"), per_class=2)
    os.symlink(s / "b" / "0001.png", s / "b" / "0000_alias.png")  # sorts before the plain file
    (s / "a" / "sub").mkdir()
    os.symlink(s / "a" / "sub", s / "a" / "0_link_first")  # a link that sorts before its target
    fx.touch_image(s / "a" / "sub" / "deep.png")
    paths, notes = walk_images(s / "a")
    assert paths == [str(s / "a" / "0000.png"), str(s / "a" / "0001.png"), str(s / "a" / "sub" / "deep.png")]
    assert notes == [f"{s / 'a' / '0_link_first'}: a symlink to {s / 'a' / 'sub'}, already listed as "
                     f"{s / 'a' / 'sub'}; not followed again"]
    paths, notes = walk_images(s / "b")
    assert paths == [str(s / "b" / "0000.png"), str(s / "b" / "0001.png")]
    assert notes == [f"{s / 'b' / '0000_alias.png'}: the same file as {s / 'b' / '0001.png'}; listed once"]


def test_broken_link_and_unreadable_folder_are_said(tmp_path, fx):
    s = _g24(fx, tmp_path, ("a",), per_class=1)
    os.symlink(s / "nowhere.png", s / "a" / "dangling.png")
    paths, notes = walk_images(s / "a")
    assert paths == [str(s / "a" / "0000.png")]
    assert notes == [f"{s / 'a' / 'dangling.png'}: a broken or looping symlink; skipped"]


def test_registry_real_paths_and_groups(tmp_path, fx):
    fx.touch_image(tmp_path / "x" / "1.png")
    os.symlink(tmp_path / "x", tmp_path / "y")
    reg = ImageRegistry()
    assert reg.real(str(tmp_path / "y" / "1.png")) == str(tmp_path / "x" / "1.png")
    assert reg.add(str(tmp_path / "x" / "1.png"), "class 'a'") is None
    assert reg.add(str(tmp_path / "y" / "1.png"), "class 'a'") == (str(tmp_path / "x" / "1.png"), "class 'a'")
    assert reg.leaks == []
    reg.add(str(tmp_path / "y" / ".." / "x" / "1.png"), "class 'b'")
    assert len(reg.leaks) == 1 and "class 'b'" in reg.leaks[0]
    with pytest.raises(ValueError, match="mydata: 1 image file"):
        reg.raise_leaks("mydata")


# --------------------------------------------------------------------------- every reader
def test_finish_split_refuses_one_file_twice_for_every_reader(tmp_path, fx):
    fx.touch_image(tmp_path / "a.png")
    fx.touch_image(tmp_path / "b.png")
    os.symlink(tmp_path / "a.png", tmp_path / "alias.png")
    a, b, alias = (str(tmp_path / n) for n in ("a.png", "b.png", "alias.png"))
    with pytest.raises(ValueError, match=r"class 'x' \(train\).*\n.*class 'y' \(test\)"):
        finish_split("cub200", "open", [ImageRecord(a, 0)], [ImageRecord(alias, 1), ImageRecord(b, 1)],
                     {0: "x", 1: "y"})
    with pytest.raises(ValueError, match="listed twice in one class") as err:
        finish_split("cub200", "open", [ImageRecord(a, 0), ImageRecord(alias, 0)], [ImageRecord(b, 1)], {})
    assert f"{alias} (the same file as {a})" in str(err.value)


def test_csv_same_file_under_two_labels_names_both_lines(tmp_path, fx):
    for i in range(4):
        fx.touch_image(tmp_path / "img" / f"{i}.png")
    os.symlink(tmp_path / "img" / "0.png", tmp_path / "img" / "alias.png")
    (tmp_path / "labels.csv").write_text("img/0.png,a\nimg/1.png,a\nimg/2.png,b\nimg/alias.png,b\nimg/3.png,b\n")
    with pytest.raises(ValueError) as err:
        load_split("csv", str(tmp_path), "open")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'labels.csv'}:4: image {tmp_path / 'img' / 'alias.png'} is labelled 'b'")
    assert "'a' on line 1 (the same file)" in msg and "train/test leak" in msg
    (tmp_path / "labels.csv").write_text("img/0.png,a\nimg/1.png,a\nimg/2.png,b\n./img/0.png,a\n")
    with pytest.raises(ValueError, match=r"labels\.csv:4: .* already listed on line 1"):
        load_split("csv", str(tmp_path), "open")


def test_cars_kaggle_image_folders_with_a_loop_are_walked_once(tmp_path, fx):
    fx.build_cars_kaggle(tmp_path)
    train = tmp_path / "car_data" / "car_data" / "train"
    os.symlink(train, train / "Make0 Model 2000" / "loop")
    with pytest.warns(DatasetWarning, match="already listed"):
        s = load_split("cars196", str(tmp_path), "closed")
    assert (len(s.train), len(s.test)) == (196, 196)
    assert [w for w in s.warnings if "loop: a symlink to" in w] == [
        f"cars196: {train / 'Make0 Model 2000' / 'loop'}: a symlink to {train}, already listed as "
        f"{train}; not followed again"]
