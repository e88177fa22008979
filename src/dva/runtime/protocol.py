"""What every runtime shares: the :class:`EmbedderLike` interface and the batching helpers.

Retrieval, evaluation and the report only ever see an :class:`EmbedderLike`; the torch
:class:`dva.runtime.torch_embedder.Embedder` and the onnxruntime
:class:`dva.runtime.onnx_embedder.OnnxEmbedder` both implement it with the helpers below, so
decoding, batching and the order of the vectors are the same whichever runtime runs the model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dva.data.images import to_rgb
from dva.utils import prefetch_map


class _Paths(Dataset):
    """Image files -> model inputs through ``transform`` (decoded by :func:`dva.data.load_rgb`)."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from dva.data import load_rgb

        return self.transform(load_rgb(self.paths[i]))


@runtime_checkable
class EmbedderLike(Protocol):
    """What retrieval, evaluation and the report need of a model (every runtime's embedder is one).

    ``fingerprint`` identifies the weights (an index refuses vectors of any other model),
    ``transform`` turns a PIL image into the model's input tensor.
    """

    fingerprint: str
    dim: int
    img_size: int
    transform: Callable

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor: ...

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, num_workers: int = 0,
                    progress: bool = True) -> np.ndarray: ...

    def activation_maps(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor: ...


def embed_pil_images(embedder: EmbedderLike, images: Sequence[Image.Image]) -> np.ndarray:
    """PIL images -> L2-normalised embeddings, through ``embedder``'s own transform (any runtime)."""
    x = torch.stack([embedder.transform(to_rgb(im)) for im in images])
    return embedder.embed_tensor(x).numpy()


def embed_image_files(embedder: EmbedderLike, paths: Sequence[str], batch_size: int = 64, num_workers: int = 0,
                      progress: bool = True) -> np.ndarray:
    """Image files -> embeddings in order, decoded in ``num_workers`` processes (any runtime).

    ``num_workers=0``: decoded in this process, the next batch in a background thread while the
    model runs (:func:`dva.utils.prefetch_map`).
    """
    from tqdm.auto import tqdm

    ds = _Paths(paths, embedder.transform)
    if num_workers > 0:
        loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    else:
        chunks = [range(s, min(s + batch_size, len(ds))) for s in range(0, len(ds), batch_size)]
        loader = prefetch_map(lambda idx: torch.stack([ds[i] for i in idx]), chunks)
    out = [embedder.embed_tensor(x) for x in tqdm(loader, desc="embed", unit="batch", disable=not progress)]
    return torch.cat(out).numpy() if out else np.zeros((0, embedder.dim), np.float32)
