"""``dva train``: train DVA adapters from a YAML config with ``--section.key value`` overrides."""
from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "train DVA (frozen backbone + ICA + OPA + DPT) on a dataset; resumable; runs under torchrun"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); omitted keys keep their defaults")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.safetensors if present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to log.jsonl)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    # Any other --section.key value pair is a config override, e.g. --train.epochs 3 --ica.rank 8.
    p.set_defaults(overrides=[])


def run(args: argparse.Namespace) -> int:
    import yaml

    from dva.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from dva_train.train import train

    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if summary.get("metrics"):
        print(json.dumps({"checkpoint": summary["checkpoint"], **summary["metrics"]}, indent=2))
    return 0
