"""Query-time embedding in torch: the original image only, through backbone + adapters (docs/METHOD.md, Inference)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dva.ica import ica_scale
from dva.model import DVAModel
from dva.runtime.protocol import embed_image_files, embed_pil_images
from dva.transforms import eval_transform
from dva.utils import resolve_device


class Embedder:
    """A model ready to embed images; ``fingerprint`` identifies backbone weights + adapters.

    The reference runtime (:class:`dva.runtime.protocol.EmbedderLike`): the onnxruntime twin
    exported from it (:mod:`dva.runtime.onnx_export`) carries the same fingerprint.
    """

    runtime = "torch"

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
        alpha = ica_scale(model.encoder)
        if alpha is not None and alpha != 1.0:
            # The embedding-time adapter scale (--ica-scale) changes every vector but no tensor:
            # hashed so that an index built at one scale refuses queries at another. Scale 1
            # adds nothing, so the fingerprints of existing indexes stay valid.
            h.update(f"ica.alpha={alpha!r}".encode())
        h.update(str(self.img_size).encode())
        self.fingerprint = h.hexdigest()[:16]

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, dim)`` L2-normalised embeddings (CPU)."""
        return self.model.embed(x.to(self.device)).float().cpu()

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> ``(N, dim)`` embeddings, through the model's own eval transform."""
        return embed_pil_images(self, images)

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, num_workers: int = 0,
                    progress: bool = True) -> np.ndarray:
        """Embed image files in order; an unreadable file raises an error naming it."""
        return embed_image_files(self, paths, batch_size, num_workers, progress)

    @torch.no_grad()
    def activation_maps(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        """``(B, h, w)`` in [0, 1]; ``adapted=False`` gives the frozen backbone's map."""
        return self.model.activation_map(x.to(self.device), adapted=adapted).cpu()
