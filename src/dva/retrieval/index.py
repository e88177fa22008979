"""A FAISS gallery index that remembers which model made its vectors.

An index is a directory ``INDEX`` holding ``index.json`` (the model fingerprint, the index
parameters, and per FAISS id the gallery path and label) and the FAISS index file it names,
``index-<build id>.faiss`` (inner product on L2-normalised vectors = cosine similarity).
The FAISS file is written first under a fresh name, then ``index.json`` is atomically
replaced: that replacement is the commit, so a crash mid-build leaves the previous index
usable and a reader never pairs one build's vectors with another build's paths.

An embeddings directory is read shard by shard (memory-mapped): IVF-PQ trains on a sample read
row by row and the vectors are added one shard at a time, so a gallery larger than memory can be
indexed; the result is the same index as from the vectors in memory (tests/retrieval/test_sharded.py).
"""
from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.store import EmbeddingSet, EmbeddingShards, Label, atomic_write_json, open_embeddings
from dva.utils import read_json

FORMAT = "dva-index/1"
KINDS = ("flat", "ivfpq")
REFINES = ("none", "fp16", "flat")  # re-ranking of IVF-PQ candidates with stored vectors
# FAISS k-means wants >= 39 training points per centroid (it warns below that); the same
# holds for each of the 2**nbits centroids of every PQ sub-quantizer.
MIN_POINTS_PER_CENTROID = 39


class FingerprintMismatchError(ValueError):
    """Query model and index were made by different models."""


