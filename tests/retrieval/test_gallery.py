"""Gallery listing (dva.retrieval.store.gallery): symlinks, loops and list files that are wrong."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from dva.data.folder import read_folder
from dva.retrieval.store.gallery import list_images


def _img(path: Path, shade: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path)
    return path


def _tree(root: Path, classes=("a", "b", "c"), per=3) -> None:
    for ci, c in enumerate(classes):
        for i in range(per):
            _img(root / c / f"{i}.png", 40 * ci + i)


def test_symlinked_class_folder_is_listed(tmp_path):
    _tree(tmp_path / "real", ("a", "b"))
    gal = tmp_path / "gallery"
    _tree(gal, ("c",))
    os.symlink(tmp_path / "real" / "a", gal / "a")  # a class folder that is a link
    items = list_images(gal, label_from_parent=True)
    assert len(items) == 6 and sorted({it.label for it in items}) == ["a", "c"]


def test_directory_symlink_loop_is_listed_once(tmp_path):
    _tree(tmp_path, ("a", "b", "c"))
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")  # a/loop -> a
    with pytest.warns(UserWarning, match="already listed"):
        items = list_images(tmp_path, label_from_parent=True)
    assert len(items) == 9
    split = read_folder(str(tmp_path), "open")
    # Before: class "a" grew to 243 images through the loop, other classes' images relabelled.
    per_class = {}
    for r in split.train + split.test:
        per_class[r.label] = per_class.get(r.label, 0) + 1
    assert sorted(per_class.values()) == [3, 3, 3]
    assert any("already listed" in w for w in split.warnings)


def test_a_file_and_a_link_to_it_are_one_image(tmp_path):
    _tree(tmp_path, ("a",))
    os.symlink(tmp_path / "a" / "0.png", tmp_path / "a" / "link.png")
    with pytest.warns(UserWarning, match="same file"):
        assert len(list_images(tmp_path)) == 3


def _list(tmp_path: Path, text: str, encoding="utf-8") -> Path:
    _tree(tmp_path, ("a",))
    p = tmp_path / "list.csv"
    p.write_bytes(text.encode(encoding))
    return p


@pytest.mark.parametrize("text,encoding,fragment", [
    ("a/0.png,x\na/1.png,y\na/0.png,z\n", "utf-8", "list.csv:3: a/0.png is already listed on line 1"),
    ("a/0.png,x\n./a/0.png,x\n", "utf-8", "list.csv:2"),
    ('a/0.png,x\n"a/1.png,y\na/2.png,z\n', "utf-8", "list.csv:2: unterminated quote"),
    ("a/0.png,caf\u00e9\n", "latin-1", "list.csv: not UTF-8"),
    ("a/0.png,x,extra\n", "utf-8", "list.csv:1: expected 'path' or 'path,label', got 3 fields; to keep "
     "more columns, give the list a header line"),
    ("path,label,source\na/0.png,x,s,t\n", "utf-8", "list.csv:2: 4 fields, but the header names 3"),
    ("path,label,1st\na/0.png\n", "utf-8", "list.csv:1: column 3 '1st': a column name is letters"),
    ("path,label,so-urce\na/0.png\n", "utf-8", "list.csv:1: column 3 'so-urce'"),
    ("path,label,source,ID\na/0.png\n", "utf-8", "list.csv:1: column 4 'ID': the name is reserved"),
    ("path,label,vector\na/0.png\n", "utf-8", "column 3 'vector': the name is reserved"),
    ("path,label,Label\na/0.png\n", "utf-8", "column 3 'Label': the name is reserved"),
    ("path,label,and\na/0.png\n", "utf-8", "column 3 'and': the name is reserved"),
    ("\n# c\npath,label,date,Date\na/0.png\n", "utf-8", "list.csv:3: column 4 'Date': named already as "
     "column 3"),
])
def test_bad_list_files_name_the_file_and_line(tmp_path, text, encoding, fragment):
    with pytest.raises(ValueError) as err:
        list_images(_list(tmp_path, text, encoding))
    assert fragment in str(err.value)


def test_symlink_loop_in_a_list_names_the_line(tmp_path):
    lst = _list(tmp_path, "a/0.png\nloop.png\n")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    with pytest.raises(ValueError, match=r"list\.csv:2: .*loop"):
        list_images(lst)


def test_good_list_with_header_bom_and_labels(tmp_path):
    lst = _list(tmp_path, "\ufeffpath,label\na/0.png,x\n# a comment\na/1.png,\n")
    items = list_images(lst)
    assert [(Path(i.path).name, i.label) for i in items] == [("0.png", "x"), ("1.png", None)]


def test_header_names_extra_columns_kept_per_item_in_order(tmp_path):
    lst = _list(tmp_path, "path,label,source,date\na/0.png,x,trap3,2024-05-01\na/1.png,,,2024-06-02\n"
                          "a/2.png,y\n")
    items = list_images(lst)
    assert [(Path(i.path).name, i.label, i.extra) for i in items] == [
        ("0.png", "x", {"source": "trap3", "date": "2024-05-01"}),
        ("1.png", None, {"source": None, "date": "2024-06-02"}),   # empty cell -> None
        ("2.png", "y", {"source": None, "date": None}),           # missing cells -> None
    ]
    assert list(items[0].extra) == ["source", "date"]  # CSV order


def test_lists_without_extra_columns_have_empty_extra(tmp_path):
    for text in ("a/0.png,x\n", "path,label\na/0.png,x\n", "path\na/0.png\n"):
        assert [i.extra for i in list_images(_list(tmp_path, text))] == [{}]
