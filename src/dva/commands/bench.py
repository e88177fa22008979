"""``dva bench``: the project's benchmarks (``dva bench cub100 ...``, ``dva bench vit-efficiency ...``)."""
from __future__ import annotations

import argparse

NAME = "bench"
HELP = "run a benchmark: cub100 (DVA vs baselines, real data) or vit-efficiency (random ViT-B/16)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", choices=("cub100", "vit-efficiency"), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (see dva bench NAME --help)")


def run(args: argparse.Namespace) -> int:
    rest = list(args.args or []) + list(getattr(args, "overrides", None) or [])
    if args.benchmark == "cub100":
        from dva_train.bench import main
    else:
        from dva_train.bench import vit_main as main
    return int(main(rest) or 0)
