"""Stanford Dogs (Khosla et al. 2011), 120 breeds.

Expected files (``root`` is the folder holding ``Images/``)::

    Images/n02085620-Chihuahua/n02085620_10074.jpg
    train_list.mat, test_list.mat, file_list.mat   (here or in lists/; from lists.tar)
        file_list        cell: paths under Images/
        annotation_list  cell: paths under Annotation/ (no extension)
        labels           1..120
    Annotation/n02085620-Chihuahua/n02085620_10074   (optional, PASCAL-VOC XML)

Closed protocol: the official 12,000 / 8,580 split. Open: breeds 1-60 / 61-120 over all
20,580 images (``train_list`` + ``test_list``, or ``file_list`` alone). Boxes come from the
XML annotations when present; with several dogs in an image the largest box is used.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from dva.data import _files as F
from dva.data import _matfile as M
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "dogs"
HINT = ("Point --root at the Stanford Dogs folder holding Images/ (images.tar) and the list files "
        "train_list.mat, test_list.mat / file_list.mat (lists.tar), directly or in lists/.")


def breed_name(folder: str) -> str:
    """``"n02085620-Chihuahua"`` -> ``"Chihuahua"``."""
    return re.sub(r"^n\d+-", "", folder)


def _read_list(path: Path) -> list[tuple[str, str | None, int]]:
    mat = M.load_mat(path, ("file_list", "labels"))
    files = M.string_list(mat["file_list"], path, "file_list")
    labels = M.int_list(mat["labels"], path, "labels")
    annos: list[str | None] = [None] * len(files)
    if "annotation_list" in mat:
        annos = list(M.string_list(mat["annotation_list"], path, "annotation_list"))
    if not len(files) == len(labels) == len(annos):
        raise ValueError(f"{path}: file_list ({len(files)}), labels ({len(labels)}) and "
                         f"annotation_list ({len(annos)}) must have the same length")
    return list(zip(files, annos, labels))


def read_dogs(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read Stanford Dogs.

    Args:
        root: Dataset folder (holding ``Images/``).
        protocol: ``"open"`` (breeds 1-60 / 61-120) or ``"closed"`` (official split).
        strict_counts: Raise instead of warning when counts differ from the published ones.
    """
    protocol = check_protocol(protocol)
    base = F.find_root(root, "Images", ("StanfordDogs", "stanford_dogs"), NAME, HINT)
    lists = next((d for d in (base, base / "lists")
                  if (d / "train_list.mat").exists() or (d / "file_list.mat").exists()), None)
    if lists is None:
        raise FileNotFoundError(f"{NAME}: no train_list.mat / test_list.mat / file_list.mat in "
                                f"{base} or {base / 'lists'}. {HINT}")
    has_split = (lists / "train_list.mat").exists() and (lists / "test_list.mat").exists()
    if has_split:
        parts = {"train": _read_list(lists / "train_list.mat"),
                 "test": _read_list(lists / "test_list.mat")}
    elif protocol == CLOSED:
        raise FileNotFoundError(f"{NAME}: the closed protocol needs train_list.mat and "
                                f"test_list.mat in {lists}. {HINT}")
    else:
        parts = {"all": _read_list(lists / "file_list.mat")}

    class_names: dict[int, str] = {}
    seen: set[str] = set()
    out: dict[str, list[ImageRecord]] = {}
    anno_dir = base / "Annotation"
    for key, rows in parts.items():
        recs = []
        for i, (rel, anno, label) in enumerate(rows, 1):
            where = f"{lists}/{key}_list.mat: file_list({i})" if key != "all" else \
                f"{lists}/file_list.mat: file_list({i})"
            if label < 1:
                raise ValueError(f"{where}: labels start at 1, got {label}")
            if rel in seen:
                raise ValueError(f"{where}: image {rel} listed twice")
            seen.add(rel)
            name = breed_name(rel.split("/")[0])
            if class_names.setdefault(label - 1, name) != name:
                raise ValueError(f"{where}: label {label} given to breed {name!r} but also to "
                                 f"{class_names[label - 1]!r}")
            box = _read_box(anno_dir / anno) if anno and anno_dir.is_dir() else None
            recs.append(ImageRecord(str(base / "Images" / rel), label - 1, box))
        out[key] = recs
    if sorted(class_names) != list(range(len(class_names))):
        raise ValueError(f"{lists}: labels must be 1..{len(class_names)} without gaps")
    every = [r for recs in out.values() for r in recs]
    F.check_images_exist(every, NAME, HINT)
    if protocol == CLOSED:
        train, test = out["train"], out["test"]
    else:
        train, test = split_by_class(every, PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, class_names, strict_counts)


def _read_box(path: Path) -> tuple[float, float, float, float] | None:
    """Largest ``<object><bndbox>`` of a PASCAL-VOC XML file (``None`` if the file is absent)."""
    if not path.is_file():
        return None
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise ValueError(f"{path}: malformed annotation XML ({exc}); re-extract annotation.tar") \
            from exc
    best, best_area = None, -1.0
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t, "")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise ValueError(f"{path}: bndbox needs numeric xmin, ymin, xmax, ymax") from None
        box = F.corners_to_box(x1, y1, x2, y2, str(path))
        if box[2] * box[3] > best_area:
            best, best_area = box, box[2] * box[3]
    return best
