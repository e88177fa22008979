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

Several processes (``torchrun --nproc_per_node N -m dva_cli embed ...``: ``torch.distributed``
initialised) share one run: rank 0 checks or writes ``meta.json``/``inputs.jsonl`` and lists the
unfinished shards, the ranks take them in turn (unfinished shard ``j`` of the list goes to rank
``j % world``; on a fresh run shard ``i`` goes to rank ``i % world``), each writes its own atomic
shards, and after a barrier rank 0 writes ``items.jsonl`` and the final ``meta.json``. Every
shard is embedded in the same batches whatever the number of processes, so the result is the
single-process one, byte for byte (with the same runtime and thread count per process).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageFile

from dva.data import IMAGE_EXTENSIONS
from dva.data._files import walk_images
from dva.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, prefetch_map, read_json

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike

FORMAT = "dva-embeddings/1"
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
        found, notes = walk_images(src)
        for note in notes:  # said, not silent: a skipped folder changes what the gallery holds
            warnings.warn(note, stacklevel=2)
        files = sorted(Path(p) for p in found)
        if not files:
            raise ValueError(
                f"{src}: no image files found (extensions {sorted(IMAGE_EXTENSIONS)})"
            )
        items: dict[str, GalleryItem] = {}
        for p in files:  # a file and a symlink to it are one gallery image
            real = str(p.resolve())
            if real in items:
                warnings.warn(f"{p}: the same file as {real}, listed once", stacklevel=2)
                continue
            items[real] = GalleryItem(real, p.parent.name if label_from_parent else None)
        return list(items.values())
    if src.is_file():
        return read_image_list(src)
    raise FileNotFoundError(f"{src}: no such directory or list file")


def read_image_list(list_path: str | Path) -> list[GalleryItem]:
    """Read a text/CSV list of ``path[,label]`` lines (see :func:`list_images`).

    Raises:
        ValueError: naming the file (and line) for text that is not UTF-8, an unterminated
            quote, a line with more than two fields, a path that is a symlink loop, or the
            same image listed twice.
    """
    list_path = Path(list_path)
    base = list_path.resolve().parent
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{list_path}: not UTF-8 text (byte {exc.start}); save the list as UTF-8") from None
    items: list[GalleryItem] = []
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    next_start = 1
    for row in reader:
        lineno, next_start = next_start, reader.line_num + 1  # a row starts where the previous one ended
        if any("\n" in c or "\r" in c for c in row):  # csv swallows the rest of the file into one field
            raise ValueError(f"{list_path}:{lineno}: unterminated quote (a field runs over several lines)")
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if not items and not first_line and row[0].lower() in ("path", "image", "file", "filename"):
            continue  # header
        if len(row) > 2:
            raise ValueError(f"{list_path}:{lineno}: expected 'path' or 'path,label', got {len(row)} fields")
        p = Path(row[0]).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            real = str(p.resolve(strict=False))
        except (RuntimeError, OSError) as exc:  # Python raises RuntimeError on a symlink loop
            raise ValueError(f"{list_path}:{lineno}: {p}: {exc}") from None
        if real in first_line:
            raise ValueError(f"{list_path}:{lineno}: {row[0]} is already listed on line {first_line[real]}; "
                             "list each image once")
        first_line[real] = lineno
        items.append(GalleryItem(real, row[1] if len(row) == 2 and row[1] != "" else None))
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


def _draft(img: Image.Image, min_side: int) -> None:
    """Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while the short side stays >= ``min_side``."""
    if getattr(img, "format", None) != "JPEG" or min(img.size) < 2 * min_side:
        return
    f = min_side / min(img.size)
    img.draft(None, (math.ceil(img.width * f), math.ceil(img.height * f)))


