"""The dataset options shared by ``data-info`` and ``eval``, with the protocols spelled out."""
from __future__ import annotations

import argparse
import sys

# What the open-set protocol of each reader is (docs/METHOD.md, Evaluation); shown in --help.
PROTOCOLS_HELP = """\
open-set protocols (train on the first classes, retrieve among the unseen rest, leave-one-out):
  cub200    CUB-200-2011: classes 1-100 train (5,864 images), 101-200 test (5,924)
  cars196   Stanford Cars: classes 1-98 train (8,054), 99-196 test (8,131)
  aircraft  FGVC-Aircraft variants: the first 50 train, the other 50 test
  nabirds   NABirds: the first 255 classes (ascending class id) train, the remaining 300 test
  dogs      Stanford Dogs: the first 60 breeds train, the other 60 test
  folder    root/<class>/...: the first half of the class folders (case-insensitive names) train
  csv       path,label[,x,y,w,h][,split]: the first half of the labels train
  cub100    this project's CUB subset: classes 0-49 train, 50-99 test
closed: the official train/test split (folder: root/train and root/test; csv: a split column)."""


def add_data_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--dataset`` (names or aliases), ``--root``, ``--protocol`` and ``--strict-counts``."""
    from dva.data import DATASETS, PROTOCOLS
    from dva.data.registry import canonical_name

    def dataset(text: str) -> str:
        try:
            return canonical_name(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = PROTOCOLS_HELP
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, type=dataset, metavar="NAME",
                   help=f"dataset reader: {', '.join(DATASETS)} (or an alias such as cub, stanford_cars)")
    g.add_argument("--root", required=True, help="dataset folder (for --dataset csv: the CSV file or its folder)")
    g.add_argument("--protocol", default="open", choices=PROTOCOLS,
                   help="open (default): unseen test classes, the standard protocol; closed: official split")
    g.add_argument("--strict-counts", action="store_true",
                   help="fail when counts differ from the published ones instead of warning")
    return g


def split_paths(split: object) -> list[str]:
    """Every image file of a split (train, test, query and gallery), each once, in order."""
    seen: dict[str, None] = {}
    for part in ("train", "test", "query", "gallery"):
        for rec in getattr(split, part, None) or []:
            seen.setdefault(rec.path, None)
    return list(seen)


def check_hint(dataset: str, root: str, protocol: str) -> str:
    """The command that lists every unreadable image of a dataset."""
    import shlex

    return (f" (`dva data-info --dataset {dataset} --root {shlex.quote(str(root))} --protocol {protocol} --check` "
            "lists them all)")


def all_unreadable(paths: list[str], hint: str = "") -> BaseException | None:
    """After the first image that failed to decode: the error naming every unreadable one of ``paths``
    (None when none is found now: the first error then stands).

    Training and evaluation stop at the first file they cannot read; scanning every file only
    then (a full decode, a few seconds per thousand images) costs nothing on clean data and
    spares a user one rerun per bad file.
    """
    from dva.data import UnreadableImagesError, find_unreadable

    print(f"an image cannot be read; checking all {len(paths)} images of the dataset ...", file=sys.stderr)
    bad = find_unreadable(paths)
    return UnreadableImagesError(bad, hint=hint) if bad else None
