"""``dva params``: adapter and backbone parameter counts (random init, no weights needed)."""
from __future__ import annotations

import argparse
import json

NAME = "params"
HELP = "count ICA adapter parameters vs the frozen backbone (no weights needed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva.ica_names import CNN_TARGETS, VIT_TARGETS  # inside: `dva --help` stays light

    p.add_argument("--backbone", default="mobilenetv2_100", help="timm model name")
    p.add_argument("--ica-rank", type=int, default=16)
    p.add_argument("--ica-target", default=None,
                   help=f"ViT: {'|'.join(VIT_TARGETS)} (default qk); CNN: {'|'.join(CNN_TARGETS)} joined by +")
    p.add_argument("--ica-blocks", default="auto", help="'auto', 'all' or a slice like '-2:'")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from dva import DVAConfig, build_model, count_parameters

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = args.backbone, "none", args.img_size
    cfg.ica.rank, cfg.ica.blocks = args.ica_rank, args.ica_blocks
    cfg.ica.target = args.ica_target or "auto"
    model = build_model(cfg, 0)
    from dva.ica import resolve

    cfg.ica.target, _ = resolve(cfg.ica, model.family)
    counts = count_parameters(model)
    counts = {"backbone": args.backbone, "ica_rank": args.ica_rank, "ica_target": cfg.ica.target,
              "ica_blocks": args.ica_blocks, **counts}
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{args.backbone}: {counts['adapter_params']:,} adapter parameters in {counts['adapted_layers']} "
              f"layers = {100 * counts['trainable_fraction']:.3f}% of {counts['backbone_params']:,} frozen")
    return 0
