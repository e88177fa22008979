"""Retrieval evaluation of an embedder on a dataset split (Recall@K, MAP@R; docs/METHOD.md, Evaluation).

``evaluate(embedder, split)`` embeds the split's retrieval images and scores them: leave-one-out
over ``split.test`` by default, query-vs-gallery when the split defines both sets. The command
line (``dva eval``) only parses options and prints what this returns.

A split whose score would mean nothing (one query class; no class left with a match to find) is
refused by :func:`~dva.data.protocols.check_evaluable` before a single image is embedded; queries that can never
retrieve a match (a class with one image) are excluded loudly (docs/METHOD.md, Evaluation).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dva.data.protocols import DatasetWarning, check_evaluable, retrieval_sets
from dva.data.records import ImageRecord, Split
from dva.metrics import query_stats, retrieval_metrics
from dva.runtime.protocol import EmbedderLike

__all__ = ["Evaluation", "check_evaluable", "embed_records", "evaluate"]


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    Attributes:
        metrics: ``recall@K`` for each K, ``map@r``, ``r_precision``.
        mode: ``"leave-one-out"`` or ``"query-gallery"``.
        stats: query counts (:func:`dva.metrics.query_stats`): queries, scored, excluded.
        classes: number of query classes.
        embed_seconds: time spent embedding.
        embeddings, labels: the query embeddings and labels.
        gallery_embeddings, gallery_labels: the gallery's, in query-gallery mode (else None).
        warnings: what :func:`~dva.data.protocols.check_evaluable` said (queries excluded: no match to find).
    """

    metrics: dict[str, float]
    mode: str
    stats: dict[str, int]
    classes: int
    embed_seconds: float
    embeddings: np.ndarray
    labels: np.ndarray
    gallery_embeddings: np.ndarray | None = None
    gallery_labels: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


def embed_records(embedder: EmbedderLike, records: Sequence[ImageRecord], batch_size: int = 64,
                  num_workers: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings, labels)`` of ``records``, in order."""
    emb = embedder.embed_paths([r.path for r in records], batch_size=batch_size, num_workers=num_workers,
                               progress=progress)
    return emb, np.asarray([r.label for r in records], dtype=np.int64)


def evaluate(embedder: EmbedderLike, split: Split, which: str = "test", ks: Sequence[int] = (1, 2, 4, 8),
             batch_size: int = 64, num_workers: int = 0, progress: bool = False) -> Evaluation:
    """Score ``embedder`` on ``split``.

    Args:
        embedder: a :class:`dva.runtime.torch_embedder.Embedder` (or anything with its interface).
        split: from :func:`dva.data.load_split`.
        which: ``"test"`` (the protocol's retrieval set; query-vs-gallery when the split has
            both) or ``"train"`` (leave-one-out over the training images).
        ks: the K of Recall@K.
        batch_size, num_workers, progress: embedding options.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    notes = check_evaluable(split, which)  # before any embedding: a refused split costs no model pass
    for note in notes:
        warnings.warn(note, DatasetWarning, stacklevel=2)
    queries, gallery = retrieval_sets(split, which)
    opts = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    t0 = time.perf_counter()
    if gallery is not None:
        q_emb, q_lab = embed_records(embedder, queries, **opts)
        g_emb, g_lab = embed_records(embedder, gallery, **opts)
        seconds = time.perf_counter() - t0
        metrics = retrieval_metrics(q_emb, q_lab, ks, gallery_embeddings=g_emb, gallery_labels=g_lab)
        return Evaluation(metrics, "query-gallery", query_stats(q_lab, g_lab), len(set(q_lab.tolist())), seconds,
                          q_emb, q_lab, g_emb, g_lab, notes)
    q_emb, q_lab = embed_records(embedder, queries, **opts)
    seconds = time.perf_counter() - t0
    return Evaluation(retrieval_metrics(q_emb, q_lab, ks), "leave-one-out", query_stats(q_lab),
                      len(set(q_lab.tolist())), seconds, q_emb, q_lab, warnings=notes)
