"""Embedding a gallery into resumable, atomically written shards (``dva embed``).

Several processes (``torchrun --nproc_per_node N -m dva_cli embed ...``: ``torch.distributed``
initialised) share one run: rank 0 checks or writes ``meta.json``/``inputs.jsonl`` and lists the
unfinished shards, the ranks take them in turn (unfinished shard ``j`` of the list goes to rank
``j % world``; on a fresh run shard ``i`` goes to rank ``i % world``), each writes its own atomic
shards, and after a barrier rank 0 writes ``items.jsonl`` and the final ``meta.json``. Every
shard is embedded in the same batches whatever the number of processes, so the result is the
single-process one, byte for byte (with the same runtime and thread count per process).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dva.retrieval.store import resume
from dva.retrieval.store.embeddings import DTYPES, atomic_save_npy, shard_paths
from dva.retrieval.store.gallery import GalleryItem
from dva.retrieval.store.images import ImageLoadError, load_image_strict
from dva.retrieval.store.resume import EmbedSummary
from dva.retrieval.store.world import World
from dva.utils import atomic_write_json, prefetch_map, read_json

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike


def embed_gallery(
    embedder: EmbedderLike,
    items: Sequence[GalleryItem],
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 4096,
    dtype: str = "float32",
    num_workers: int = 0,
    progress: bool = True,
    on_shard_done: Callable[[int], None] | None = None,
    overwrite: bool = False,
    jpeg_draft: bool = False,
    distributed: bool = True,
) -> EmbedSummary:
    """Embed ``items`` into shards under ``out_dir``; resume an interrupted run.

    Under ``torch.distributed`` (e.g. ``torchrun``) every process calls this with the same
    arguments and embeds its share of the shards (see the module docstring).

    Args:
        embedder: an object with ``fingerprint``, ``dim``, ``transform`` and
            ``embed_tensor`` (see :class:`dva.runtime.torch_embedder.Embedder`).
        items: the images, e.g. from :func:`dva.retrieval.store.gallery.list_images`.
        out_dir: the embeddings directory (created; a previous run there is resumed when it
            used the same model, inputs, dtype and shard size, and refused otherwise).
        batch_size: images per forward pass.
        shard_size: images per shard file (the unit of resumption).
        dtype: storage dtype, ``float32`` or ``float16``.
        num_workers: image-decoding worker processes; 0 (the default) decodes in this process,
            the next batch in a background thread while the model runs (faster on a CPU: the
            model keeps both cores and no decoded batch is copied between processes).
        progress: show a tqdm progress bar (rank 0 only).
        on_shard_done: called with the shard number after each shard this process wrote.
        overwrite: when ``out_dir`` holds a run with other settings, delete it and start
            over instead of raising.
        jpeg_draft: decode large JPEGs at reduced scale (see
            :func:`dva.retrieval.store.images.load_image_strict`; not the same pixels as a full decode).
        distributed: share the run with the other processes of an initialised
            ``torch.distributed`` group (they must all call this); False = this process alone.

    Returns:
        An :class:`EmbedSummary` (the same on every process).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be >= 1")
    if not items:
        raise ValueError("no images to embed")
    out = Path(out_dir)
    t0 = time.perf_counter()
    world = World.current() if distributed else World()
    plan = resume.plan(embedder, items, shard_size, dtype)
    meta, pending = resume.start(world, out, plan, items, embedder, overwrite)
    mine = pending[world.rank::world.size]
    draft = draft_side(embedder.transform) if jpeg_draft else None
    _embed_shards(embedder, items, out, mine, _Settings(shard_size, batch_size, dtype, num_workers, draft),
                  progress and world.rank == 0, on_shard_done)
    world.barrier()  # every shard is on disk
    summary = None
    if world.rank == 0:
        summary = resume.finalize(out, meta, plan["num_shards"], len(pending), time.perf_counter() - t0)
    world.barrier()  # meta.json says complete
    if summary is None:
        summary = resume.summary(out, read_json(out / "meta.json", "embeddings description"), len(pending),
                                 time.perf_counter() - t0)
    return summary


def draft_side(transform: Callable) -> int | None:
    """2x the short side the transform resizes to (None when it cannot be read off)."""
    for step in getattr(transform, "transforms", [transform]):
        size = getattr(step, "size", None)
        if type(step).__name__ == "Resize" and isinstance(size, int | list | tuple):
            return 2 * (size if isinstance(size, int) else max(size))
    return None


@dataclass(frozen=True)
class _Settings:
    shard_size: int
    batch_size: int
    dtype: str
    num_workers: int
    draft: int | None  # JPEG draft decoding's minimum short side, None = full decode


class _ShardDataset(torch.utils.data.Dataset):
    """Loads + transforms input ``idx``; failures become (idx, None, reason)."""

    def __init__(self, items: Sequence[GalleryItem], transform: Callable,
                 draft_min_side: int | None = None) -> None:
        self.items = items
        self.transform = transform
        self.draft_min_side = draft_min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[int, torch.Tensor | None, str | None]:
        item = self.items[idx]
        try:
            img = load_image_strict(item.path, self.draft_min_side)
        except ImageLoadError as exc:
            return idx, None, exc.reason
        try:
            x = self.transform(img)
        except Exception as exc:  # a transform that chokes on an odd size is a skip too
            return idx, None, f"transform failed: {type(exc).__name__}: {exc}"
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            return idx, None, f"transform returned {type(x).__name__}, not a (3,H,W) tensor"
        return idx, x, None


