"""Retrieval evaluation of an embedder on a dataset split (Recall@K, MAP@R; docs/METHOD.md, Evaluation).

``evaluate(embedder, split)`` embeds the split's retrieval images and scores them: leave-one-out
over ``split.test`` by default, query-vs-gallery when the split defines both sets. The command
line (``dva eval``) only parses options and prints what this returns.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dva.data.protocols import check_retrievable
from dva.data.records import ImageRecord, Split
from dva.inference import EmbedderLike
from dva.metrics import query_stats, retrieval_metrics


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
        embedder: a :class:`dva.inference.Embedder` (or anything with its interface).
        split: from :func:`dva.data.load_split`.
        which: ``"test"`` (the protocol's retrieval set; query-vs-gallery when the split has
            both) or ``"train"`` (leave-one-out over the training images).
        ks: the K of Recall@K.
        batch_size, num_workers, progress: embedding options.
    """
    if which not in ("test", "train"):
        raise ValueError(f"which must be 'test' or 'train', got {which!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    opts = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    t0 = time.perf_counter()
    if which == "test" and split.query is not None and split.gallery is not None:
        q_emb, q_lab = embed_records(embedder, split.query, **opts)
        g_emb, g_lab = embed_records(embedder, split.gallery, **opts)
        seconds = time.perf_counter() - t0
        metrics = retrieval_metrics(q_emb, q_lab, ks, gallery_embeddings=g_emb, gallery_labels=g_lab)
        return Evaluation(metrics, "query-gallery", query_stats(q_lab, g_lab), len(set(q_lab.tolist())), seconds,
                          q_emb, q_lab, g_emb, g_lab)
    records = split.test if which == "test" else split.train
    check_retrievable(records, f"{split.name} ({split.protocol}) {which} split")
    q_emb, q_lab = embed_records(embedder, records, **opts)
    seconds = time.perf_counter() - t0
    return Evaluation(retrieval_metrics(q_emb, q_lab, ks), "leave-one-out", query_stats(q_lab),
                      len(set(q_lab.tolist())), seconds, q_emb, q_lab)
