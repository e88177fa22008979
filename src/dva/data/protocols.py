"""Evaluation protocols (docs/METHOD.md, Evaluation) and the published image counts each reader is checked against.

* ``open`` (the standard fine-grained retrieval protocol, "out-of-distribution"): train on
  the first classes, retrieve leave-one-out among the *unseen* remaining classes.
* ``closed`` ("in-distribution"): the dataset's official train/test image split; the test
  images of the same classes are retrieved leave-one-out.

Published counts (``PUBLISHED``):

* CUB-200-2011: 11,788 images, 200 classes; open 1-100 / 101-200 = 5,864 / 5,924;
  closed 5,994 / 5,794.
* Stanford Cars: 16,185 images, 196 classes; open 1-98 / 99-196 = 8,054 / 8,131; closed
  8,144 / 8,041. Some sources quote 8,054 / 8,154 for the open split, which cannot be right:
  8,054 + 8,154 = 16,208 exceeds the 16,185 images of the dataset; the retrieval literature
  (e.g. Oh Song et al. 2016, Kim et al. 2020) states 8,054 / 8,131, which sums to 16,185.
* FGVC-Aircraft (variant level): 10,000 images, 100 variants of exactly 100 images each;
  closed trainval / test = 6,667 / 3,333; open 50 / 50 variants = 5,000 / 5,000 (follows
  from the 100 images per variant).
* Stanford Dogs: 20,580 images, 120 breeds; closed 12,000 / 8,580. The open 60 / 60 split
  has no widely published image count: only the total and the class counts are checked.
* NABirds: 48,562 images, 555 leaf classes; closed 23,929 / 24,633. Open: first 255 /
  remaining 300 classes in ascending NABirds class id; no verified image count is
  published, so only the total and the class counts are checked.
* cub100 (this project's 100-species CUB subset): 5,902 images; open 0-49 / 50-99 = 2,949 /
  2,953; closed 2,999 / 2,903 (see :mod:`dva.data.cub100` for why flag 0 means train).
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from dva.data.records import ImageRecord, Split

OPEN = "open"
CLOSED = "closed"
PROTOCOLS = (OPEN, CLOSED)


class DatasetWarning(UserWarning):
    """A problem found while reading a dataset (e.g. counts that differ from the published ones)."""


@dataclass(frozen=True)
class PublishedCounts:
    """Published sizes of a dataset and its two protocols.

    Attributes:
        num_classes: Number of classes in the whole dataset.
        total_images: Number of images in the whole dataset.
        open_train_classes: Classes with ids ``0 .. open_train_classes-1`` train in ``open``.
        open_images: ``(train, test)`` images of the open protocol, if published.
        closed_images: ``(train, test)`` images of the official split, if it exists.
    """

    num_classes: int
    total_images: int
    open_train_classes: int
    open_images: tuple[int, int] | None
    closed_images: tuple[int, int] | None


PUBLISHED: dict[str, PublishedCounts] = {
    "cub200": PublishedCounts(200, 11_788, 100, (5_864, 5_924), (5_994, 5_794)),
    "cars196": PublishedCounts(196, 16_185, 98, (8_054, 8_131), (8_144, 8_041)),
    "aircraft": PublishedCounts(100, 10_000, 50, (5_000, 5_000), (6_667, 3_333)),
    "dogs": PublishedCounts(120, 20_580, 60, None, (12_000, 8_580)),
    "nabirds": PublishedCounts(555, 48_562, 255, None, (23_929, 24_633)),
    "cub100": PublishedCounts(100, 5_902, 50, (2_949, 2_953), (2_999, 2_903)),
}


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` lower-cased, or raise ``ValueError`` if it is unknown."""
    p = str(protocol).strip().lower()
    if p not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return p


def half_of(num_classes: int) -> int:
    """Number of train classes of the open split of a dataset without a published one.

    The first ``num_classes // 2`` classes train; with an odd count the test side gets the
    extra class.
    """
    return num_classes // 2


