"""``dva data-info``: read a dataset under a protocol and print its image and class counts."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

NAME = "data-info"
HELP = "Read a dataset and print its train/test image and class counts (and any warnings)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva.data import DATASETS, PROTOCOLS

    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset reader")
    p.add_argument("--root", required=True,
                   help="dataset folder (for --dataset csv: the CSV file or its folder)")
    p.add_argument("--protocol", default="open", choices=PROTOCOLS,
                   help="open: unseen test classes (standard FGIR); closed: official split")
    p.add_argument("--strict-counts", action="store_true",
                   help="fail when counts differ from the published ones instead of warning")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from dva.data import load_split

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # they are in split.warnings, printed below
        split = load_split(args.dataset, args.root, args.protocol, args.strict_counts)
    info = split.summary()
    info["root"] = args.root
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key != "warnings":
            print(f"{key:<16} {value}")
    for w in split.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    return 0
