"""Builders of tiny fixture trees that mimic the official file formats of each dataset.

Every builder writes the full class count of its dataset (so both protocols' class ranges
are exercised) with few images per class; images are one shared tiny PNG (readers only
check that files exist; decoding is tested in test_torch_dataset.py).
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


def touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)


def rewrite_line(path: Path, lineno: int, new: str) -> None:
    """Replace line ``lineno`` (1-based) of a text file."""
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


def line_error(path: Path, lineno: int) -> str:
    """Regex matching an error message that names ``path`` and ``lineno``."""
    return re.escape(f"{path}:{lineno}")


@pytest.fixture(autouse=True)
def _quiet_dataset_warnings():
    # Fixture trees never have the published counts; tests that care use pytest.warns.
    from dva.data import DatasetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        yield


# --------------------------------------------------------------------------- CUB-200-2011
def build_cub(root: Path, num_classes: int = 200, per_class: int = 2, boxes: bool = True) -> Path:
    """``root/CUB_200_2011`` with ``per_class`` images per class; image 1 of each class trains."""
    base = root / "CUB_200_2011"
    images, labels, split, bbox, classes = [], [], [], [], []
    img_id = 0
    for c in range(1, num_classes + 1):
        cname = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cname}")
        for j in range(per_class):
            img_id += 1
            rel = f"{cname}/Bird_{c}_{j:04d}.jpg"
            touch_image(base / "images" / rel)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c}")
            split.append(f"{img_id} {1 if j == 0 else 0}")
            bbox.append(f"{img_id} {c}.0 {j + 1}.5 {10 + c}.0 20.0")
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("classes.txt", classes)):
        (base / name).write_text("\n".join(rows) + "\n")
    if boxes:
        (base / "bounding_boxes.txt").write_text("\n".join(bbox) + "\n")
    return base


# --------------------------------------------------------------------------- NABirds
NABIRDS_LEAVES = [295 + 2 * i + (i // 50) for i in range(555)]  # non-contiguous, increasing


def build_nabirds(root: Path, per_class: int = 2) -> Path:
    """``root/nabirds``: 555 leaf classes with gappy ids plus hierarchy-only classes."""
    base = root / "nabirds"
    classes = ["0 Birds", "1 Ducks, Geese, and Swans", "2 Grebes"]
    classes += [f"{c} Leaf bird {c} (Adult)" for c in NABIRDS_LEAVES]
    images, labels, split, bbox = [], [], [], []
    k = 0
    for c in NABIRDS_LEAVES:
        for j in range(per_class):
            k += 1
            uid = f"{k:08x}-21dc-4d0c-bfe1-4cae3c85c829"
            rel = f"{c:04d}/{uid.replace('-', '')}.jpg"
            touch_image(base / "images" / rel)
            images.append(f"{uid} {rel}")
            labels.append(f"{uid} {c}")
            split.append(f"{uid} {1 if j == 0 else 0}")
            bbox.append(f"{uid} {j} 3 40 50")
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("classes.txt", classes),
                       ("bounding_boxes.txt", bbox)):
        (base / name).write_text("\n".join(rows) + "\n")
    (base / "hierarchy.txt").write_text("1 0\n2 0\n")
    return base


# --------------------------------------------------------------------------- cub100 layout
def build_cub100(root: Path, num_classes: int = 100, per_class: int = 2) -> Path:
    """The cub100 layout: ``id, value`` lines, ids from 0, flag 0 = train."""
    images, labels, split, classes = [], [], [], []
    k = 0
    for c in range(num_classes):
        classes.append(f"{c}, Species_{c}")
        for j in range(per_class):
            rel = f"Species_{c}/{j:04d}.jpg"
            touch_image(root / "images" / rel)
            images.append(f"{k}, {rel}")
            labels.append(f"{k}, {c}")
            split.append(f"{k}, {0 if j == 0 else 1}")
            k += 1
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("classes.txt", classes)):
        (root / name).write_text("\n".join(rows) + "\n")
    return root


# --------------------------------------------------------------------------- FGVC-Aircraft
AIRCRAFT_SPECIAL = ["F/A-18", "Cessna 172", "Boeing 717", "DHC-8-100"]


def aircraft_variants() -> list[str]:
    return AIRCRAFT_SPECIAL + [f"Variant-{i:03d}" for i in range(100 - len(AIRCRAFT_SPECIAL))]


def build_aircraft(root: Path, per_class: int = 3, trainval: bool = True) -> Path:
    """``root/fgvc-aircraft-2013b/data``; image 0 of a variant is test, the others train/val."""
    base = root / "fgvc-aircraft-2013b" / "data"
    base.mkdir(parents=True)
    variants = aircraft_variants()
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    boxes = []
    k = 1000000
    for v in variants:
        for j in range(per_class):
            k += 1
            touch_image(base / "images" / f"{k}.jpg")
            lists["test" if j == 0 else ("train" if j % 2 else "val")].append(f"{k} {v}")
            boxes.append(f"{k} 11 21 110 70")
    if trainval:
        (base / "images_variant_trainval.txt").write_text(
            "\n".join(lists["train"] + lists["val"]) + "\n")
    else:
        (base / "images_variant_train.txt").write_text("\n".join(lists["train"]) + "\n")
        (base / "images_variant_val.txt").write_text("\n".join(lists["val"]) + "\n")
    (base / "images_variant_test.txt").write_text("\n".join(lists["test"]) + "\n")
    (base / "images_box.txt").write_text("\n".join(boxes) + "\n")
    return base


# --------------------------------------------------------------------------- Stanford Cars
CAR_NAMES = [f"Make{i} Model {2000 + i % 13}" for i in range(195)] + ["Ram C/V Cargo Van Minivan 2012"]


def _annotations(rows: list[dict]) -> np.ndarray:
    fields = list(rows[0])
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, r in enumerate(rows):
        arr[0, i] = tuple(np.array([[v]]) if not isinstance(v, str) else v for v in r.values())
    return arr


def _cell(strings: list[str], column: bool = False) -> np.ndarray:
    arr = np.empty((len(strings), 1) if column else (1, len(strings)), dtype=object)
    arr.flat[:] = strings
    return arr


def build_cars_annos(root: Path, per_class: int = 2) -> Path:
    """``cars_annos.mat`` + ``car_ims/``: image 0 of a class is train, the others test."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for c in range(1, 197):
        for j in range(per_class):
            k += 1
            rel = f"car_ims/{k:06d}.jpg"
            touch_image(root / rel)
            rows.append({"relative_im_path": rel, "bbox_x1": 5 + j, "bbox_y1": 7, "bbox_x2": 104,
                         "bbox_y2": 56, "class": c, "test": 0 if j == 0 else 1})
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": _annotations(rows),
                                               "class_names": _cell(CAR_NAMES)})
    return root


