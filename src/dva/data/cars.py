"""Stanford Cars (Krause et al. 2013), 196 classes, in one of three common layouts.

1. ``cars_annos.mat`` + ``car_ims/`` (the all-in-one release): struct array ``annotations``
   with ``relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test`` and
   ``class_names``.
2. The devkit release (as used by torchvision)::

       devkit/cars_meta.mat               class_names
       devkit/cars_train_annos.mat        annotations: bbox_x1..bbox_y2, class, fname
       cars_test_annos_withlabels.mat     same, for the test images (here or in devkit/;
                                          the devkit's cars_test_annos.mat has no labels)
       cars_train/<fname>, cars_test/<fname>

3. The Kaggle "Stanford Car Dataset by classes folder" conversion::

       anno_train.csv, anno_test.csv      <fname>,<x1>,<y1>,<x2>,<y2>,<class 1..196>
       names.csv                          one class name per line
       car_data/car_data/{train,test}/<class name>/<fname>   (any depth below root)

Boxes are 1-based inclusive corners in all three and become 0-based ``x, y, w, h``.
Class ids become 0-based; open protocol: classes 1-98 (8,054 images) train, 99-196 (8,131)
test; closed: the official 8,144 / 8,041. (8,154 open test images, as sometimes quoted, is a typo: see
:mod:`dva.data.protocols`.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dva.data import _files as F
from dva.data import _matfile as M
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "cars196"
HINT = ("Point --root at a folder holding either cars_annos.mat + car_ims/, or the devkit layout "
        "(devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
        "cars_train/, cars_test/), or the Kaggle CSV layout (anno_train.csv, anno_test.csv, "
        "names.csv and the image folders).")
_BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


@dataclass
class _Entry:
    path: str
    cls: int  # 1-based, as in the files
    box: tuple[float, float, float, float]
    is_test: bool
    where: str  # file and row, for errors


def read_cars(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read Stanford Cars from any of the supported layouts.

    Args:
        root: Dataset folder (or its parent ``stanford_cars``).
        protocol: ``"open"`` (classes 1-98 / 99-196) or ``"closed"`` (official split).
        strict_counts: Raise instead of warning when counts differ from the published ones.
    """
    protocol = check_protocol(protocol)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{NAME}: root folder {base} does not exist. {HINT}")
    notes: list[str] = []
    for cand in (base, base / "stanford_cars"):
        if (cand / "cars_annos.mat").exists():
            entries, names = _read_annos_mat(cand.resolve())
            break
        if (cand / "devkit" / "cars_train_annos.mat").exists():
            entries, names = _read_devkit(cand.resolve())
            break
        if (cand / "anno_train.csv").exists():
            entries, names = _read_kaggle_csv(cand.resolve(), notes)
            break
    else:
        raise FileNotFoundError(f"{NAME}: no known layout under {base}. {HINT}")

    for e in entries:
        if not 1 <= e.cls <= len(names):
            raise ValueError(f"{e.where}: class {e.cls} outside 1..{len(names)} (the number of "
                             "class names)")
    class_names = {i: n for i, n in enumerate(names)}
    records = [(ImageRecord(e.path, e.cls - 1, e.box), e.is_test) for e in entries]
    F.check_images_exist([r for r, _t in records], NAME, HINT)
    if protocol == CLOSED:
        train = [r for r, t in records if not t]
        test = [r for r, t in records if t]
    else:
        train, test = split_by_class([r for r, _t in records], PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, class_names, strict_counts, notes)


def _box(row: dict, where: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(row[k]) for k in _BOX)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box fields must be numbers, got "
                         f"{[row[k] for k in _BOX]}") from None
    return F.corners_to_box(x1, y1, x2, y2, where)


