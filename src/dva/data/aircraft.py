"""FGVC-Aircraft 2013b (Maji et al. 2013), variant level (100 classes).

Expected files (``root`` is ``fgvc-aircraft-2013b/data``, ``fgvc-aircraft-2013b`` or its
parent)::

    variants.txt                  one variant name per line (class id = line order, 0-based)
    images_variant_trainval.txt   <image id> <variant name>   (or _train.txt + _val.txt)
    images_variant_test.txt       <image id> <variant name>
    images_box.txt                <image id> <xmin> <ymin> <xmax> <ymax>   (optional, 1-based)
    images/<image id>.jpg

Closed protocol: trainval (6,667) / test (3,333). Open: variants 0-49 / 50-99 of
``variants.txt`` over all 10,000 images. Note that every image has a 20-pixel copyright
banner at the bottom; it is left in place (crop it in the transform if wanted).
"""
from __future__ import annotations

from pathlib import Path

from dva.data import _files as F
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "aircraft"
HINT = ("Point --root at fgvc-aircraft-2013b/data (from fgvc-aircraft-2013b.tar.gz), which holds "
        "variants.txt, images_variant_trainval.txt, images_variant_test.txt and images/.")


def _read_list(path: Path, variant_ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """``<image id> <variant>`` lines -> image id -> (line, class id)."""
    out: dict[str, tuple[int, int]] = {}
    for lineno, (img_id, variant) in F.read_table(path, 2, layout="<image id> <variant name>"):
        if variant not in variant_ids:
            raise ValueError(f"{path}:{lineno}: variant {variant!r} is not in variants.txt")
        if img_id in out:
            raise ValueError(f"{path}:{lineno}: duplicate image id {img_id!r}")
        out[img_id] = (lineno, variant_ids[variant])
    return out


def read_aircraft(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read FGVC-Aircraft at the variant level.

    Args:
        root: The ``data`` folder of fgvc-aircraft-2013b, or a folder above it.
        protocol: ``"open"`` (variants 1-50 / 51-100) or ``"closed"`` (trainval / test).
        strict_counts: Raise instead of warning when counts differ from the published ones.
    """
    protocol = check_protocol(protocol)
    base = F.find_root(root, "variants.txt", ("data", "fgvc-aircraft-2013b/data"), NAME, HINT)
    variants_p = base / "variants.txt"
    variant_ids: dict[str, int] = {}
    for lineno, line in enumerate(variants_p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.strip() in variant_ids:
            raise ValueError(f"{variants_p}:{lineno}: duplicate variant {line.strip()!r}")
        variant_ids[line.strip()] = len(variant_ids)
    if not variant_ids:
        raise ValueError(f"{variants_p}: file is empty; expected one variant name per line")

    if (base / "images_variant_trainval.txt").exists():
        train_files = ["images_variant_trainval.txt"]
    else:
        train_files = ["images_variant_train.txt", "images_variant_val.txt"]
    F.require_files(base, [*train_files, "images_variant_test.txt"], NAME, HINT)
    train_ids: dict[str, tuple[int, int]] = {}
    for name in train_files:
        part = _read_list(base / name, variant_ids)
        dup = set(part) & set(train_ids)
        if dup:
            raise ValueError(f"{base / name}: image id(s) {sorted(dup)[:5]} also in "
                             f"{train_files[0]}; train and val lists must be disjoint")
        train_ids.update(part)
    test_p = base / "images_variant_test.txt"
    test_ids = _read_list(test_p, variant_ids)
    both = set(train_ids) & set(test_ids)
    if both:
        raise ValueError(f"{test_p}: {len(both)} image id(s) also listed for training "
                         f"(e.g. {sorted(both)[:5]}); the official lists are disjoint")

    boxes = _read_boxes(base / "images_box.txt")
    class_names = {i: v for v, i in variant_ids.items()}
    train = [ImageRecord(str(base / "images" / f"{k}.jpg"), c, boxes.get(k))
             for k, (_n, c) in train_ids.items()]
    test = [ImageRecord(str(base / "images" / f"{k}.jpg"), c, boxes.get(k))
            for k, (_n, c) in test_ids.items()]
    F.check_images_exist([*train, *test], NAME, HINT)
    if protocol != CLOSED:
        train, test = split_by_class([*train, *test], PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, class_names, strict_counts)


def _read_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    if not path.exists():
        return {}
    out = {}
    for lineno, parts in F.read_table(path, 5, layout="<image id> <xmin> <ymin> <xmax> <ymax>"):
        if len(parts[4].split()) != 1:
            raise ValueError(f"{path}:{lineno}: expected 5 fields <image id> <xmin> <ymin> "
                             "<xmax> <ymax>")
        x1, y1, x2, y2 = (F.to_float(v, path, lineno, n)
                          for v, n in zip(parts[1:], ("xmin", "ymin", "xmax", "ymax")))
        out[parts[0]] = F.corners_to_box(x1, y1, x2, y2, f"{path}:{lineno}")
    return out
