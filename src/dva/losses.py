"""Metric-learning losses of the DVA objective (docs/METHOD.md, Objective), written out because they are short.

* :func:`proxy_nca_pp` — ProxyNCA++ "prob" form [DVF]: L2-normalise embeddings and class
  proxies, scale both by ``scale``, softmax over negative squared distances. With unit vectors
  ``-||s e - s p||^2 = 2 s^2 cos - 2 s^2``, i.e. a softmax of ``2 s^2 cos`` (18 cos for s=3).
* :func:`contrastive_margin` — mean ``1 - cos`` over positive pairs plus mean
  ``max(cos - margin, 0)`` over negative pairs [DVF].

Both return per-sample terms when asked (``reduction="none"``) so that view losses can be masked
and divided by the *batch size* (not by the number of kept samples): that keeps the DDP
average over ranks identical to the single-process loss of the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def proxy_logits(emb: torch.Tensor, proxies: torch.Tensor, scale: float = 3.0,
                 temperature: float = 1.0) -> torch.Tensor:
    """``-||s*e/|e| - s*p/|p|||^2 / T`` for every (sample, proxy) pair: ``(B, C)``."""
    e = F.normalize(emb, dim=-1) * scale
    p = F.normalize(proxies, dim=-1) * scale
    # Squared distance through the dot product: both sides have norm `scale`.
    d2 = (2 * scale**2 - 2 * e @ p.t()).clamp_min(0)
    return -d2 / temperature


def proxy_nca_pp(emb: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, scale: float = 3.0,
                 temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """ProxyNCA++ loss: cross-entropy of :func:`proxy_logits` against the class labels."""
    return F.cross_entropy(proxy_logits(emb, proxies, scale, temperature), labels, reduction=reduction)


def contrastive_margin(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Mean ``1 - cos`` over positive pairs + mean ``relu(cos - margin)`` over negative pairs."""
    e = F.normalize(emb, dim=-1)
    cos = e @ e.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    zero = emb.new_zeros(())
    pos_term = (1 - cos[pos]).mean() if pos.any() else zero
    neg_term = (cos[neg] - margin).clamp_min(0).mean() if neg.any() else zero
    return pos_term + neg_term
