"""``dva embed``: embed a gallery of images into resumable shards (see dva.retrieval.store.embed).

Under ``torchrun --nproc_per_node N [--nnodes M ...] -m dva_cli embed ...`` (``WORLD_SIZE`` > 1)
the processes join a gloo group and share the shards; rank 0 prints the summary.
"""
from __future__ import annotations

import argparse
import os

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._format import positive_int

NAME = "embed"
HELP = "Embed a folder or list of images into an embeddings directory (resumable)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, runtime=True, ica_scale=True)
    p.add_argument("--images", required=True,
                   help="a directory (searched recursively) or a list file: one path per line, "
                        "or CSV 'path[,label]' (relative paths are relative to the list file)")
    p.add_argument("--out", required=True, help="the embeddings directory (a killed run resumes)")
    p.add_argument("--labels-from-dirs", action="store_true",
                   help="with a directory: label each image by its class folder (the folder right under --images)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage dtype of the embeddings (default float32)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--shard-size", type=positive_int, default=4096,
                   help="images per shard: the unit of resumption (default 4096)")
    p.add_argument("--workers", type=int, default=0,
                   help="image-decoding worker processes (default 0: decode in this process, the next "
                        "batch in a thread while the model runs; fastest on CPUs, docs/BENCHMARKS.md)")
    p.add_argument("--jpeg-draft", action="store_true",
                   help="decode JPEGs much larger than the input at 1/2-1/8 scale (faster for big "
                        "photos; not the same pixels as a full decode: cosine ~0.9996)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an embeddings directory made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _start_distributed() -> tuple[int, int]:
    """Join the torchrun group when ``WORLD_SIZE`` > 1 (gloo: the ranks only exchange small objects)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        # The ranks wait for each other only at the start and after their last shard; a long
        # timeout covers a rank that has a much larger share to resume than the others.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size()


def _local_device(device: str) -> str:
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{local}" if device in ("cuda", "auto") and local is not None and _has_cuda() else device


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    from dva.retrieval.store.embed import embed_gallery
    from dva.retrieval.store.gallery import list_images
    from dva_cli._output import refuse_file_for_folder

    refuse_file_for_folder(args.out)  # before the model loads

    rank, world = _start_distributed()
    try:
        if world > 1:
            args.device = _local_device(args.device)
        items = list_images(args.images, label_from_parent=args.labels_from_dirs)
        if rank != 0:
            _barrier(world)  # rank 0 exports the ONNX model into the cache first
        embedder = _model.embedder_from_args(args)
        if rank == 0:
            _barrier(world)
        _barrier(world)  # every rank has its model: start together
        workers = args.workers
        s = embed_gallery(embedder, items, args.out, batch_size=args.batch_size,
                          shard_size=args.shard_size, dtype=args.dtype, num_workers=workers,
                          progress=not args.no_progress, overwrite=args.overwrite,
                          jpeg_draft=args.jpeg_draft)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        _print_summary(s, len(items), world, getattr(embedder, "runtime", "torch"))
    if s.count == 0:
        raise ValueError(f"none of the {len(items)} listed images could be read "
                         f"(reasons in {s.out_dir / 'skipped.jsonl'}); check --images")
    return 0


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _print_summary(s, n_items: int, world: int, runtime: str) -> None:
    procs = f", {world} processes" if world > 1 else ""
    whole = s.shards_embedded == s.shards_total and s.seconds > 0  # a whole run, not a resumed one
    rate = f", {n_items / s.seconds:.1f} img/s" if whole else ""
    print(f"embedded {s.count} of {n_items} images into {s.out_dir} "
          f"(dim {s.meta['dim']}, {s.meta['dtype']}, model {s.meta['fingerprint']}, {runtime}{procs}; "
          f"{s.shards_embedded} of {s.shards_total} shards computed now, {s.seconds:.2f}s{rate})")
    if s.skipped:
        print(f"skipped {len(s.skipped)} unreadable images, listed in {s.out_dir / 'skipped.jsonl'}:")
        for row in s.skipped[:10]:
            print(f"  {row['path']}: {row['reason']}")
        if len(s.skipped) > 10:
            print(f"  ... and {len(s.skipped) - 10} more")
