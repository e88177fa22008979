"""Query-time embedding: the original image only, through backbone + adapters (docs/METHOD.md, Inference)."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dva.config import DVAConfig
from dva.data.images import to_rgb
from dva.model import DVAModel, build_model
from dva.transforms import eval_transform
from dva.utils import prefetch_map, resolve_device


class _Paths(Dataset):
    def __init__(self, paths: Sequence[str], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from dva.data import load_rgb

        return self.transform(load_rgb(self.paths[i]))


@runtime_checkable
class EmbedderLike(Protocol):
    """What retrieval, evaluation and the report need of a model: :class:`Embedder` is one.

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


class Embedder:
    """A model ready to embed images; ``fingerprint`` identifies backbone weights + adapters."""

    def __init__(self, model: DVAModel, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(str(device))
        self.model = model.eval().to(self.device)
        self.img_size = model.cfg.backbone.img_size
        self.dim = model.dim
        self.transform = eval_transform(self.img_size, model.data_cfg)
        h = hashlib.sha256(model.fingerprint.encode())
        for n, p in sorted(model.named_parameters()):
            # Everything training changed except the proxies (adapters, a baseline's head or
            # fine-tuned backbone) changes the embedding.
            if p.requires_grad and n != "proxies":
                h.update(n.encode())
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
        h.update(str(self.img_size).encode())
        self.fingerprint = h.hexdigest()[:16]

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, dim)`` L2-normalised embeddings (CPU)."""
        return self.model.embed(x.to(self.device)).float().cpu()

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return embed_pil_images(self, images)

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, num_workers: int = 0,
                    progress: bool = True) -> np.ndarray:
        """Embed image files in order; an unreadable file raises an error naming it."""
        return embed_image_files(self, paths, batch_size, num_workers, progress)

    @torch.no_grad()
    def activation_maps(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        """``(B, h, w)`` in [0, 1]; ``adapted=False`` gives the frozen backbone's map."""
        return self.model.activation_map(x.to(self.device), adapted=adapted).cpu()


RUNTIMES = ("torch", "onnx", "auto")


def load_embedder(checkpoint: str | None = None, backbone: str | None = None, weights: str | None = "bundled",
                  img_size: int | None = None, device: str = "cpu", runtime: str = "torch") -> EmbedderLike:
    """An embedder from a checkpoint, or the frozen zero-shot backbone.

    Args:
        checkpoint: a ``.safetensors`` file from ``dva train``; None = frozen backbone only.
        backbone: timm name when no checkpoint is given (default ``mobilenetv2_100``).
        weights: backbone weights (``bundled`` | ``hub`` | ``none`` | PATH); with a checkpoint,
            None keeps the ones it was trained with.
        img_size: input size (default: the checkpoint's, else 224).
        device: ``cpu``, ``cuda`` or ``auto``.
        runtime: ``torch`` (an :class:`Embedder`), ``onnx`` (an
            :class:`dva.onnx_embedder.OnnxEmbedder` of the same model, exported once into the
            cache, see :func:`onnx_cache_path`) or ``auto`` (onnx on CPU when onnx and
            onnxruntime are installed, else torch). The fingerprint is the same for all.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if checkpoint:
        from dva.checkpoint import load_checkpoint

        # The checkpoint names its backbone weights; only an explicit other source overrides them
        # (e.g. a local file instead of the hub). The fingerprint check still applies.
        model, _ = load_checkpoint(checkpoint, weights=weights if weights not in (None, "bundled") else None)
        if img_size:
            model.cfg.backbone.img_size = img_size
    else:
        cfg = DVAConfig()
        cfg.backbone.name = backbone or "mobilenetv2_100"
        cfg.backbone.weights = weights or "bundled"
        cfg.backbone.img_size = img_size or 224
        cfg.ica.enabled = False
        model = build_model(cfg, 0)
    embedder = Embedder(model, device)
    if runtime == "torch":
        return embedder
    from dva.onnx_embedder import onnx_available

    if runtime == "auto" and (embedder.device.type != "cpu" or not onnx_available()):
        return embedder
    return onnx_embedder_for(embedder)


def onnx_cache_path(fingerprint: str) -> Path:
    """``$DVA_CACHE/onnx/<fingerprint>.onnx`` (``$DVA_CACHE`` defaults to ``~/.cache/dva``)."""
    from dva.bundled import cache_dir

    return cache_dir() / "onnx" / f"{fingerprint}.onnx"


def onnx_embedder_for(embedder: Embedder, path: str | Path | None = None) -> EmbedderLike:
    """The onnxruntime twin of a torch ``embedder``, exported into the cache on first use.

    A cached file is reused only when its fingerprint and configuration digest match (else it
    is re-exported, atomically, so concurrent processes never read half a file).
    """
    from dva.onnx_embedder import OnnxEmbedder, providers_for
    from dva.onnx_export import config_digest, export_onnx

    providers_for(str(embedder.device))  # no CUDA in this onnxruntime: say so before exporting
    p = Path(path) if path else onnx_cache_path(embedder.fingerprint)
    want = config_digest(embedder)
    try:
        onnx = OnnxEmbedder(p, device=str(embedder.device))
        if onnx.fingerprint == embedder.fingerprint and onnx.meta.get("dva.config_digest") == want:
            return onnx
    except (FileNotFoundError, ValueError):
        pass
    export_onnx(embedder, p)
    return OnnxEmbedder(p, device=str(embedder.device))
