"""What every collection of gallery vectors says about itself, read from its ``meta`` record.

An embeddings directory (:mod:`dva.retrieval.store.embeddings`) and an index
(:mod:`dva.retrieval.index`) both carry a ``meta`` dict written with the vectors and one path
per vector; the model fingerprint and the dimension are read from that record, in one place.
"""
from __future__ import annotations


class DescribedVectors:
    """Mixin: ``fingerprint``, ``dim`` and ``len()`` of vectors described by ``meta`` and ``paths``.

    The class using it provides ``meta: dict`` (with ``fingerprint`` and ``dim``) and
    ``paths: list[str]`` (one gallery path per vector, in id order).
    """

    meta: dict
    paths: list[str]

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model that embedded the vectors."""
        return str(self.meta["fingerprint"])

    @property
    def dim(self) -> int:
        """The dimension of the vectors."""
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.paths)
