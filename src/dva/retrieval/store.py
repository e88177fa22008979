"""Embedding store: a gallery embedded into resumable, atomically written shards.

Layout of an embeddings directory ``OUT``::

    OUT/meta.json         fingerprint, dim, dtype, normalisation, counts, status
    OUT/inputs.jsonl      the planned inputs, one {"path", "label"} per line
    OUT/shards/NNNNN.json rows (input index, path, label) and skipped inputs of shard NNNNN
    OUT/shards/NNNNN.npy  the embeddings of those rows (written last: it marks the shard done)
    OUT/items.jsonl       final rows {"id", "path", "label"}; id = row in the concatenated shards
    OUT/skipped.jsonl     unreadable inputs {"path", "reason"}

Shard ``i`` always covers inputs ``[i * shard_size, (i + 1) * shard_size)``, so a killed run
restarts at the first shard whose ``.npy`` is missing and never re-embeds a finished one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile

from dva.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

FORMAT = "dva-embeddings/1"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
DTYPES = ("float32", "float16")
Label = str | int | None


# --------------------------------------------------------------------------- atomic writes
def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save ``array`` in .npy format to ``path`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class GalleryItem:
    """One input image: its path and optional class label."""

    path: str
    label: Label = None


def list_images(source: str | Path, label_from_parent: bool = False) -> list[GalleryItem]:
    """List the images of a directory (recursive, sorted) or of a list file.

    Args:
        source: a directory, a text file of paths (one per line) or a CSV ``path[,label]``
            (an optional header line starting with ``path`` is skipped). Relative paths in a
            list are relative to the list file's directory.
        label_from_parent: for a directory, use each image's parent folder name as its label.

    Returns:
        The items with absolute paths, in a deterministic order.
    """
    src = Path(source)
    if src.is_dir():
        files = sorted(
            p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            raise ValueError(
                f"{src}: no image files found (extensions {sorted(IMAGE_EXTENSIONS)})"
            )
        return [
            GalleryItem(str(p.resolve()), p.parent.name if label_from_parent else None)
            for p in files
        ]
    if src.is_file():
        return read_image_list(src)
    raise FileNotFoundError(f"{src}: no such directory or list file")


def read_image_list(list_path: str | Path) -> list[GalleryItem]:
    """Read a text/CSV list of ``path[,label]`` lines (see :func:`list_images`)."""
    list_path = Path(list_path)
    base = list_path.resolve().parent
    items: list[GalleryItem] = []
    with open(list_path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() in ("path", "image", "file", "filename"):
                continue  # header
            if len(row) > 2:
                raise ValueError(
                    f"{list_path}:{lineno}: expected 'path' or 'path,label', got {len(row)} fields"
                )
            p = Path(row[0]).expanduser()
            p = p if p.is_absolute() else base / p
            label = row[1] if len(row) == 2 and row[1] != "" else None
            items.append(GalleryItem(str(p.resolve()), label))
    if not items:
        raise ValueError(f"{list_path}: the list holds no image paths")
    return items


# --------------------------------------------------------------------------- image loading
class ImageLoadError(Exception):
    """An input image that cannot be used; ``reason`` is what goes in skipped.jsonl."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_image_strict(path: str | Path) -> Image.Image:
    """Decode an image fully and convert it to RGB; truncated files are errors.

    Raises:
        ImageLoadError: missing, unreadable, truncated or undecodable file.
    """
    # A truncated JPEG decodes "successfully" to grey pixels when this global is on:
    # that would be a silently wrong row, so refuse to run in that mode.
    if getattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False):
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images "
            "would be embedded as grey. Leave it False when embedding a gallery."
        )
    from dva.data import ImageReadError, load_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb(str(path))
    except FileNotFoundError:
        raise ImageLoadError(str(path), "file not found") from None
    except Image.DecompressionBombWarning as exc:
        raise ImageLoadError(str(path), f"too many pixels ({exc})") from None
    except ImageReadError as exc:
        cause = exc.__cause__ or exc
        raise ImageLoadError(str(path), f"{type(cause).__name__}: {cause}") from None
    except Exception as exc:  # PIL raises many types (DecompressionBombError, MemoryError, ...)
        raise ImageLoadError(str(path), f"{type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- embedding
@dataclass
class EmbedSummary:
    """What an :func:`embed_gallery` call did."""

    out_dir: Path
    count: int
    skipped: list[dict]
    shards_total: int
    shards_embedded: int
    seconds: float
    meta: dict = field(default_factory=dict)


def _inputs_digest(items: Sequence[GalleryItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.path, it.label]).encode())
        h.update(b"\n")
    return h.hexdigest()


def _clear(out: Path) -> None:
    """Delete the files an embedding run writes (and nothing else) from ``out``."""
    for name in ("meta.json", "inputs.jsonl", "items.jsonl", "skipped.jsonl"):
        (out / name).unlink(missing_ok=True)
    shard_dir = out / "shards"
    if shard_dir.is_dir():
        for f in shard_dir.iterdir():
            if f.suffix in (".npy", ".json", ".tmp"):
                f.unlink()


