"""A loaded gallery index: FAISS index, model fingerprint, and the gallery path and label per id."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.index import files
from dva.retrieval.meta import DescribedVectors
from dva.retrieval.store.gallery import Label


class FingerprintMismatchError(ValueError):
    """Query model and index were made by different models."""


def _faiss() -> Any:
    import faiss

    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (all-zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class GalleryIndex(DescribedVectors):
    """A loaded gallery index: FAISS index + fingerprint + paths/labels per id.

    ``meta`` is the description ``index.json`` holds (kind, params, fingerprint, dim, count, ...).
    """

    index: Any  # faiss.Index
    meta: dict
    paths: list[str]
    labels: list[Label]
    path: Path | None = None

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
        scores, ids = self.index.search(normalise(q), k)
        return scores, ids

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """Load an index directory written by :func:`dva.retrieval.index.build.build_index`.

        Safe while the index is rebuilt in place: the files ``index.json`` names outlive the
        commit that replaces them (:mod:`dva.retrieval.index.files`), and should they be gone
        all the same, the new ``index.json`` is read once more.

        Raises:
            FileNotFoundError: not an index directory, or a file of its build is missing.
            ValueError: a damaged or foreign file (the message names it and the fix).
        """
        d = Path(path)
        try:
            return cls._open(d)
        except files.BuildVanished:
            return cls._open(d)  # a newer build was committed meanwhile: index.json names it now

    @classmethod
    def _open(cls, d: Path) -> GalleryIndex:
        pointer = files.read_pointer(d)
        paths, labels = files.read_items(d, pointer)
        index = files.read_faiss(d, pointer)
        n = pointer["count"]
        if not index.ntotal == len(paths) == len(labels) == n or index.d != pointer["dim"]:
            raise ValueError(f"{d}: {pointer['faiss_file']} holds {index.ntotal} vectors of dimension {index.d} "
                             f"but {files.POINTER} describes {n} of dimension {pointer['dim']} with "
                             f"{len(paths)} paths; {files.REBUILD_HINT}")
        gi = cls(index, pointer, paths, labels, d)
        if pointer["kind"] == "ivfpq":
            gi.set_nprobe(pointer["params"]["nprobe"])
            gi.set_k_factor(pointer["params"].get("k_factor", 1))
        return gi