def split_by_class(records: Sequence[ImageRecord], num_train_classes: int
                   ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Open split: labels ``< num_train_classes`` train, the others test (order kept)."""
    train = [r for r in records if r.label < num_train_classes]
    test = [r for r in records if r.label >= num_train_classes]
    return train, test


def _count_problems(name: str, protocol: str, train: Sequence[ImageRecord],
                    test: Sequence[ImageRecord]) -> list[str]:
    pub = PUBLISHED.get(name)
    if pub is None:
        return []
    n_tr, n_te = len(train), len(test)
    c_tr = len({r.label for r in train})
    c_te = len({r.label for r in test})
    problems = []
    if protocol == OPEN:
        want_c = (pub.open_train_classes, pub.num_classes - pub.open_train_classes)
        want_n = pub.open_images
    else:
        want_c = (pub.num_classes, pub.num_classes)
        want_n = pub.closed_images
    if (c_tr, c_te) != want_c:
        problems.append(f"{c_tr} train / {c_te} test classes instead of {want_c[0]} / {want_c[1]}")
    if want_n is not None and (n_tr, n_te) != want_n:
        problems.append(f"{n_tr:,} train / {n_te:,} test images instead of the published "
                        f"{want_n[0]:,} / {want_n[1]:,}")
    elif want_n is None and n_tr + n_te != pub.total_images:
        problems.append(f"{n_tr + n_te:,} images in total instead of the published "
                        f"{pub.total_images:,}")
    if not problems:
        return []
    return [f"{name} ({protocol} protocol): {'; '.join(problems)}. Results will NOT be comparable "
            f"to published numbers: check for an incomplete download, a wrong root folder or "
            f"edited annotation files."]


def check_retrievable(records: Sequence[ImageRecord], what: str) -> None:
    """Refuse a leave-one-out set in which no class has a second image: Recall@K would be empty.

    Called before any expensive work (training, embedding), so the user learns it in a second.
    """
    counts = Counter(r.label for r in records)
    if not counts or max(counts.values()) < 2:
        raise ValueError(f"{what}: every class holds a single image ({len(counts)} classes), so leave-one-out "
                         "retrieval has nothing to find; give classes at least 2 images each")


def finish_split(name: str, protocol: str, train: list[ImageRecord], test: list[ImageRecord],
                 class_names: dict[int, str], strict_counts: bool = False,
                 notes: Sequence[str] = (), query: list[ImageRecord] | None = None,
                 gallery: list[ImageRecord] | None = None, rule: str = "") -> Split:
    """Build a :class:`Split`, checking it against the published counts.

    Args:
        name: Dataset name (a key of ``PUBLISHED`` gets its counts checked).
        protocol: ``"open"`` or ``"closed"``.
        train: Training records.
        test: Test records.
        class_names: Class id -> name.
        strict_counts: Raise ``ValueError`` instead of warning when counts differ.
        notes: Reader warnings to attach (also emitted with :func:`warnings.warn`).
        query: Optional query set.
        gallery: Optional gallery set.
        rule: How the classes were divided, in words (default: said from the class ids).

    Returns:
        The split; ``split.warnings`` lists every problem found.
    """
    if not train:
        raise ValueError(f"{name} ({protocol} protocol): the split has no training images")
    if not test:
        raise ValueError(f"{name} ({protocol} protocol): the split has no test images")
    if not rule:
        tr = sorted({r.label for r in train})
        rule = (f"{protocol}: the classes with ids {tr[0]}-{tr[-1]} train, the others test" if protocol == "open"
                else "closed: the dataset's official train/test split")
    problems = _count_problems(name, protocol, train, test)
    if problems and strict_counts:
        raise ValueError(problems[0] + " (strict_counts=True; pass strict_counts=False to "
                         "continue with a warning)")
    all_warnings = [*notes, *problems]
    for msg in all_warnings:
        warnings.warn(msg, DatasetWarning, stacklevel=3)
    return Split(name=name, protocol=protocol, train=train, test=test, class_names=class_names,
                 query=query, gallery=gallery, warnings=all_warnings, rule=rule)