@dataclass
class _Batch:
    """A decoded batch: the images stacked per shape (in the worker), the failures by input index."""

    groups: list[tuple[list[int], torch.Tensor]]
    failed: dict[int, str]
    inputs: list[int]


def _collate(batch: list) -> _Batch:
    # Images of one batch must share a shape to be stacked; the eval transform makes them
    # square, but group by shape anyway so an odd transform cannot crash a run.
    by_shape: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for idx, x, _ in batch:
        if x is not None:
            by_shape.setdefault(tuple(x.shape), []).append((idx, x))
    groups = [([i for i, _ in g], torch.stack([x for _, x in g])) for g in by_shape.values()]
    return _Batch(groups, {idx: r for idx, x, r in batch if x is None}, [idx for idx, _, _ in batch])


def _batches(shards: Sequence[int], n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """Input indices per forward pass: each shard cut into batches on its own (never mixed)."""
    out = []
    for i in shards:
        lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
        out += [list(range(b, min(hi, b + batch_size))) for b in range(lo, hi, batch_size)]
    return out


class _ShardWriter:
    """Collects the rows of the shard being embedded and writes it when it is complete."""

    def __init__(self, items: Sequence[GalleryItem], out: Path, dim: int, dtype: str) -> None:
        self.items, self.out, self.dim, self.dtype = items, out, dim, dtype
        self.shard: int | None = None
        self.rows: list[dict] = []
        self.skipped: list[dict] = []
        self.vecs: list[np.ndarray] = []

    def add(self, idx: int, vec: np.ndarray | None, reason: str | None) -> None:
        if vec is not None and not np.all(np.isfinite(vec)):
            vec, reason = None, "non-finite embedding"
        if vec is None:
            self.skipped.append({"input": idx, "path": self.items[idx].path, "reason": reason})
            return
        item = self.items[idx]
        row = {"input": idx, "path": item.path, "label": item.label}
        if item.extra:
            row["extra"] = dict(item.extra)
        self.rows.append(row)
        self.vecs.append(vec)

    def write(self) -> int:
        order = np.argsort([r["input"] for r in self.rows], kind="stable")
        rows = [self.rows[j] for j in order]
        arr = (np.stack([self.vecs[j] for j in order]) if self.vecs
               else np.zeros((0, self.dim), dtype=np.float32)).astype(self.dtype)
        skipped = sorted(self.skipped, key=lambda s: s["input"])
        npy, js = shard_paths(self.out, self.shard)
        # json first, npy last: the npy's presence is what marks the shard as finished.
        atomic_write_json(js, {"shard": self.shard, "rows": rows, "skipped": skipped})
        atomic_save_npy(npy, arr)
        done, self.shard, self.rows, self.skipped, self.vecs = self.shard, None, [], [], []
        return done


def _embed_batch(embedder: EmbedderLike, batch: _Batch, dim: int) -> dict[int, np.ndarray]:
    """Embeddings of the decoded images of one batch, by input index."""
    out: dict[int, np.ndarray] = {}
    for ids, x in batch.groups:
        emb = embedder.embed_tensor(x).detach().float().cpu().numpy()
        if emb.shape != (len(ids), dim):
            raise RuntimeError(f"embedder returned shape {emb.shape}, expected ({len(ids)}, {dim})")
        out.update(zip(ids, emb))
    return out


def _loader(dataset: _ShardDataset, batches: list[list[int]], num_workers: int) -> Iterable[_Batch]:
    if num_workers > 0:
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                                           collate_fn=_collate, pin_memory=False)
    # In this process: the next batch decodes in a thread while the model runs.
    return prefetch_map(lambda b: _collate([dataset[i] for i in b]), batches)


def _embed_shards(embedder: EmbedderLike, items: Sequence[GalleryItem], out: Path, shards: Sequence[int],
                  s: _Settings, progress: bool, on_shard_done: Callable[[int], None] | None) -> None:
    """Embed and write ``shards``: one loader for all of them, so decoding never waits for a shard."""
    from tqdm.auto import tqdm

    batches = _batches(shards, len(items), s.shard_size, s.batch_size)
    if not batches:
        return
    loader = _loader(_ShardDataset(items, embedder.transform, s.draft), batches, s.num_workers)
    dim = int(embedder.dim)
    writer = _ShardWriter(items, out, dim, s.dtype)
    bar = tqdm(total=sum(len(b) for b in batches), unit="img", desc="embed", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in loader:
            shard = batch.inputs[0] // s.shard_size
            if writer.shard is not None and shard != writer.shard:
                done = writer.write()
                if on_shard_done is not None:
                    on_shard_done(done)
            writer.shard = shard
            vecs = _embed_batch(embedder, batch, dim)
            for idx in batch.inputs:
                writer.add(idx, vecs.get(idx), batch.failed.get(idx))
            bar.update(len(batch.inputs))
        done = writer.write()
        if on_shard_done is not None:
            on_shard_done(done)
    finally:
        bar.close()