def build_cars_devkit(root: Path, per_class: int = 2, labels_in_devkit: bool = False) -> Path:
    """The devkit layout with ``cars_test_annos_withlabels.mat``."""
    import scipy.io

    (root / "devkit").mkdir(parents=True)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": _cell(CAR_NAMES)})
    parts: dict[str, list[dict]] = {"train": [], "test": []}
    for c in range(1, 197):
        for j in range(per_class):
            split = "train" if j == 0 else "test"
            fname = f"{len(parts[split]) + 1:05d}.jpg"
            touch_image(root / f"cars_{split}" / fname)
            parts[split].append({"bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 30, "bbox_y2": 40,
                                 "class": c, "fname": fname})
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat",
                     {"annotations": _annotations(parts["train"])})
    test_dir = root / "devkit" if labels_in_devkit else root
    scipy.io.savemat(test_dir / "cars_test_annos_withlabels.mat",
                     {"annotations": _annotations(parts["test"])})
    return root


def build_cars_kaggle(root: Path, per_class: int = 2) -> Path:
    """Kaggle "by classes folder" CSV layout."""
    (root / "names.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "names.csv").write_text("\n".join(CAR_NAMES) + "\n")
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for c in range(1, 197):
        folder = CAR_NAMES[c - 1].replace("/", "-")
        for j in range(per_class):
            split = "train" if j == 0 else "test"
            fname = f"{len(rows[split]) + 1:05d}.jpg"
            touch_image(root / "car_data" / "car_data" / split / folder / fname)
            rows[split].append(f"{fname},3,4,50,60,{c}")
    for split, r in rows.items():
        (root / f"anno_{split}.csv").write_text("\n".join(r) + "\n")
    return root


# --------------------------------------------------------------------------- Stanford Dogs
def build_dogs(root: Path, per_class: int = 2, annotations: bool = True) -> Path:
    """Images/, Annotation/ and the list .mat files in lists/; image 0 of a breed trains."""
    import scipy.io

    parts: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
    for c in range(1, 121):
        breed = f"n02{c:06d}-Breed_{c}"
        for j in range(per_class):
            stem = f"n02{c:06d}_{j}"
            rel = f"{breed}/{stem}.jpg"
            touch_image(root / "Images" / rel)
            if annotations:
                xml = root / "Annotation" / breed / stem
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text(
                    "<annotation><size><width>500</width><height>375</height></size>"
                    "<object><name>dog</name><bndbox><xmin>10</xmin><ymin>20</ymin>"
                    "<xmax>29</xmax><ymax>59</ymax></bndbox></object>"
                    "<object><name>dog</name><bndbox><xmin>100</xmin><ymin>100</ymin>"
                    "<xmax>399</xmax><ymax>299</ymax></bndbox></object></annotation>")
            parts["train" if j == 0 else "test"].append((rel, f"{breed}/{stem}", c))
    (root / "lists").mkdir(parents=True)
    every = parts["train"] + parts["test"]
    for name, rows in (("train_list.mat", parts["train"]), ("test_list.mat", parts["test"]),
                       ("file_list.mat", every)):
        scipy.io.savemat(root / "lists" / name, {
            "file_list": _cell([r[0] for r in rows], column=True),
            "annotation_list": _cell([r[1] for r in rows], column=True),
            "labels": np.array([[float(r[2])] for r in rows])})
    return root


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def fx() -> SimpleNamespace:
    """The builders and helpers above, for test modules (a fixture rather than an import,
    so that it works under every pytest import mode)."""
    return SimpleNamespace(
        build_cub=build_cub, build_nabirds=build_nabirds, build_cub100=build_cub100,
        build_aircraft=build_aircraft, aircraft_variants=aircraft_variants,
        build_cars_annos=build_cars_annos, build_cars_devkit=build_cars_devkit,
        build_cars_kaggle=build_cars_kaggle, build_dogs=build_dogs, car_names=CAR_NAMES,
        nabirds_leaves=NABIRDS_LEAVES, touch_image=touch_image, rewrite_line=rewrite_line,
        line_error=line_error, png=PNG)
