"""The DVA model: frozen backbone + ICA adapters + class proxies, and its factory.

At query time only :meth:`DVAModel.embed` runs: the original image through the frozen backbone
with its adapters, then L2 normalisation (docs/METHOD.md, Inference). OPA views and DPT exist only in training
(``dva_train``); proxies are training state that inference ignores.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dva import backbone as bb
from dva.config import DVAConfig, validate
from dva.ica import apply_ica, first_adapted_stage, ica_disabled, ica_parameters, set_ica_scale


class DVAModel(nn.Module):
    """Frozen encoder with adapters; ``proxies`` are one learnable vector per training class."""

    def __init__(self, encoder: nn.Module, cfg: DVAConfig, num_classes: int, fingerprint: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.family = bb.family(encoder)
        self.dim = bb.embed_dim(encoder)
        self.fingerprint = fingerprint  # of the frozen weights; checkpoints must match it
        mode = cfg.train.trainable  # one of dva.config.TRAINABLE_DEFAULTS (validated in build_model)
        self.adapted = apply_ica(encoder, cfg.ica) if cfg.ica.enabled and mode == "ica" else []
        self.split = first_adapted_stage(encoder) if self.adapted else len(bb.stages(encoder))
        # Baselines: a projection on the frozen embedding, or the whole backbone trained.
        self.head = None
        if mode == "head":
            self.head = nn.Linear(self.dim, self.dim)
            nn.init.eye_(self.head.weight)  # starts at the frozen embedding, like zero-init adapters
            nn.init.zeros_(self.head.bias)
        elif mode == "full":
            for p in encoder.parameters():
                p.requires_grad_(True)
            self.split = 0
        self.proxies = nn.Parameter(torch.randn(num_classes, self.dim) / 8) if num_classes > 0 else None
        self.data_cfg = bb.pretrained_cfg(encoder)

    # The backbone never leaves eval mode: BatchNorm statistics and dropout stay frozen even
    # when a training loop calls model.train().
    def train(self, mode: bool = True) -> "DVAModel":
        super().train(mode)
        self.encoder.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def adapter_parameters(self) -> list[nn.Parameter]:
        return ica_parameters(self.encoder)

    def set_ica_scale(self, alpha: float) -> None:
        """Scale every adapter's output by ``alpha`` at embedding time (0 = frozen, 1 = trained).

        Recorded in ``cfg.ica.alpha`` too, so a checkpoint saved afterwards keeps it
        (docs/METHOD.md, "Between frozen and trained").

        Raises:
            ValueError: no adapters (a full/head baseline: see :func:`dva.checkpoint.interpolate`).
        """
        set_ica_scale(self.encoder, alpha)
        self.cfg.ica.alpha = float(alpha)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (CNN) or normalised token sequence (ViT)."""
        return bb.forward_suffix(self.encoder, bb.forward_prefix(self.encoder, x, self.split), self.split)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen layers below the first adapter (cacheable: no trainable tensor involved)."""
        with torch.no_grad():
            return bb.forward_prefix(self.encoder, x, self.split)

    def _project(self, e: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        return self.head(e) if self.head is not None and adapted else e

    def embed_from_prefix(self, h: torch.Tensor, normalize: bool = False, adapted: bool = True) -> torch.Tensor:
        e = self._project(bb.pool(self.encoder, bb.forward_suffix(self.encoder, h, self.split)), adapted)
        return F.normalize(e, dim=-1) if normalize else e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) embeddings; the losses normalise themselves."""
        return self._project(bb.pool(self.encoder, self.features(x)))

    def embed(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        """L2-normalised retrieval embeddings of original images, ``(B, dim)``.

        ``adapted=False``: the frozen backbone alone (adapters and head bypassed).
        """
        if adapted:
            return F.normalize(self(x), dim=-1)
        with ica_disabled(self.encoder):
            return F.normalize(bb.pool(self.encoder, self.features(x)), dim=-1)

    @torch.no_grad()
    def prefix_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`prefix` and the frozen network's :meth:`activation_map` from one pass.

        The prefix is the input of the rest of the network, so the frozen response map
        (adapters disabled) continues from it: self-localisation boxes and the prefix cache of
        the same view cost one forward pass (docs/METHOD.md, Training).
        """
        h = self.prefix(x)
        with ica_disabled(self.encoder):
            if self.family == "vit":
                t = h
                for blk in self.encoder.blocks[self.split:-1]:
                    t = blk(t)
                return h, bb.activation_map(self.encoder, None, bb.last_block_attention(self.encoder, t))
            return h, bb.activation_map(self.encoder, bb.forward_suffix(self.encoder, h, self.split))

    @torch.no_grad()
    def activation_map(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        """Where the encoder responds, ``(B, h, w)`` in [0, 1] (docs/METHOD.md, OPA; the paper's Fig. 4)."""
        def run() -> torch.Tensor:
            if self.family == "vit":
                h = bb.forward_prefix(self.encoder, x, len(self.encoder.blocks) - 1)
                return bb.activation_map(self.encoder, None, bb.last_block_attention(self.encoder, h))
            return bb.activation_map(self.encoder, self.features(x))

        if adapted:
            return run()
        with ica_disabled(self.encoder):
            return run()


def build_model(cfg: DVAConfig, num_classes: int = 0) -> DVAModel:
    """Create the frozen backbone from ``cfg.backbone``, add ICA from ``cfg.ica``, and proxies.

    Args:
        cfg: the run configuration.
        num_classes: number of training classes (0: no proxies, e.g. for inference).
    """
    # A config made in code (DVAConfig(), then fields set) has not been through load_config: its
    # values are checked here, once, before the backbone is built (dva.config.validate).
    validate(cfg, "model config", limits=False)  # the run's own limits: load_config / train()
    encoder = bb.create_backbone(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size)
    fp = bb.fingerprint(encoder, cfg.backbone.name)
    return DVAModel(encoder, cfg, num_classes, fp)


def count_parameters(model: DVAModel) -> dict[str, float]:
    """Adapter / backbone parameter counts; ``trainable_fraction`` excludes the proxies."""
    adapter = sum(p.numel() for p in model.adapter_parameters())
    backbone = sum(p.numel() for n, p in model.encoder.named_parameters() if ".ica_" not in n)
    proxies = model.proxies.numel() if model.proxies is not None else 0
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n != "proxies")
    return {
        "adapter_params": adapter,
        "backbone_params": backbone,
        "proxy_params": proxies,
        "trainable_params": trainable,  # adapters, or the head / whole backbone of a baseline
        "trainable_fraction": trainable / backbone,
        "adapted_layers": len(model.adapted),
    }