def _shard_paths(out: Path, i: int) -> tuple[Path, Path]:
    return out / "shards" / f"{i:05d}.npy", out / "shards" / f"{i:05d}.json"


def _shard_done(out: Path, i: int) -> bool:
    npy, js = _shard_paths(out, i)
    if not (npy.exists() and js.exists()):
        return False
    try:
        rows = len(json.loads(js.read_text())["rows"])
        return int(np.load(npy, mmap_mode="r").shape[0]) == rows
    except (OSError, ValueError, KeyError):
        return False


class _ShardDataset(torch.utils.data.Dataset):
    """Loads + transforms one image per item; failures become (index, None, reason)."""

    def __init__(self, items: Sequence[tuple[int, GalleryItem]], transform: Callable) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor | None, str | None]:
        idx, item = self.items[j]
        try:
            img = load_image_strict(item.path)
        except ImageLoadError as exc:
            return idx, None, exc.reason
        try:
            x = self.transform(img)
        except Exception as exc:  # a transform that chokes on an odd size is a skip too
            return idx, None, f"transform failed: {type(exc).__name__}: {exc}"
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            return idx, None, f"transform returned {type(x).__name__}, not a (3,H,W) tensor"
        return idx, x, None


def _collate_list(batch: list) -> list:
    return batch


def _model_info(embedder: Any) -> dict:
    """Human-readable model description for meta.json (the fingerprint is what is checked)."""
    info: dict = {"img_size": getattr(embedder, "img_size", None)}
    cfg = getattr(getattr(embedder, "model", None), "cfg", None)
    if cfg is not None:
        info["backbone"] = getattr(cfg.backbone, "name", None)
        info["weights"] = getattr(cfg.backbone, "weights", None)
        info["adapters"] = bool(getattr(getattr(cfg, "ica", None), "enabled", False))
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}


