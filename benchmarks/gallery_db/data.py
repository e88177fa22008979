"""The synthetic gallery on disk: clustered 768-d vectors memory-mapped, metadata columns of known selectivity.

Layout of ``WORK/data`` (written once by :func:`generate`, read by every phase)::

    vectors.npy   (n + n_add, dim) float32, L2-normalised: rows [0, n) are the gallery built first,
                  rows [n, n + n_add) the vectors added to it later
    queries.npy   (queries, dim) float32: fresh points of the same clusters (not gallery members)
    columns.npz   label (the cluster of each row) and the shard columns, one small int per row
    spec.json     the settings that made them (written last: it marks the data complete)

The vectors are those of ``benchmarks.search_speed`` (:func:`benchmarks.search_speed.run.make_data`):
the same generator draws in the same order from the same seed, so the first ``n`` rows are that
benchmark's gallery of ``n`` vectors bit for bit (tests/benchmarks/test_gallery_db.py checks it);
the added rows come after its queries in the same stream (new images of the same clusters).

The metadata columns are drawn independently of the vectors (their own seed): ``shard2``,
``shard10`` and ``shard100`` hold a value in ``0..k-1`` (as a string, as a CSV column is), each
value with probability 1/k, so ``shard10 = '0'`` keeps about 10% of any set of rows, wherever
they lie in the vector space: the hard case for a filtered index, since the filter removes
candidates uniformly from every IVF list instead of selecting a few lists.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _common as C

# column -> number of equally likely values; the filters below keep 1/k of the rows
SHARD_COLUMNS = {"shard2": 2, "shard10": 10, "shard100": 100}
FILTERS = {"50%": "shard2 = '0'", "10%": "shard10 = '0'", "1%": "shard100 = '0'"}
FILTER_COLUMN = {"50%": "shard2", "10%": "shard10", "1%": "shard100"}
_VALUES = tuple(str(i) for i in range(max(SHARD_COLUMNS.values())))  # shared str objects: 1M rows, 300 strings
BLOCK = 16384  # rows drawn per step (search_speed's block: the same draws in the same order)
SHARD_ROWS = 4096  # rows per shard handed to a store: `dva embed`'s default shard size


@dataclass(frozen=True)
class DataSpec:
    """What the synthetic gallery is made of (search_speed's generator settings, plus the add/remove sizes)."""

    n: int = 1_000_000
    n_add: int = 100_000
    n_remove: int = 10_000
    queries: int = 1000
    dim: int = 768
    latent: int = 64
    cluster_size: int = 100
    noise: float = 0.6
    iso: float = 0.05
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)


def _draw_into(out: np.ndarray, labels: np.ndarray, rng: np.random.Generator, centers: np.ndarray,
               proj: np.ndarray, spec: DataSpec) -> None:
    """Fill ``out`` with points of random clusters (and ``labels`` with the clusters): search_speed's draws."""
    n_cls, m = len(centers), len(out)
    for s in range(0, m, BLOCK):
        e = min(m, s + BLOCK)
        cls = rng.integers(0, n_cls, e - s)
        z = centers[cls] + spec.noise * rng.standard_normal((e - s, spec.latent), dtype=np.float32)
        out[s:e] = z @ proj + spec.iso * rng.standard_normal((e - s, spec.dim), dtype=np.float32)
        out[s:e] /= np.linalg.norm(out[s:e], axis=1, keepdims=True)  # as search_speed does: the same rounding
        labels[s:e] = cls


