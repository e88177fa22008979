"""Parser for the CUB-200-2011 family of annotation layouts (CUB, NABirds, cub100): one text
file per attribute, each line keyed by an image id."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dva.data import _files as F


@dataclass
class CubStyleTables:
    """The raw content of a CUB-style dataset folder.

    Attributes:
        base: Folder of the annotation files.
        paths: Image id -> path relative to ``base/images``.
        labels: Image id -> ``(line number, raw class id)`` from the labels file.
        is_train: Image id -> official train flag (``None`` when there is no split file).
        classes: Raw class id -> class name (``{}`` when there is no classes file).
        boxes: Image id -> ``(x, y, w, h)`` for the images listed in the boxes file.
        labels_path: The labels file, for error messages.
    """

    base: Path
    paths: dict[str, str]
    labels: dict[str, tuple[int, int]]
    is_train: dict[str, bool] | None
    classes: dict[int, str]
    boxes: dict[str, tuple[float, float, float, float]]
    labels_path: Path


def read_cub_style(base: Path, sep: str | None = None, train_flag: str = "1",
                   boxes_file: str | None = "bounding_boxes.txt",
                   split_file: str | None = "train_test_split.txt") -> CubStyleTables:
    """Read ``images.txt``, ``image_class_labels.txt``, ``classes.txt`` and the optional split
    and boxes files of a CUB-style folder, cross-checking their image ids.

    Args:
        base: Folder holding the files.
        sep: Field separator (``None``: whitespace, as in CUB; ``","`` for cub100).
        train_flag: The split-file value that marks a training image.
        boxes_file: Name of the optional ``<id> x y w h`` file (``None``: do not read boxes).
        split_file: Name of the ``<id> <0|1>`` split file (``None``: no official split).
    """
    images_p = base / "images.txt"
    labels_p = base / "image_class_labels.txt"
    classes_p = base / "classes.txt"
    images = F.unique_ids(F.read_table(images_p, 2, sep, "<image id> <relative path>"), images_p)
    labels_raw = F.unique_ids(F.read_table(labels_p, 2, sep, "<image id> <class id>"), labels_p)
    F.check_same_ids(images, labels_raw, images_p, labels_p)
    labels = {k: (n, F.to_int(v[0], labels_p, n, "class id")) for k, (n, v) in labels_raw.items()}

    classes: dict[int, str] = {}
    for lineno, (cid, cname) in F.read_table(classes_p, 2, sep, "<class id> <class name>"):
        c = F.to_int(cid, classes_p, lineno, "class id")
        if c in classes:
            raise ValueError(f"{classes_p}:{lineno}: duplicate class id {c}")
        classes[c] = cname
    for img_id, (lineno, c) in labels.items():
        if c not in classes:
            raise ValueError(f"{labels_p}:{lineno}: class id {c} of image {img_id} is not listed "
                             f"in {classes_p}")

    is_train = None
    if split_file is not None and (base / split_file).exists():
        split_p = base / split_file
        flags = F.unique_ids(F.read_table(split_p, 2, sep, "<image id> <0|1>"), split_p)
        F.check_same_ids(images, flags, images_p, split_p)
        is_train = {}
        for img_id, (lineno, (flag,)) in flags.items():
            if flag not in ("0", "1"):
                raise ValueError(f"{split_p}:{lineno}: the train/test flag must be 0 or 1, "
                                 f"got {flag!r}")
            is_train[img_id] = flag == train_flag

    boxes: dict[str, tuple[float, float, float, float]] = {}
    if boxes_file is not None and (base / boxes_file).exists():
        boxes_p = base / boxes_file
        for lineno, parts in F.read_table(boxes_p, 5, sep, "<image id> <x> <y> <width> <height>"):
            if parts[0] not in images:
                raise ValueError(f"{boxes_p}:{lineno}: image id {parts[0]!r} is not in {images_p}")
            if len(parts[4].split()) != 1:
                raise ValueError(f"{boxes_p}:{lineno}: expected 5 fields "
                                 "<image id> <x> <y> <width> <height>")
            boxes[parts[0]] = F.to_box(parts[1:], boxes_p, lineno)

    paths = {k: v[0] for k, (_n, v) in images.items()}
    return CubStyleTables(base, paths, labels, is_train, classes, boxes, labels_p)
