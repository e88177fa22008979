"""Discrimination Perception Transfer (DPT): distil the object view into the plain encoder (docs/METHOD.md, DPT).

The teacher is the embedding of the object-focused view ``x_disc`` and the student the embedding
of the original image ``x``; both go through the *same* frozen backbone + ICA. The teacher is
detached (stop-gradient): knowledge flows from the object view into what the encoder computes on
the whole image, which is all that runs at query time.

Loss: ``tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))`` over the proxy-similarity logits
``z`` (the ProxyNCA++ logits), optionally plus ``w_cos * (1 - cos(e_s, sg(e_t)))``. The ``tau^2``
keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dva.losses import proxy_logits


def dpt_loss(student: torch.Tensor, teacher: torch.Tensor, proxies: torch.Tensor, tau: float = 3.0,
             scale: float = 3.0, w_cos: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Distillation loss from ``teacher`` (detached here) to ``student`` embeddings.

    Args:
        student: ``(B, D)`` embeddings of the original images.
        teacher: ``(B, D)`` embeddings of the object views.
        proxies: ``(C, D)`` class proxies; the KL compares distributions over them.
        tau: temperature; ``w_cos``: weight of the extra cosine term.
        reduction: ``mean`` over the batch or ``none`` (per sample).
    """
    teacher = teacher.detach()
    zs = proxy_logits(student, proxies, scale) / tau
    zt = proxy_logits(teacher, proxies, scale) / tau
    # KL(p_t || p_s) per sample = sum p_t (log p_t - log p_s).
    kl = (F.softmax(zt, -1) * (F.log_softmax(zt, -1) - F.log_softmax(zs, -1))).sum(-1) * tau**2
    if w_cos:
        kl = kl + w_cos * (1 - F.cosine_similarity(student, teacher, dim=-1))
    return kl.mean() if reduction == "mean" else kl
