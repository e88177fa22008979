"""Helpers shared by test modules (importable: tests/conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import torch


def perturb_trainable(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Move every trainable tensor off its start (zero ``up``, identity head): a stand-in for a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model
