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

from dva.data._files import ImageRegistry
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


def _class_list(labels: Sequence[int], class_names: dict[int, str] | None, shown: int = 8) -> str:
    names = [repr(class_names.get(c, str(c))) if class_names else str(c) for c in sorted(labels)]
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def check_retrievable(records: Sequence[ImageRecord], what: str, gallery: Sequence[ImageRecord] | None = None,
                      class_names: dict[int, str] | None = None) -> list[str]:
    """Refuse a retrieval set whose score would mean nothing; say which queries cannot be scored.

    Cheap (labels only): callers run it before any training or embedding, so the user learns it
    in a second. The rules (docs/METHOD.md, Evaluation):

    * fewer than 2 query classes: refused. With one class every neighbour is a match, so
      Recall@K and MAP@R are 100% whatever the model.
    * a query class with no positive (a class with a single image in leave-one-out, or absent
      from the gallery): its queries can never retrieve a match. They are excluded from every
      metric (as :mod:`dva.metrics` and pytorch-metric-learning do) and stay in the gallery as
      distractors; the returned warning names the classes. Refused when fewer than 2 classes
      are left to score.

    Args:
        records: The queries (every image, in leave-one-out mode).
        what: The set, in words, for messages (e.g. ``"cub200 (open) test split"``).
        gallery: The gallery in query-vs-gallery mode; ``None`` for leave-one-out.
        class_names: Class id -> name, to name classes in messages.

    Returns:
        Warnings to show (empty when every query can be scored).
    """
    counts = Counter(r.label for r in records)
    fix = ("use a split with more classes (the open protocol tests on the second half of the classes: a "
           "dataset needs at least 4), or --protocol closed when the dataset has an official split")
    if len(counts) < 2:
        raise ValueError(f"{what}: the split has {len(counts)} class(es) ({_class_list(list(counts), class_names)}), "
                         "which cannot measure retrieval: with a single class every neighbour is a match and "
                         f"every score is 100% whatever the model. To evaluate, {fix}")
    if gallery is None:
        lone = [c for c, n in counts.items() if n < 2]
        why = "a single image (leave-one-out leaves it nothing to find)"
    else:
        in_gallery = {r.label for r in gallery}
        lone = [c for c in counts if c not in in_gallery]
        why = "no image in the gallery"
    left = len(counts) - len(lone)
    if left == 0 and gallery is None:
        raise ValueError(f"{what}: every class holds a single image ({len(counts)} classes), so leave-one-out "
                         "retrieval has nothing to find; give classes at least 2 images each")
    if left < 2:
        raise ValueError(f"{what}: only {left} of {len(counts)} query classes can be scored, the others have "
                         f"{why}: {_class_list(lone, class_names)}. One scored class cannot measure retrieval; "
                         "give every class at least 2 images (leave-one-out) or gallery images of every query class")
    if not lone:
        return []
    n_lone = sum(counts[c] for c in lone)
    stay = " and stay in the gallery as distractors" if gallery is None else ""
    return [f"{what}: {len(lone)} of {len(counts)} query classes have {why}: {_class_list(lone, class_names)}. "
            f"Their {n_lone} queries can never retrieve a match, so they are EXCLUDED from every metric (scored: "
            f"{len(records) - n_lone} of {len(records)} queries){stay}. Give those classes a second image "
            "(or gallery images) to score them"]


def retrieval_sets(split: Split, which: str = "test") -> tuple[list[ImageRecord], list[ImageRecord] | None]:
    """``(queries, gallery)`` that evaluation scores on ``split``; gallery ``None`` = leave-one-out.

    ``which="test"``: query vs gallery when the split defines both, else the test images;
    ``"train"``: the training images, leave-one-out.
    """
    if which not in ("test", "train"):
        raise ValueError(f"which must be 'test' or 'train', got {which!r}")
    if which == "test" and split.query is not None and split.gallery is not None:
        return split.query, split.gallery
    return (split.test if which == "test" else split.train), None


def check_evaluable(split: Split, which: str = "test") -> list[str]:
    """Refuse (``ValueError``) a split whose retrieval score would mean nothing; return warnings.

    Reads labels only, no image (and no torch): run it before building or running a model.
    See :func:`check_retrievable` for the rules.
    """
    queries, gallery = retrieval_sets(split, which)
    part = "query/gallery" if gallery is not None else which
    return check_retrievable(queries, f"{split.name} ({split.protocol}) {part} split", gallery, split.class_names)


def check_unique_images(name: str, train: Sequence[ImageRecord], test: Sequence[ImageRecord],
                        class_names: dict[int, str]) -> None:
    """Refuse a split that lists one image file twice (by real path, :class:`~dva.data._files.ImageRegistry`).

    Under two classes, or on both sides of the split, it is a train/test leak; twice under one
    class it would count twice in every metric. Readers that walk folders have already listed
    each file once (with a warning per repeat): this is the last check of every reader.
    """
    reg = ImageRegistry()
    repeats: list[str] = []
    for side, records in (("train", train), ("test", test)):
        for r in records:
            group = f"class {class_names.get(r.label, str(r.label))!r} ({side})"
            earlier = reg.add(r.path, group)
            if earlier is not None and earlier[1] == group:
                repeats.append(f"{r.path} (the same file as {earlier[0]})")
    reg.raise_leaks(name, "and on one side: fix the annotation files (or folders) that list it twice")
    if repeats:
        more = f", ... and {len(repeats) - 5} more" if len(repeats) > 5 else ""
        raise ValueError(f"{name}: {len(repeats)} image file(s) are listed twice in one class: "
                         f"{'; '.join(repeats[:5])}{more}. A duplicate counts twice in every metric: "
                         "list each image once in the annotation files")


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
    check_unique_images(name, train, test, class_names)
    problems = _count_problems(name, protocol, train, test)
    if problems and strict_counts:
        raise ValueError(problems[0] + " (strict_counts=True; pass strict_counts=False to "
                         "continue with a warning)")
    all_warnings = [*notes, *problems]
    for msg in all_warnings:
        warnings.warn(msg, DatasetWarning, stacklevel=3)
    return Split(name=name, protocol=protocol, train=train, test=test, class_names=class_names,
                 query=query, gallery=gallery, warnings=all_warnings, rule=rule)
