"""What every gallery store answers: search (optionally filtered), items by id, add, remove.

Two stores implement it: a FAISS index directory (:class:`dva.retrieval.index.GalleryIndex`,
the default, one machine) and a Milvus collection (:class:`dva.retrieval.milvus.MilvusGallery`:
Milvus Lite in one local file, or a Milvus server/cluster by URI). The search, serve, dedup
and report code speak only this protocol, so a gallery moves between the two without changes.

Ids are stable integers: an item keeps its id through adds and removals (a removed id is never
reused), so an id stored by a client keeps naming the same image.

Metadata columns: every item has ``id``, ``path`` and ``label``; a gallery listed from a CSV with
more columns (``path,label,source,date``) carries those too, as strings, and ``where`` filters
(:mod:`dva.retrieval.filters`) may name any of them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from dva.retrieval.store.gallery import Label

STORES = ("faiss", "milvus")
BASE_COLUMNS = ("id", "path", "label")


@dataclass(frozen=True)
class Item:
    """One gallery item: its stable id, image path, label and extra metadata columns."""

    id: int
    path: str
    label: Label = None
    extra: Mapping[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """``{"id", "path", "label", **extra}``."""
        return {"id": self.id, "path": self.path, "label": self.label, **self.extra}


@runtime_checkable
class Gallery(Protocol):
    """A gallery store (see the module docstring)."""

    meta: dict

    @property
    def fingerprint(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def columns(self) -> tuple[str, ...]:
        """The filterable columns: ``id``, ``path``, ``label`` and the extra ones."""
        ...

    def __len__(self) -> int: ...

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise :class:`dva.retrieval.index.FingerprintMismatchError` for another model's queries."""
        ...

    def search(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine neighbours among the items ``where`` keeps (all when None).

        Returns:
            ``(scores, ids)``, (Q, k') float32 / int64, best first; rows padded with id -1 when
            fewer than k' items match.
        """
        ...

    def items(self, ids: Sequence[int]) -> list[Item]:
        """The items of ``ids``, in that order (KeyError for an id not in the gallery)."""
        ...

    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[Label],
            extra: Sequence[Mapping[str, str | None]] | None = None) -> np.ndarray:
        """Add L2-normalised ``vectors`` with their items, committed before returning; their new ids."""
        ...

    def remove(self, ids: Sequence[int]) -> int:
        """Remove the items ``ids`` (committed before returning); how many were present."""
        ...

    def ids(self) -> np.ndarray:
        """Every id in the gallery, ascending (int64)."""
        ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored float32 vectors of ``ids`` (approximate for compressed stores: PQ codes only)."""
        ...