def _decode(path: str, draft_min_side: int | None) -> Image.Image:
    from dva.data import ImageReadError, load_rgb
    from dva.data.images import to_rgb

    if not draft_min_side:
        return load_rgb(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            _draft(img, draft_min_side)
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def load_image_strict(path: str | Path, draft_min_side: int | None = None) -> Image.Image:
    """Decode an image fully and convert it to RGB; truncated files are errors.

    Args:
        path: the image file.
        draft_min_side: JPEG only: decode at 1/2, 1/4 or 1/8 scale (PIL draft mode) while the
            short side stays >= this. Faster for photos much larger than the model input, but
            not the same pixels: at 2x the resize target, cosine to the full decode was 0.9996
            (docs/BENCHMARKS.md, Embedding speed), so it is off unless asked for.

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
    from dva.data import ImageReadError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(str(path), draft_min_side)
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


# --------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class _World:
    """This process's place among the processes of one run (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> _World:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_same(self, plan: dict) -> None:
        """Refuse a run whose processes disagree on the model, inputs or settings."""
        if self.size == 1:
            return
        import torch.distributed as dist

        plans: list = [None] * self.size
        dist.all_gather_object(plans, plan)
        for r, other in enumerate(plans):
            diff = [k for k in plan if other.get(k) != plans[0].get(k)]
            if diff:
                details = ", ".join(f"{k}: {plans[0].get(k)!r} (rank 0) vs {other.get(k)!r}" for k in diff)
                raise ValueError(f"rank {r} of {self.size} embeds with other settings than rank 0 ({details}); "
                                 "start every process with the same model and --images")


# --------------------------------------------------------------------------- embedding
def _plan(embedder: EmbedderLike, items: Sequence[GalleryItem], shard_size: int, dtype: str) -> dict:
    return {
        "format": FORMAT,
        "fingerprint": str(embedder.fingerprint),
        "dim": int(embedder.dim),
        "dtype": dtype,
        "normalized": "l2",
        "shard_size": int(shard_size),
        "num_inputs": len(items),
        "num_shards": math.ceil(len(items) / shard_size),
        "inputs_sha256": _inputs_digest(items),
    }


def _prepare(out: Path, plan: dict, items: Sequence[GalleryItem], embedder: EmbedderLike,
             overwrite: bool) -> tuple[dict, list[int]]:
    """Check or start the run in ``out`` (one process only); returns its meta and the unfinished shards."""
    meta_path = out / "meta.json"
    if meta_path.exists() and overwrite:
        old = read_json(meta_path, "embeddings description")
        if any(old.get(k) != plan[k] for k in plan):
            _clear(out)
    if meta_path.exists():
        old = read_json(meta_path, "embeddings description")
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
    return meta, [i for i in range(plan["num_shards"]) if not _shard_done(out, i)]


def _start(world: _World, out: Path, plan: dict, items: Sequence[GalleryItem], embedder: EmbedderLike,
           overwrite: bool) -> tuple[dict, list[int]]:
    """:func:`_prepare` on rank 0, its result (or its error) on every rank."""
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
        items: the images, e.g. from :func:`list_images`.
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
        jpeg_draft: decode large JPEGs at reduced scale (see :func:`load_image_strict`; not
            the same pixels as a full decode).
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
    world = _World.current() if distributed else _World()
    plan = _plan(embedder, items, shard_size, dtype)
    meta, pending = _start(world, out, plan, items, embedder, overwrite)
    mine = pending[world.rank::world.size]
    draft = _draft_side(embedder.transform) if jpeg_draft else None
    _embed_shards(embedder, items, out, mine, shard_size, batch_size, dtype, num_workers,
                  draft, progress and world.rank == 0, on_shard_done)
    world.barrier()  # every shard is on disk
    summary = None
    if world.rank == 0:
        summary = _finalize(out, meta, plan["num_shards"], len(pending), time.perf_counter() - t0)
    world.barrier()  # meta.json says complete
    if summary is None:
        summary = _summary(out, read_json(out / "meta.json", "embeddings description"), len(pending),
                           time.perf_counter() - t0)
    return summary


def _draft_side(transform: Callable) -> int | None:
    """2x the short side the transform resizes to (None when it cannot be read off)."""
    for step in getattr(transform, "transforms", [transform]):
        size = getattr(step, "size", None)
        if type(step).__name__ == "Resize" and isinstance(size, int | list | tuple):
            return 2 * (size if isinstance(size, int) else max(size))
    return None


def _batches(shards: Sequence[int], n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """Input indices per forward pass: each shard cut into batches on its own (never mixed)."""
    out = []
    for i in shards:
        lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
        out += [list(range(b, min(hi, b + batch_size))) for b in range(lo, hi, batch_size)]
    return out


class _ShardWriter:
    """Collects the rows of the shard being embedded and writes it when it is complete."""

    def __init__(self, items: Sequence[GalleryItem], out: Path, shard_size: int, dim: int, dtype: str) -> None:
        self.items, self.out, self.shard_size, self.dim, self.dtype = items, out, shard_size, dim, dtype
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
        self.rows.append({"input": idx, "path": self.items[idx].path, "label": self.items[idx].label})
        self.vecs.append(vec)

    def write(self) -> int:
        order = np.argsort([r["input"] for r in self.rows], kind="stable")
        rows = [self.rows[j] for j in order]
        arr = (np.stack([self.vecs[j] for j in order]) if self.vecs
               else np.zeros((0, self.dim), dtype=np.float32)).astype(self.dtype)
        skipped = sorted(self.skipped, key=lambda s: s["input"])
        npy, js = _shard_paths(self.out, self.shard)
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


def _embed_shards(embedder: EmbedderLike, items: Sequence[GalleryItem], out: Path, shards: Sequence[int],
                  shard_size: int, batch_size: int, dtype: str, num_workers: int, draft: int | None,
                  progress: bool, on_shard_done: Callable[[int], None] | None) -> None:
    """Embed and write ``shards``: one loader for all of them, so decoding never waits for a shard."""
    from tqdm.auto import tqdm

    batches = _batches(shards, len(items), shard_size, batch_size)
    if not batches:
        return
    dataset = _ShardDataset(items, embedder.transform, draft)
    if num_workers > 0:
        loader: Iterable[_Batch] = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate, pin_memory=False)
    else:  # in this process: the next batch decodes in a thread while the model runs
        loader = prefetch_map(lambda b: _collate([dataset[i] for i in b]), batches)
    dim = int(embedder.dim)
    writer = _ShardWriter(items, out, shard_size, dim, dtype)
    bar = tqdm(total=sum(len(b) for b in batches), unit="img", desc="embed", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in loader:
            shard = batch.inputs[0] // shard_size
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


def _summary(out: Path, meta: dict, n_embedded: int, seconds: float) -> EmbedSummary:
    skipped = read_jsonl(out / "skipped.jsonl")
    return EmbedSummary(out, int(meta["count"]), skipped, int(meta["num_shards"]), n_embedded, seconds, meta)


def _finalize(out: Path, meta: dict, n_shards: int, n_embedded: int, seconds: float) -> EmbedSummary:
    rows: list[dict] = []
    skipped: list[dict] = []
    for i in range(n_shards):
        info = read_json(_shard_paths(out, i)[1], "shard description")
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


def _load_shard(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read this embeddings shard ({exc}); delete it and re-run "
                         "the same `dva embed` command to recompute it") from None


@dataclass
class EmbeddingShards:
    """A finished embeddings directory opened shard by shard (memory-mapped, nothing loaded).

    For galleries larger than memory: :meth:`chunks` yields one shard at a time and
    :meth:`rows` reads chosen rows only (e.g. a training sample for IVF-PQ).
    """

    shards: list[np.ndarray]  # (n_i, D) memory-mapped, stored dtype
    paths: list[str]
    labels: list[Label]
    meta: dict

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.paths)

    def chunks(self) -> Iterator[np.ndarray]:
        """The vectors as float32, one shard at a time, in id order."""
        for a in self.shards:
            yield np.asarray(a, dtype=np.float32)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of the sorted ids ``ids`` (reads only those rows)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        start = 0
        for a in self.shards:
            lo, hi = np.searchsorted(ids, [start, start + len(a)])
            out[lo:hi] = a[ids[lo:hi] - start]
            start += len(a)
        return out


def open_embeddings(embeddings_dir: str | Path) -> EmbeddingShards:
    """Open a complete embeddings directory written by :func:`embed_gallery` without loading it.

    Raises:
        FileNotFoundError: no meta.json there.
        ValueError: the run is unfinished or its files disagree.
    """
    d = Path(embeddings_dir)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not found; is {d} an output of `dva embed`?")
    meta = read_json(meta_path, "embeddings description")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r} (want {FORMAT})")
    if meta.get("status") != "complete":
        raise ValueError(f"{d}: the embedding run is unfinished; re-run the same `dva embed` "
                         "command to resume it")
    parts = [_load_shard(_shard_paths(d, i)[0]) for i in range(meta["num_shards"])]
    bad = [i for i, a in enumerate(parts) if a.ndim != 2 or a.shape[1] != meta["dim"]]
    if bad:
        raise ValueError(f"{d}: shard {bad[0]:05d} has shape {parts[bad[0]].shape}, not (n, {meta['dim']}); "
                         "delete the directory and re-embed")
    n = sum(len(a) for a in parts)
    items = read_jsonl(d / "items.jsonl")
    if len(items) != n or n != meta["count"]:
        raise ValueError(f"{d}: items.jsonl ({len(items)}), shards ({n}) and "
                         f"meta.json ({meta['count']}) disagree; delete the directory and re-embed")
    return EmbeddingShards(parts, [it["path"] for it in items], [it.get("label") for it in items], meta)


def load_embeddings(embeddings_dir: str | Path) -> EmbeddingSet:
    """Load a complete embeddings directory written by :func:`embed_gallery` into memory.

    Raises:
        FileNotFoundError: no meta.json there.
        ValueError: the run is unfinished or its files disagree.
    """
    es = open_embeddings(embeddings_dir)
    vectors = (np.concatenate(es.shards).astype(np.float32, copy=False) if es.shards
               else np.zeros((0, es.dim), np.float32))
    return EmbeddingSet(np.ascontiguousarray(vectors), es.paths, es.labels, es.meta)
