"""The state of an embedding run on disk: its plan, resuming it, and finishing it.

Shard ``i`` always covers inputs ``[i * shard_size, (i + 1) * shard_size)``, so a killed run
restarts at the first shard whose ``.npy`` is missing and never re-embeds a finished one. A run
is resumed only with the same model, inputs, dtype and shard size (the *plan* in ``meta.json``);
other settings are refused unless asked to start over. The inputs are the ``(path, label)``
list and, when the list has extra metadata columns, their names and values: a list whose
columns changed is another input (the plan names them only when there are some, so a run
from before extra columns resumes as it did).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dva.retrieval.store.embeddings import FORMAT, read_jsonl, shard_paths, write_jsonl
from dva.retrieval.store.gallery import GalleryItem, check_column_names, pairs_digest
from dva.retrieval.store.world import World
from dva.utils import atomic_write_json, read_json

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike


@dataclass
class EmbedSummary:
    """What an :func:`dva.retrieval.store.embed.embed_gallery` call did."""

    out_dir: Path
    count: int
    skipped: list[dict]
    shards_total: int
    shards_embedded: int
    seconds: float
    meta: dict = field(default_factory=dict)


def inputs_digest(items: Sequence[GalleryItem]) -> str:
    """SHA-256 of the ordered ``(path, label)`` list: what identifies a run's inputs."""
    return pairs_digest([it.path for it in items], [it.label for it in items])


# Plan keys present only for lists with extra columns; compared whether present or not.
OPTIONAL_PLAN_KEYS = ("columns", "extras_sha256")


def extras_digest(items: Sequence[GalleryItem]) -> str:
    """SHA-256 of every item's extra column values, in order."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(list(it.extra.items())).encode())
        h.update(b"\n")
    return h.hexdigest()


def item_row(it: GalleryItem) -> dict:
    """An input's ``{"path", "label", **extra}`` row (``inputs.jsonl``)."""
    return {"path": it.path, "label": it.label, **it.extra}


def plan(embedder: EmbedderLike, items: Sequence[GalleryItem], shard_size: int, dtype: str) -> dict:
    """The settings a run is resumed with only when they are all equal."""
    columns = list(items[0].extra) if items else []
    odd = next((i for i, it in enumerate(items) if list(it.extra) != columns), None)
    if odd is not None:
        raise ValueError(f"input {odd} ({items[odd].path}) has extra columns {list(items[odd].extra)}, input 0 "
                         f"has {columns}; give every input the same columns")
    check_column_names(columns, "the inputs' extra metadata", fix="rename it")
    extra = {"columns": columns, "extras_sha256": extras_digest(items)} if columns else {}
    return {
        "format": FORMAT,
        "fingerprint": str(embedder.fingerprint),
        "dim": int(embedder.dim),
        "dtype": dtype,
        "normalized": "l2",
        "shard_size": int(shard_size),
        "num_inputs": len(items),
        "num_shards": math.ceil(len(items) / shard_size),
        "inputs_sha256": inputs_digest(items),
        **extra,
    }


def _plan_diff(old: dict, plan: dict) -> list[str]:
    """The plan keys whose values differ between a run on disk and this one."""
    return [k for k in (*plan, *(k for k in OPTIONAL_PLAN_KEYS if k not in plan)) if old.get(k) != plan.get(k)]


def _clear(out: Path) -> None:
    """Delete the files an embedding run writes (and nothing else) from ``out``."""
    for name in ("meta.json", "inputs.jsonl", "items.jsonl", "skipped.jsonl"):
        (out / name).unlink(missing_ok=True)
    shard_dir = out / "shards"
    if shard_dir.is_dir():
        for f in shard_dir.iterdir():
            if f.suffix in (".npy", ".json", ".tmp"):
                f.unlink()


def _shard_done(out: Path, i: int) -> bool:
    npy, js = shard_paths(out, i)
    if not (npy.exists() and js.exists()):
        return False
    try:
        rows = len(json.loads(js.read_text())["rows"])
        return int(np.load(npy, mmap_mode="r").shape[0]) == rows
    except (OSError, ValueError, KeyError):
        return False


