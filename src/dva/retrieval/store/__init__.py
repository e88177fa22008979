"""Embedding store: a gallery embedded into resumable, atomically written shards (``dva embed``).

One concept per module, each importing only those above it:

* :mod:`~dva.retrieval.store.gallery`: the inputs, listed from a folder or a list file;
* :mod:`~dva.retrieval.store.images`: strict image decoding (broken files are errors, never grey);
* :mod:`~dva.retrieval.store.embeddings`: the directory layout and reading it back;
* :mod:`~dva.retrieval.store.world`: the processes sharing one run under ``torch.distributed``;
* :mod:`~dva.retrieval.store.resume`: a run's plan, resuming it, finishing it;
* :mod:`~dva.retrieval.store.embed`: :func:`embed_gallery`, the shard loader and writer.
"""
from dva.retrieval.store.gallery import GalleryItem, Label, list_images, read_image_list
from dva.retrieval.store.images import ImageLoadError, load_image_strict
from dva.retrieval.store.embeddings import (
    DTYPES,
    FORMAT,
    EmbeddingSet,
    EmbeddingShards,
    atomic_save_npy,
    load_embeddings,
    open_embeddings,
    read_jsonl,
)
from dva.retrieval.store.resume import EmbedSummary
from dva.retrieval.store.embed import draft_side, embed_gallery

__all__ = [
    "DTYPES",
    "FORMAT",
    "EmbedSummary",
    "EmbeddingSet",
    "EmbeddingShards",
    "GalleryItem",
    "ImageLoadError",
    "Label",
    "atomic_save_npy",
    "draft_side",
    "embed_gallery",
    "list_images",
    "load_embeddings",
    "load_image_strict",
    "open_embeddings",
    "read_image_list",
    "read_jsonl",
]