def embed_gallery(
    embedder: Any,
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
) -> EmbedSummary:
    """Embed ``items`` into shards under ``out_dir``; resume an interrupted run.

    Args:
        embedder: an object with ``fingerprint``, ``dim``, ``transform`` and
            ``embed_tensor`` (see :class:`dva.inference.Embedder`).
        items: the images, e.g. from :func:`list_images`.
        out_dir: the embeddings directory (created; a previous run there is resumed when it
            used the same model, inputs, dtype and shard size, and refused otherwise).
        batch_size: images per forward pass.
        shard_size: images per shard file (the unit of resumption).
        dtype: storage dtype, ``float32`` or ``float16``.
        num_workers: image-decoding worker processes (0 = in this process).
        progress: show a tqdm progress bar.
        on_shard_done: called with the shard number after each shard is written.
        overwrite: when ``out_dir`` holds a run with other settings, delete it and start
            over instead of raising.

    Returns:
        An :class:`EmbedSummary`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be >= 1")
    if not items:
        raise ValueError("no images to embed")
    out = Path(out_dir)
    t0 = time.perf_counter()
    n_shards = math.ceil(len(items) / shard_size)
    plan = {
        "format": FORMAT,
        "fingerprint": str(embedder.fingerprint),
        "dim": int(embedder.dim),
        "dtype": dtype,
        "normalized": "l2",
        "shard_size": int(shard_size),
        "num_inputs": len(items),
        "num_shards": n_shards,
        "inputs_sha256": _inputs_digest(items),
    }
    meta_path = out / "meta.json"
    if meta_path.exists() and overwrite:
        old = json.loads(meta_path.read_text())
        if any(old.get(k) != plan[k] for k in plan):
            _clear(out)
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = [k for k in plan if old.get(k) != plan[k]]
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {plan[k]!r}" for k in diff)
            raise ValueError(
                f"{out} already holds embeddings made with different settings ({details}); "
                "use another --out directory or delete this one"
            )
        meta = old
    else:
        shard_dir = out / "shards"
        if shard_dir.exists() and any(shard_dir.iterdir()):
            raise ValueError(f"{out}: has shards but no meta.json; use an empty --out directory")
        meta = {**plan, "model": _model_info(embedder), "status": "running", "count": None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / "inputs.jsonl", ({"path": it.path, "label": it.label} for it in items))
        atomic_write_json(meta_path, meta)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (out / "shards").glob(".*.tmp"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)

    pending = [i for i in range(n_shards) if not _shard_done(out, i)]
    pending_set = set(pending)
    done_inputs = sum(
        min(shard_size, len(items) - i * shard_size)
        for i in range(n_shards) if i not in pending_set
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), initial=done_inputs, unit="img", desc="embed",
               disable=not progress, dynamic_ncols=True)
    try:
        for i in pending:
            _embed_shard(embedder, items, out, i, shard_size, batch_size, dtype, num_workers, bar)
            if on_shard_done is not None:
                on_shard_done(i)
    finally:
        bar.close()

    return _finalize(out, meta, n_shards, len(pending), time.perf_counter() - t0)


def _embed_shard(
    embedder: Any,
    items: Sequence[GalleryItem],
    out: Path,
    i: int,
    shard_size: int,
    batch_size: int,
    dtype: str,
    num_workers: int,
    bar: Any,
) -> None:
    lo, hi = i * shard_size, min(len(items), (i + 1) * shard_size)
    ds = _ShardDataset([(j, items[j]) for j in range(lo, hi)], embedder.transform)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_collate_list,
    )
    rows: list[dict] = []
    skipped: list[dict] = []
    vecs: list[np.ndarray] = []
    dim = int(embedder.dim)
    for batch in loader:
        good = [(idx, x) for idx, x, _ in batch if x is not None]
        skipped += [{"input": idx, "path": items[idx].path, "reason": r}
                    for idx, x, r in batch if x is None]
        if good:
            # Images of one batch must share a shape to be stacked; the eval transform makes
            # them square, but group by shape anyway so an odd transform cannot crash a run.
            by_shape: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
            for idx, x in good:
                by_shape.setdefault(tuple(x.shape), []).append((idx, x))
            out_rows: dict[int, np.ndarray] = {}
            for group in by_shape.values():
                emb = embedder.embed_tensor(torch.stack([x for _, x in group]))
                emb = emb.detach().float().cpu().numpy()
                if emb.shape != (len(group), dim):
                    raise RuntimeError(
                        f"embedder returned shape {emb.shape}, expected ({len(group)}, {dim})"
                    )
                for (idx, _), e in zip(group, emb):
                    out_rows[idx] = e
            for idx, _ in good:
                e = out_rows[idx]
                if not np.all(np.isfinite(e)):
                    skipped.append({"input": idx, "path": items[idx].path,
                                    "reason": "non-finite embedding"})
                    continue
                rows.append({"input": idx, "path": items[idx].path, "label": items[idx].label})
                vecs.append(e)
        bar.update(len(batch))
    rows_order = np.argsort([r["input"] for r in rows], kind="stable")
    rows = [rows[j] for j in rows_order]
    arr = (np.stack([vecs[j] for j in rows_order]) if vecs
           else np.zeros((0, dim), dtype=np.float32)).astype(dtype)
    skipped.sort(key=lambda s: s["input"])
    npy, js = _shard_paths(out, i)
    # json first, npy last: the npy's presence is what marks the shard as finished.
    atomic_write_json(js, {"shard": i, "rows": rows, "skipped": skipped})
    atomic_save_npy(npy, arr)


def _finalize(out: Path, meta: dict, n_shards: int, n_embedded: int, seconds: float) -> EmbedSummary:
    rows: list[dict] = []
    skipped: list[dict] = []
    for i in range(n_shards):
        info = json.loads(_shard_paths(out, i)[1].read_text())
        rows += info["rows"]
        skipped += info["skipped"]
    _write_jsonl(out / "items.jsonl",
                 ({"id": k, "path": r["path"], "label": r["label"]} for k, r in enumerate(rows)))
    _write_jsonl(out / "skipped.jsonl",
                 ({"path": s["path"], "reason": s["reason"]} for s in skipped))
    meta = {**meta, "status": "complete", "count": len(rows), "skipped": len(skipped),
            "has_labels": any(r["label"] is not None for r in rows),
            "completed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(out / "meta.json", meta)
    return EmbedSummary(out, len(rows), [{"path": s["path"], "reason": s["reason"]} for s in skipped],
                        n_shards, n_embedded, seconds, meta)


# --------------------------------------------------------------------------- reading back
@dataclass
class EmbeddingSet:
    """A finished embeddings directory loaded into memory."""

    vectors: np.ndarray  # (N, D) float32, L2-normalised
    paths: list[str]
    labels: list[Label]
    meta: dict

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def __len__(self) -> int:
        return len(self.paths)


def load_embeddings(embeddings_dir: str | Path) -> EmbeddingSet:
    """Load a complete embeddings directory written by :func:`embed_gallery`.

    Raises:
        FileNotFoundError: no meta.json there.
        ValueError: the run is unfinished or its files disagree.
    """
    d = Path(embeddings_dir)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not found; is {d} an output of `dva embed`?")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r} (want {FORMAT})")
    if meta.get("status") != "complete":
        raise ValueError(f"{d}: the embedding run is unfinished; re-run the same `dva embed` "
                         "command to resume it")
    parts = [np.load(_shard_paths(d, i)[0], mmap_mode="r") for i in range(meta["num_shards"])]
    vectors = (np.concatenate(parts).astype(np.float32, copy=False) if parts
               else np.zeros((0, meta["dim"]), np.float32))
    items = read_jsonl(d / "items.jsonl")
    if len(items) != vectors.shape[0] or vectors.shape[0] != meta["count"]:
        raise ValueError(f"{d}: items.jsonl ({len(items)}), shards ({vectors.shape[0]}) and "
                         f"meta.json ({meta['count']}) disagree; delete the directory and re-embed")
    return EmbeddingSet(np.ascontiguousarray(vectors), [it["path"] for it in items],
                        [it.get("label") for it in items], meta)
