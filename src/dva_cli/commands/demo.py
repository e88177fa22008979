"""``dva demo``: train, evaluate against the frozen backbone, index, search and report."""
from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the whole pipeline on the offline default (bundled MobileNetV2; cub100 or generated data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data", default=None, help="cub100 folder (default: $DVA_CUB100 or ../shared/data/cub100)")
    p.add_argument("--synthetic", action="store_true", help="use a generated dataset even if cub100 is present")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="train the demo again in --out (default: reuse or resume the run found there)")
    p.add_argument("--results", default=None,
                   help="also write the run's metrics, timings and provenance to this JSON file "
                        "(the benchmark reference: benchmarks/results/demo.json)")
    # Any other --section.key value pair is a config override, e.g. --train.epochs 1.
    p.set_defaults(overrides=[])


def run(args: argparse.Namespace) -> int:
    from dva_train.demo import run_demo

    run_demo(args.out, args.data, args.overrides, progress=not args.no_progress, synthetic=args.synthetic,
             results=args.results, overwrite=args.overwrite)
    return 0