def _model_info(embedder: EmbedderLike) -> dict:
    """Human-readable model description for meta.json (the fingerprint is what is checked)."""
    info: dict = {"img_size": getattr(embedder, "img_size", None)}
    cfg = getattr(getattr(embedder, "model", None), "cfg", None)
    if cfg is not None:
        info["backbone"] = getattr(cfg.backbone, "name", None)
        info["weights"] = getattr(cfg.backbone, "weights", None)
        info["adapters"] = bool(getattr(getattr(cfg, "ica", None), "enabled", False))
    extra = getattr(embedder, "model_info", None)  # e.g. OnnxEmbedder: backbone, weights, runtime
    if isinstance(extra, dict):
        info.update({k: extra[k] for k in ("backbone", "weights", "adapters", "runtime") if k in extra})
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}


def _prepare(out: Path, plan: dict, items: Sequence[GalleryItem], embedder: EmbedderLike,
             overwrite: bool) -> tuple[dict, list[int]]:
    """Check or start the run in ``out`` (one process only); returns its meta and the unfinished shards."""
    meta_path = out / "meta.json"
    if meta_path.exists() and overwrite:
        old = read_json(meta_path, "embeddings description")
        if _plan_diff(old, plan):
            _clear(out)
    if meta_path.exists():
        old = read_json(meta_path, "embeddings description")
        diff = _plan_diff(old, plan)
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {plan.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out} already holds embeddings made with different settings ({details}); "
                "use another --out directory, delete this one, or pass --overwrite"
            )
        meta = old
    else:
        shard_dir = out / "shards"
        if shard_dir.exists() and any(shard_dir.iterdir()):
            raise ValueError(f"{out}: has shards but no meta.json; use an empty --out directory")
        meta = {**plan, "model": _model_info(embedder), "status": "running", "count": None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "inputs.jsonl", (item_row(it) for it in items))
        atomic_write_json(meta_path, meta)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (out / "shards").glob(".*.tmp"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    return meta, [i for i in range(plan["num_shards"]) if not _shard_done(out, i)]


def start(world: World, out: Path, plan: dict, items: Sequence[GalleryItem], embedder: EmbedderLike,
          overwrite: bool) -> tuple[dict, list[int]]:
    """Check or start the run on rank 0; its meta and unfinished shards (or its error) on every rank."""
    world.check_same(plan)
    result, error = None, None
    if world.rank == 0:
        try:
            result = _prepare(out, plan, items, embedder, overwrite)
        except Exception as exc:
            if world.size == 1:
                raise
            error = exc
    result, message = world.from_rank0((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if message is not None:
        raise ValueError(f"rank 0 could not start the run: {message}")
    return result


def summary(out: Path, meta: dict, n_embedded: int, seconds: float) -> EmbedSummary:
    """The summary of a finished run, read back from its files (the ranks other than 0)."""
    skipped = read_jsonl(out / "skipped.jsonl")
    return EmbedSummary(out, int(meta["count"]), skipped, int(meta["num_shards"]), n_embedded, seconds, meta)


def finalize(out: Path, meta: dict, n_shards: int, n_embedded: int, seconds: float) -> EmbedSummary:
    """Join the shards' rows into ``items.jsonl``/``skipped.jsonl`` and mark the run complete."""
    rows: list[dict] = []
    skipped: list[dict] = []
    for i in range(n_shards):
        info = read_json(shard_paths(out, i)[1], "shard description")
        rows += info["rows"]
        skipped += info["skipped"]
    write_jsonl(out / "items.jsonl",  # shards written before extra columns have no "extra"
                ({"id": k, "path": r["path"], "label": r["label"], **r.get("extra", {})} for k, r in enumerate(rows)))
    write_jsonl(out / "skipped.jsonl",
                ({"path": s["path"], "reason": s["reason"]} for s in skipped))
    meta = {**meta, "status": "complete", "count": len(rows), "skipped": len(skipped),
            "has_labels": any(r["label"] is not None for r in rows),
            "completed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(out / "meta.json", meta)
    return EmbedSummary(out, len(rows), [{"path": s["path"], "reason": s["reason"]} for s in skipped],
                        n_shards, n_embedded, seconds, meta)
