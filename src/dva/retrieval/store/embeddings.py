"""An embeddings directory on disk, and reading it back (whole, or shard by shard).

Layout of an embeddings directory ``OUT`` (written by :mod:`dva.retrieval.store.embed`)::

    OUT/meta.json         fingerprint, dim, dtype, normalisation, counts, status
    OUT/inputs.jsonl      the planned inputs, one {"path", "label", **extra} per line
    OUT/shards/NNNNN.json rows (input index, path, label, extra) and skipped inputs of shard NNNNN
    OUT/shards/NNNNN.npy  the embeddings of those rows (written last: it marks the shard done)
    OUT/items.jsonl       final rows {"id", "path", "label", **extra}; id = row in the concatenated shards
    OUT/skipped.jsonl     unreadable inputs {"path", "reason"}

``extra`` holds the list CSV's metadata columns (:mod:`dva.retrieval.store.gallery`), named in
order by ``meta.json``'s ``columns`` (absent in directories written before them: no columns).
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dva.retrieval.meta import DescribedVectors
from dva.retrieval.store.gallery import Label, pairs_digest
from dva.utils import atomic_write_bytes, atomic_write_text, read_json

FORMAT = "dva-embeddings/1"
DTYPES = ("float32", "float16")


def shard_paths(out: Path, i: int) -> tuple[Path, Path]:
    """The ``.npy`` (vectors) and ``.json`` (rows, skipped inputs) files of shard ``i``."""
    return out / "shards" / f"{i:05d}.npy", out / "shards" / f"{i:05d}.json"


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save ``array`` in .npy format to ``path`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file (blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class EmbeddingSet(DescribedVectors):
    """A finished embeddings directory loaded into memory (or vectors made in memory).

    ``meta`` needs a ``fingerprint``; its ``dim`` is taken from ``vectors`` when absent.
    """

    vectors: np.ndarray  # (N, D) float32, L2-normalised
    paths: list[str]
    labels: list[Label]
    meta: dict
    extras: list[dict] = field(default_factory=list)  # per row {column: str | None}; [] = none
    columns: tuple[str, ...] = ()  # the extra column names, CSV order

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or not len(self.paths) == len(self.labels) == len(self.vectors):
            raise ValueError(f"EmbeddingSet: vectors of shape {self.vectors.shape} for {len(self.paths)} paths "
                             f"and {len(self.labels)} labels; give one path and label per row")
        self.extras, self.columns = _check_extras("EmbeddingSet", self.extras, self.columns, len(self.paths))
        dim = int(self.vectors.shape[1])
        if int(self.meta.get("dim", dim)) != dim:
            raise ValueError(f"EmbeddingSet: meta says dim {self.meta['dim']}, the vectors have {dim}")
        self.meta = {**self.meta, "dim": dim}


@dataclass
class EmbeddingShards(DescribedVectors):
    """A finished embeddings directory opened shard by shard (memory-mapped, nothing loaded).

    For galleries larger than memory: :meth:`chunks` yields one shard at a time and
    :meth:`rows` reads chosen rows only (e.g. a training sample for IVF-PQ).
    """

    shards: list[np.ndarray]  # (n_i, D) memory-mapped, stored dtype
    paths: list[str]
    labels: list[Label]
    meta: dict
    extras: list[dict] = field(default_factory=list)  # per row {column: str | None}; [] = none
    columns: tuple[str, ...] = ()  # the extra column names, CSV order

    def __post_init__(self) -> None:
        self.extras, self.columns = _check_extras("EmbeddingShards", self.extras, self.columns, len(self.paths))

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

    @classmethod
    def of(cls, es: EmbeddingSet) -> EmbeddingShards:
        """A loaded set as one shard (no copy)."""
        return cls([es.vectors], list(es.paths), list(es.labels), dict(es.meta), list(es.extras), es.columns)


def _check_extras(who: str, extras: list[dict], columns: tuple[str, ...], n: int) -> tuple[list[dict], tuple]:
    """``extras`` (one dict per row, of every column; empty dicts when not given) and ``columns``, checked."""
    columns = tuple(columns)
    if not extras:
        extras = [{} for _ in range(n)] if not columns else [dict.fromkeys(columns) for _ in range(n)]
    if len(extras) != n:
        raise ValueError(f"{who}: {len(extras)} extras for {n} rows; give one dict per row")
    stray = {k for e in extras for k in e} - set(columns)
    if stray:
        raise ValueError(f"{who}: extras name columns {sorted(stray)} not in columns {list(columns)}; "
                         "list every extra column in `columns`")
    # Every row names every column (a missing one is None), so readers need not guess.
    return ([{c: e.get(c) for c in columns} for e in extras] if columns else list(extras)), columns


def _load_shard(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read this embeddings shard ({exc}); delete it and re-run "
                         "the same `dva embed` command to recompute it") from None


def _read_meta(d: Path) -> dict:
    meta_path = d / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not found; is {d} an output of `dva embed`?")
    meta = read_json(meta_path, "embeddings description")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: unknown format {got!r} (want {FORMAT})")
    if meta.get("status") != "complete":
        raise ValueError(f"{d}: the embedding run is unfinished; re-run the same `dva embed` "
                         "command to resume it")
    return meta


def open_embeddings(embeddings_dir: str | Path) -> EmbeddingShards:
    """Open a complete embeddings directory written by :func:`embed_gallery` without loading it.

    Raises:
        FileNotFoundError: no meta.json there.
        ValueError: the run is unfinished or its files disagree.
    """
    d = Path(embeddings_dir)
    meta = _read_meta(d)
    parts = [_load_shard(shard_paths(d, i)[0]) for i in range(meta["num_shards"])]
    bad = [i for i, a in enumerate(parts) if a.ndim != 2 or a.shape[1] != meta["dim"]]
    if bad:
        raise ValueError(f"{d}: shard {bad[0]:05d} has shape {parts[bad[0]].shape}, not (n, {meta['dim']}); "
                         "delete the directory and re-embed")
    n = sum(len(a) for a in parts)
    items = read_jsonl(d / "items.jsonl")
    if len(items) != n or n != meta["count"]:
        raise ValueError(f"{d}: items.jsonl ({len(items)}), shards ({n}) and "
                         f"meta.json ({meta['count']}) disagree; delete the directory and re-embed")
    columns = tuple(meta.get("columns", ()))  # none in directories written before extra columns
    extras = [{c: it.get(c) for c in columns} for it in items]
    return EmbeddingShards(parts, [it["path"] for it in items], [it.get("label") for it in items], meta,
                           extras, columns)


def load_embeddings(embeddings_dir: str | Path) -> EmbeddingSet:
    """Load a complete embeddings directory written by :func:`embed_gallery` into memory.

    Raises:
        FileNotFoundError: no meta.json there.
        ValueError: the run is unfinished or its files disagree.
    """
    es = open_embeddings(embeddings_dir)
    vectors = (np.concatenate(es.shards).astype(np.float32, copy=False) if es.shards
               else np.zeros((0, es.dim), np.float32))
    return EmbeddingSet(np.ascontiguousarray(vectors), es.paths, es.labels, es.meta, es.extras, es.columns)


def open_source(embeddings: str | Path | EmbeddingSet | EmbeddingShards) -> tuple[EmbeddingShards, dict]:
    """Vectors to put in a gallery store, as shards, and where they came from.

    A directory is memory-mapped (nothing loaded), a loaded set becomes one shard. The origin
    (``{"embeddings": the resolved folder or None, "items_sha256": digest of the (path, label)
    pairs}``) is what a store records to recognise a rebuild of the same gallery.
    """
    folder = None
    if isinstance(embeddings, EmbeddingShards):
        es = embeddings
    elif isinstance(embeddings, EmbeddingSet):
        es = EmbeddingShards.of(embeddings)
    else:
        es = open_embeddings(embeddings)
        folder = str(Path(embeddings).resolve())
    return es, {"embeddings": folder, "items_sha256": pairs_digest(es.paths, es.labels)}