def _cls(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{where}: class must be an integer, got {value!r}")
    return value


def _read_annos_mat(base: Path) -> tuple[list[_Entry], list[str]]:
    path = base / "cars_annos.mat"
    mat = M.load_mat(path, ("annotations", "class_names"))
    fields = ("relative_im_path", *_BOX, "class", "test")
    rows = M.struct_rows(mat["annotations"], path, "annotations", fields)
    names = M.string_list(mat["class_names"], path, "class_names")
    entries = []
    for i, row in enumerate(rows, 1):
        where = f"{path}: annotations({i})"
        rel = row["relative_im_path"]
        if not isinstance(rel, str) or not rel:
            raise ValueError(f"{where}: relative_im_path must be a non-empty string")
        test = row["test"]
        if test not in (0, 1):
            raise ValueError(f"{where}: test must be 0 or 1, got {test!r}")
        entries.append(_Entry(str(base / rel), _cls(row["class"], where), _box(row, where),
                              bool(test), where))
    return entries, names


def _image_dir(base: Path, name: str) -> Path:
    # Some unpackers nest the folder in itself (cars_train/cars_train/...).
    d = base / name
    return d / name if (d / name).is_dir() else d


def _read_devkit(base: Path) -> tuple[list[_Entry], list[str]]:
    meta = base / "devkit" / "cars_meta.mat"
    train_p = base / "devkit" / "cars_train_annos.mat"
    test_p = next((p for p in (base / "cars_test_annos_withlabels.mat",
                               base / "devkit" / "cars_test_annos_withlabels.mat") if p.exists()),
                  None)
    if test_p is None or not meta.exists():
        raise FileNotFoundError(
            f"{NAME}: devkit layout under {base} needs devkit/cars_meta.mat and "
            "cars_test_annos_withlabels.mat (the devkit's cars_test_annos.mat has no class "
            "labels; get the file with labels released with the devkit). " + HINT)
    names = M.string_list(M.load_mat(meta, ("class_names",))["class_names"], meta, "class_names")
    entries = []
    for path, folder, is_test in ((train_p, "cars_train", False), (test_p, "cars_test", True)):
        rows = M.struct_rows(M.load_mat(path, ("annotations",))["annotations"], path,
                             "annotations", (*_BOX, "class", "fname"))
        img_dir = _image_dir(base, folder)
        for i, row in enumerate(rows, 1):
            where = f"{path}: annotations({i})"
            entries.append(_Entry(str(img_dir / str(row["fname"])), _cls(row["class"], where),
                                  _box(row, where), is_test, where))
    return entries, names


def _find_split_dir(base: Path, split: str) -> Path:
    """The folder named ``split`` (train/test) closest to ``base`` (Kaggle layout)."""
    for dirpath, dirnames, _files in sorted(os.walk(base), key=lambda t: t[0].count(os.sep)):
        for d in sorted(dirnames):
            if d.lower() == split:
                return Path(dirpath) / d
    raise FileNotFoundError(f"{NAME}: no '{split}' image folder under {base} (expected e.g. "
                            f"car_data/car_data/{split}/<class name>/<file>.jpg). {HINT}")


def _index_files(folder: Path, notes: list[str]) -> dict[str, str]:
    """File name -> path of the images under ``folder`` (the shared listing: symlinks followed once)."""
    paths, skipped = F.walk_images(folder)
    notes += [f"{NAME}: {n}" for n in skipped]
    out: dict[str, str] = {}
    for p in paths:
        f = os.path.basename(p)
        if f in out:
            raise ValueError(f"{NAME}: file name {f} appears twice under {folder} "
                             f"({out[f]} and {p}); cannot match CSV rows to images")
        out[f] = p
    return out


def _read_kaggle_csv(base: Path, notes: list[str]) -> tuple[list[_Entry], list[str]]:
    F.require_files(base, ("anno_train.csv", "anno_test.csv", "names.csv"), NAME, HINT)
    names_p = base / "names.csv"
    names = [line.strip() for line in names_p.read_text(encoding="utf-8-sig").splitlines()
             if line.strip()]
    entries = []
    for split, is_test in (("train", False), ("test", True)):
        path = base / f"anno_{split}.csv"
        files = _index_files(_find_split_dir(base, split), notes)
        for lineno, parts in F.read_table(path, 6, ",", "<fname>,<x1>,<y1>,<x2>,<y2>,<class>"):
            if lineno == 1 and not parts[5].strip().lstrip("-").isdigit():
                continue  # a header row
            where = f"{path}:{lineno}"
            if "," in parts[5]:
                raise ValueError(f"{where}: expected 6 comma-separated fields "
                                 "<fname>,<x1>,<y1>,<x2>,<y2>,<class>")
            fname = os.path.basename(parts[0])
            if fname not in files:
                raise FileNotFoundError(f"{where}: image {fname} not found under the {split} "
                                        f"image folder of {base}. {HINT}")
            x1, y1, x2, y2 = (F.to_float(v, path, lineno, n)
                              for v, n in zip(parts[1:5], ("x1", "y1", "x2", "y2")))
            entries.append(_Entry(files[fname], F.to_int(parts[5], path, lineno, "class"),
                                  F.corners_to_box(x1, y1, x2, y2, where), is_test, where))
    return entries, names