def _faiss() -> Any:
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4 * sqrt(n)."""
    return max(1, int(round(4 * math.sqrt(n))))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: ~nlist/32 (>= 16), a recall/speed balance for large galleries."""
    return int(min(nlist, max(16, nlist // 32)))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` that is <= 64 (64 bytes/vector)."""
    return max(d for d in range(1, min(dim, 64) + 1) if dim % d == 0)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class GalleryIndex:
    """A loaded gallery index: FAISS index + fingerprint + paths/labels per id."""

    index: Any  # faiss.Index
    meta: dict
    paths: list[str]
    labels: list[Label]
    path: Path | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def check_fingerprint(self, fingerprint: str) -> None:
        """Refuse queries embedded by another model.

        Raises:
            FingerprintMismatchError: naming both fingerprints and the fix.
        """
        if str(fingerprint) != self.fingerprint:
            where = f"index {self.path}" if self.path else "the index"
            raise FingerprintMismatchError(
                f"{where} was built with model fingerprint {self.fingerprint} but the query "
                f"model has fingerprint {fingerprint}; search with the model that built the "
                "index, or re-run `dva embed` and `dva index` with this model"
            )

    def set_nprobe(self, nprobe: int) -> None:
        """Set the IVF lists visited per query (no-op for a flat index)."""
        if self.meta["kind"] == "ivfpq":
            _faiss().extract_index_ivf(self.index).nprobe = int(nprobe)

    def set_k_factor(self, k_factor: int) -> None:
        """Set how many candidates per neighbour an IVF-PQ index re-ranks (refine only)."""
        # ParameterSpace, not downcast_index: a downcast wrapper does not own the C++ index.
        if self.meta["kind"] == "ivfpq" and self.meta["params"].get("refine", "none") != "none":
            _faiss().ParameterSpace().set_index_parameter(self.index, "k_factor_rf", float(k_factor))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine neighbours of L2-normalised ``queries`` (Q, D).

        Returns:
            ``(scores, ids)``, both (Q, k'), k' = min(k, len(self)); best first.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        k = int(min(k, len(self)))
        if k < 1:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        scores, ids = self.index.search(_normalise(q), k)
        return scores, ids

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """Load an index directory written by :func:`build_index`."""
        d = Path(path)
        meta_path = d / "index.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{d}: not a dva index (no index.json); build one with "
                "`dva index --embeddings DIR --out INDEX`"
            )
        meta = read_json(meta_path, "index description")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{meta_path}: unknown format {got!r} (want {FORMAT})")
        faiss_path = d / meta["faiss_file"]
        if not faiss_path.exists():
            raise FileNotFoundError(f"{faiss_path}: missing (named by {meta_path}); rebuild the "
                                    "index with `dva index`")
        try:
            index = _faiss().read_index(str(faiss_path))
        except (RuntimeError, MemoryError) as exc:  # a truncated/corrupt file: a C++ exception (bad_alloc
            # when a damaged size field asks for too much memory)
            raise ValueError(f"{faiss_path}: cannot read the FAISS index ({str(exc).splitlines()[0]}); "
                             "rebuild it with `dva index`") from None
        if index.ntotal != meta["count"] or len(meta["paths"]) != meta["count"]:
            raise ValueError(f"{d}: index.faiss holds {index.ntotal} vectors but index.json "
                             f"describes {meta['count']}; rebuild the index with `dva index`")
        gi = cls(index, meta, list(meta["paths"]), list(meta["labels"]), d)
        if meta["kind"] == "ivfpq":
            gi.set_nprobe(meta["params"]["nprobe"])
            gi.set_k_factor(meta["params"].get("k_factor", 1))
        return gi


def _ivfpq_params(
    n: int, dim: int, nlist: int | None, m: int | None, nbits: int, nprobe: int | None,
    refine: str, k_factor: int,
) -> tuple[dict | None, str]:
    """Choose/validate IVF-PQ parameters; returns (params, "") or (None, why not)."""
    need_pq = MIN_POINTS_PER_CENTROID * (2**nbits)
    if n < need_pq:
        return None, (f"{n} vectors are too few to train PQ codebooks with nbits={nbits} "
                      f"(need >= {need_pq})")
    if nlist is None:
        nlist = min(default_nlist(n), n // MIN_POINTS_PER_CENTROID)
    elif n < MIN_POINTS_PER_CENTROID * nlist:
        return None, (f"{n} vectors are too few to train nlist={nlist} lists "
                      f"(need >= {MIN_POINTS_PER_CENTROID * nlist}); lower --nlist")
    m = default_pq_m(dim) if m is None else m
    if dim % m:
        raise ValueError(f"--m {m} must divide the dimension {dim}")
    nprobe = default_nprobe(nlist) if nprobe is None else min(int(nprobe), nlist)
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
    if k_factor < 1:
        raise ValueError(f"k_factor must be >= 1, got {k_factor}")
    return {"nlist": int(nlist), "m": int(m), "nbits": int(nbits), "nprobe": int(nprobe),
            "refine": refine, "k_factor": int(k_factor)}, ""


def _source(embeddings: str | Path | EmbeddingSet | EmbeddingShards) -> EmbeddingShards:
    """Vectors to index as shards: a directory is memory-mapped, a loaded set is one shard."""
    if isinstance(embeddings, EmbeddingShards):
        return embeddings
    if isinstance(embeddings, EmbeddingSet):
        return EmbeddingShards([embeddings.vectors], list(embeddings.paths), list(embeddings.labels),
                               {**embeddings.meta, "dim": int(embeddings.vectors.shape[1])})
    return open_embeddings(embeddings)


def _trained_ivfpq(es: EmbeddingShards, params: dict, train_size: int | None, seed: int) -> Any:
    """An IVF-PQ index (+ re-ranking store) trained on a seeded sample of ``es`` (records ``train_size``)."""
    faiss = _faiss()
    n, nbits = len(es), params["nbits"]
    spec = f"IVF{params['nlist']},PQ{params['m']}x{nbits}"
    spec += {"none": "", "fp16": ",Refine(SQfp16)", "flat": ",RFlat"}[params["refine"]]
    index = faiss.index_factory(es.dim, spec, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, train_size or 40 * max(params["nlist"], 2**nbits))
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
    sample = _normalise(es.rows(ids))  # only the sampled rows are read
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = seed
    ivf.pq.cp.seed = seed
    # index_factory turns polysemous training on; it is slow and only serves Hamming
    # pre-filtering, which plain IVF-PQ search does not use.
    ivf.do_polysemous_training = False
    index.train(sample)
    ivf.nprobe = params["nprobe"]
    if params["refine"] != "none":
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", float(params["k_factor"]))
    params["train_size"] = int(n_train)
    return index


def build_index(
    embeddings: str | Path | EmbeddingSet | EmbeddingShards,
    out: str | Path,
    *,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    nbits: int = 8,
    nprobe: int | None = None,
    train_size: int | None = None,
    refine: str = "fp16",
    k_factor: int = 8,
    fallback: bool = True,
    seed: int = 0,
) -> GalleryIndex:
    """Build a FAISS index over an embeddings directory and write it to ``out``.

    Args:
        embeddings: an embeddings directory (``dva embed`` output; read shard by shard), a
            loaded set, or :func:`dva.retrieval.store.open_embeddings` of a directory.
        out: the index directory to write.
        kind: ``flat`` (exact) or ``ivfpq`` (approximate, compact; for large galleries).
        nlist: IVF lists (default ~4*sqrt(N), capped so each has >= 39 training vectors).
        m: PQ sub-quantizers (default: largest divisor of the dimension <= 64).
        nbits: bits per PQ code.
        nprobe: lists visited per query (default :func:`default_nprobe`).
        train_size: vectors sampled to train IVF-PQ (default 40 * max(nlist, 2**nbits)).
        refine: IVF-PQ only: re-rank ``k * k_factor`` PQ candidates with vectors kept in the
            index: ``fp16`` (2 bytes/dim; recall@10 ~0.99 instead of ~0.6 on 768-d, see
            docs/BENCHMARKS.md), ``flat`` (4 bytes/dim, exact scores) or ``none`` (smallest:
            PQ codes only, m bytes/vector).
        k_factor: candidates re-ranked per requested neighbour.
        fallback: when the gallery is too small for IVF-PQ, build a flat index (recorded in
            ``index.json`` as ``fallback_reason``) instead of raising.
        seed: sampling/k-means seed.

    Returns:
        The loaded :class:`GalleryIndex`.
    """
    faiss = _faiss()
    es = _source(embeddings)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    n, dim = len(es), es.dim
    if n == 0:
        raise ValueError("the embeddings hold no vectors (every image was skipped?)")
    params: dict = {}
    fallback_reason = None
    if kind == "ivfpq":
        p, why = _ivfpq_params(n, dim, nlist, m, nbits, nprobe, refine, k_factor)
        if p is None:
            if not fallback:
                raise ValueError(f"cannot build an IVF-PQ index: {why}; use --kind flat")
            kind, fallback_reason = "flat", f"ivfpq not possible: {why}; built flat instead"
        else:
            params = p
    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = _trained_ivfpq(es, params, train_size, seed)
    for chunk in es.chunks():  # one shard at a time: the gallery never needs to fit in memory
        index.add(_normalise(chunk))
    meta = {
        "format": FORMAT,
        "kind": kind,
        "metric": "inner_product",
        "fingerprint": es.fingerprint,
        "dim": int(dim),
        "count": int(n),
        "params": params,
        "fallback_reason": fallback_reason,
        "embeddings": {k: es.meta.get(k) for k in ("dtype", "normalized", "model")},
        "build_seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "paths": es.paths,
        "labels": es.labels,
    }
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    faiss_name = f"index-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}.faiss"
    meta["faiss_file"] = faiss_name
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{faiss_name}.", suffix=".tmp")
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.replace(tmp, d / faiss_name)
        atomic_write_json(d / "index.json", meta)  # the commit point
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        (d / faiss_name).unlink(missing_ok=True)
        raise
    for old in d.glob("index-*.faiss"):  # earlier builds, now unreferenced
        if old.name != faiss_name:
            old.unlink(missing_ok=True)
    return GalleryIndex(index, meta, list(es.paths), list(es.labels), d)
