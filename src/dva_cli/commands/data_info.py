"""``dva data-info``: read a dataset under a protocol and print its image and class counts."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

NAME = "data-info"
HELP = "Read a dataset and print its train/test image and class counts (and any warnings)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva_cli._data import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--check", action="store_true",
                   help="decode every image and list the unreadable ones (exit status 1 when there are any)")


def _names(names: list[str], shown: int = 6) -> str:
    if len(names) <= 2 * shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", ... ({len(names) - 2 * shown} more) ..., " + ", ".join(names[-shown:])


def run(args: argparse.Namespace) -> int:
    import time

    from dva.data import load_split

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # they are in split.warnings, printed below
        split = load_split(args.dataset, args.root, args.protocol, args.strict_counts)
    info = split.summary()
    info["root"] = args.root
    info["read_seconds"] = round(time.perf_counter() - t0, 3)
    info["evaluation"] = _evaluation(split)
    info["validation"] = _validation(split)
    if args.check:  # a full decode of every file: a truncated JPEG opens fine and fails only when read
        from dva.data import find_unreadable
        from dva_cli._data import split_paths

        t1 = time.perf_counter()
        paths = split_paths(split)
        info["unreadable"] = [{"path": p, "reason": r} for p, r in find_unreadable(paths)]
        info["check_seconds"] = round(time.perf_counter() - t1, 3)
    status = 1 if info.get("unreadable") else 0
    if args.json:
        print(json.dumps(info, indent=2))
        return status
    for key, value in info.items():
        if key in ("warnings", "train_class_names", "test_class_names", "evaluation", "validation", "unreadable"):
            continue
        print(f"{key:<16} {value}")
    print(f"{'train classes':<16} {_names(info['train_class_names'])}")
    print(f"{'test classes':<16} {_names(info['test_class_names'])}")
    val = info["validation"]
    print(f"{'val classes':<16} " + (f"{_names(val['classes'])} (held out of the train classes by `dva train`'s "
                                     "default, data.val_classes=auto)" if val["classes"] else f"none ({val['note']})"))
    for w in split.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    ev = info["evaluation"]
    if ev["refused"]:
        print(f"PROBLEM: `dva eval` will refuse this split: {ev['refused']}", file=sys.stderr)
    for w in ev["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)
    if args.check:
        bad = info["unreadable"]
        print(f"{'unreadable':<16} {len(bad)} of {len(paths)} images")
        for row in bad:
            print(f"  {row['path']}: {row['reason']}")
        if bad:
            print("PROBLEM: remove the unreadable images from the dataset folder or replace them with readable "
                  "copies", file=sys.stderr)
    return status


def _evaluation(split: object) -> dict[str, object]:
    """What ``dva eval`` would say of the test split: ``refused`` (why, or None) and ``warnings``.

    Printed, not an exit status: data-info describes the dataset; ``dva eval`` is what refuses.
    """
    from dva.data.protocols import check_evaluable

    try:
        return {"refused": None, "warnings": check_evaluable(split, "test")}  # type: ignore[arg-type]
    except ValueError as exc:
        return {"refused": str(exc), "warnings": []}


def _validation(split: object) -> dict[str, object]:
    """The training classes ``dva train`` holds out for validation by default (``data.val_classes=auto``),
    by name, with the rule's note (dva_train.budget.validation_classes: the one rule both use)."""
    from collections import Counter

    from dva.config import AUTO
    from dva_train.budget import validation_classes

    held, note = validation_classes(AUTO, Counter(r.label for r in split.train))  # type: ignore[attr-defined]
    return {"rule": "data.val_classes=auto", "classes": [split.class_names.get(c, str(c)) for c in held],  # type: ignore[attr-defined]
            "note": note}
