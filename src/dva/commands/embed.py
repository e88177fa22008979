"""``dva embed``: embed a gallery of images into resumable shards (see dva.retrieval.store)."""
from __future__ import annotations

import argparse
from typing import Any

NAME = "embed"
HELP = "Embed a folder or list of images into an embeddings directory (resumable)."


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options shared by embed/search/serve/report."""
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", help="a checkpoint from `dva train` (backbone + adapters)")
    g.add_argument("--backbone", help="timm backbone name when no checkpoint is given "
                   "(default mobilenetv2_100: the frozen, un-adapted backbone)")
    g.add_argument("--weights", default=None,
                   help="backbone weights: bundled | hub | none | PATH (default: bundled, or "
                        "the checkpoint's own)")
    g.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    g.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")


def embedder_from_args(args: argparse.Namespace) -> Any:
    """Load the :class:`dva.inference.Embedder` the model options describe."""
    from dva.inference import load_embedder

    weights = args.weights
    if weights is None and not args.checkpoint:
        weights = "bundled"
    return load_embedder(checkpoint=args.checkpoint, backbone=args.backbone, weights=weights,
                         img_size=args.img_size, device=args.device)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--images", required=True,
                   help="a directory (searched recursively) or a list file: one path per line, "
                        "or CSV 'path[,label]' (relative paths are relative to the list file)")
    p.add_argument("--out", required=True, help="the embeddings directory (a killed run resumes)")
    p.add_argument("--labels-from-dirs", action="store_true",
                   help="with a directory: label each image by its parent folder's name")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage dtype of the embeddings (default float32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=4096,
                   help="images per shard: the unit of resumption (default 4096)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an embeddings directory made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.store import embed_gallery, list_images

    items = list_images(args.images, label_from_parent=args.labels_from_dirs)
    embedder = embedder_from_args(args)
    s = embed_gallery(embedder, items, args.out, batch_size=args.batch_size,
                      shard_size=args.shard_size, dtype=args.dtype, num_workers=args.workers,
                      progress=not args.no_progress, overwrite=args.overwrite)
    print(f"embedded {s.count} of {len(items)} images into {s.out_dir} "
          f"(dim {s.meta['dim']}, {s.meta['dtype']}, model {s.meta['fingerprint']}; "
          f"{s.shards_embedded} of {s.shards_total} shards computed now, {s.seconds:.1f}s)")
    if s.skipped:
        print(f"skipped {len(s.skipped)} unreadable images, listed in {s.out_dir / 'skipped.jsonl'}:")
        for row in s.skipped[:10]:
            print(f"  {row['path']}: {row['reason']}")
        if len(s.skipped) > 10:
            print(f"  ... and {len(s.skipped) - 10} more")
    return 0