def generate(spec: DataSpec, folder: str | Path) -> Path:
    """Write the gallery, queries and columns of ``spec`` under ``folder`` (see the module docstring).

    Nothing is redone when ``folder`` already holds complete data of the same spec; data of
    another spec is replaced. The vectors are written through a memory map, never held whole.

    Returns:
        ``folder``.
    """
    d = Path(folder)
    done = d / "spec.json"
    if done.is_file() and json.loads(done.read_text()) == spec.to_dict():
        return d
    done.unlink(missing_ok=True)  # incomplete until spec.json is back
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n_cls = max(2, spec.n // spec.cluster_size)
    proj = rng.standard_normal((spec.latent, spec.dim), dtype=np.float32) / np.sqrt(spec.latent)
    centers = rng.standard_normal((n_cls, spec.latent), dtype=np.float32)
    total = spec.n + spec.n_add
    vectors = np.lib.format.open_memmap(d / "vectors.npy", mode="w+", dtype=np.float32, shape=(total, spec.dim))
    queries = np.empty((spec.queries, spec.dim), np.float32)
    labels = np.empty(total, np.int32)
    q_labels = np.empty(spec.queries, np.int32)
    # search_speed's order: gallery, then queries; the added rows come last in the same stream
    _draw_into(vectors[: spec.n], labels[: spec.n], rng, centers, proj, spec)
    _draw_into(queries, q_labels, rng, centers, proj, spec)
    _draw_into(vectors[spec.n:], labels[spec.n:], rng, centers, proj, spec)
    vectors.flush()
    del vectors
    np.save(d / "queries.npy", queries)
    meta_rng = np.random.default_rng([spec.seed, 2])
    cols = {name: meta_rng.integers(0, k, total).astype(np.uint8) for name, k in SHARD_COLUMNS.items()}
    np.savez(d / "columns.npz", label=labels, **cols)
    C.write_json(done, spec.to_dict())
    return d


def removed_rows(alive: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn without replacement from the rows where ``alive`` is true (sorted; seeded)."""
    rows = np.flatnonzero(alive)
    rng = np.random.default_rng([seed, 3, len(rows)])
    return np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))


class Data:
    """The data written by :func:`generate`, opened (vectors memory-mapped)."""

    def __init__(self, folder: str | Path) -> None:
        d = Path(folder)
        if not (d / "spec.json").is_file():
            raise FileNotFoundError(f"{d}: no complete synthetic data (spec.json missing); run the `data` phase "
                                    "(python -m benchmarks.gallery_db.run --work DIR without --reuse)")
        self.folder = d
        self.spec = DataSpec(**json.loads((d / "spec.json").read_text()))
        self.vectors = np.load(d / "vectors.npy", mmap_mode="r")
        self.queries = np.load(d / "queries.npy")
        with np.load(d / "columns.npz") as z:
            self.columns = {k: z[k] for k in z.files}

    @property
    def total(self) -> int:
        """Rows on disk: the first gallery plus the rows to add."""
        return len(self.vectors)

    def paths(self, rows: np.ndarray) -> list[str]:
        """The (made-up) image path of each row: it encodes the row, so an item names its vector."""
        return [f"synthetic/{r:07d}.jpg" for r in np.asarray(rows).tolist()]

    def labels(self, rows: np.ndarray) -> list[int]:
        """The cluster of each row, as Python ints."""
        return self.columns["label"][np.asarray(rows)].tolist()

    def extras(self, rows: np.ndarray) -> list[dict[str, str]]:
        """The shard columns of each row as strings, as a CSV's extra columns arrive."""
        rows = np.asarray(rows)
        cols = [(name, self.columns[name][rows].tolist()) for name in SHARD_COLUMNS]
        return [{name: _VALUES[v[i]] for name, v in cols} for i in range(len(rows))]

    def mask(self, filter_name: str | None) -> np.ndarray | None:
        """The rows a filter of :data:`FILTERS` keeps (None for no filter), over every row on disk."""
        if filter_name is None:
            return None
        return self.columns[FILTER_COLUMN[filter_name]] == 0

    def embeddings(self, start: int, stop: int, shard_rows: int = SHARD_ROWS) -> Any:
        """Rows ``[start, stop)`` as an :class:`~dva.retrieval.store.EmbeddingShards` (memory-mapped, not loaded).

        Cut in shards of ``shard_rows`` like a ``dva embed`` directory: a store reads one shard at a
        time, so its peak memory is that of a real gallery's build, not of one 3 GB chunk.
        """
        from dva.retrieval.store.embeddings import EmbeddingShards

        rows = np.arange(start, stop)
        meta = {"fingerprint": "gallery-db-benchmark", "dim": self.spec.dim, "dtype": "float32", "normalized": True}
        shards = [self.vectors[s:min(stop, s + shard_rows)] for s in range(start, stop, shard_rows)]
        return EmbeddingShards(shards, self.paths(rows), self.labels(rows), meta,
                               extras=self.extras(rows), columns=tuple(SHARD_COLUMNS))


def selectivities(columns: Mapping[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, float]:
    """The fraction of ``rows`` each filter of :data:`FILTERS` keeps (measured, not the nominal 1/k)."""
    return {name: float(np.mean(columns[FILTER_COLUMN[name]][rows] == 0)) for name in FILTERS}
