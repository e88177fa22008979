"""Adapter checkpoints: only the trainable tensors (safetensors) + config + backbone fingerprint.

A checkpoint is small (adapters and proxies, never the frozen backbone) and loading it never
executes code. It records the fingerprint of the frozen weights it was trained on, so that it is
refused on top of any other backbone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from dva.config import DVAConfig
from dva.model import DVAModel, build_model
from dva.utils import atomic_write_bytes

FORMAT = "dva-adapters-v1"


def trainable_state(model: DVAModel) -> dict[str, torch.Tensor]:
    """Every tensor that training changes (adapters, learnable scales, proxies)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: str | Path, model: DVAModel, extra: dict[str, Any] | None = None) -> None:
    """Write ``path`` (``.safetensors``) atomically."""
    meta = {
        "format": FORMAT,
        "config": json.dumps(model.cfg.to_dict()),
        "fingerprint": model.fingerprint,
        "num_classes": str(0 if model.proxies is None else model.proxies.shape[0]),
        "extra": json.dumps(extra or {}),
    }
    atomic_write_bytes(path, st_save(trainable_state(model), metadata=meta))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a checkpoint file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not our file"
        raise ValueError(f"{p}: not a safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p}: not a dva checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in ("config", "fingerprint", "num_classes") if k not in meta]
    if missing:
        raise ValueError(f"{p}: the checkpoint's metadata lacks {', '.join(missing)}; it was not written by "
                         "`dva train` (or was edited): train again or restore the original file")
    try:
        info = {
            "config": DVAConfig.from_dict(json.loads(meta["config"]), source=str(p)),
            "fingerprint": meta["fingerprint"],
            "num_classes": int(meta["num_classes"]),
            "extra": json.loads(meta.get("extra", "{}")),
        }
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{p}: unreadable checkpoint metadata ({exc})") from None
    return tensors, info


def load_into(model: DVAModel, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's tensors into an existing model, refusing another backbone."""
    tensors, info = read_checkpoint(path)
    if info["fingerprint"] != model.fingerprint:
        raise ValueError(
            f"{path}: trained on backbone {info['config'].backbone.name} with weights fingerprint "
            f"{info['fingerprint']}, but the backbone loaded now ({model.cfg.backbone.name}, weights "
            f"{model.cfg.backbone.weights!r}) has fingerprint {model.fingerprint}: load it with the "
            "same backbone name and weights it was trained with"
        )
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{path}: adapter layout differs: missing {missing[:4]}, unexpected {unexpected[:4]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            if params[n].shape != t.shape:
                raise ValueError(f"{path}: {n} has shape {tuple(t.shape)}, model expects {tuple(params[n].shape)}")
            params[n].copy_(t)
    return info


def load_checkpoint(path: str | Path, weights: str | None = None) -> tuple[DVAModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load it.

    Args:
        path: a ``.safetensors`` file written by :func:`save_checkpoint`.
        weights: override where the frozen backbone weights come from (e.g. a local file
            instead of the hub); the fingerprint must still match.
    """
    _, info = read_checkpoint(path)
    cfg: DVAConfig = info["config"]
    if weights:
        cfg.backbone.weights = weights
    model = build_model(cfg, info["num_classes"])
    load_into(model, path)
    model.eval()
    return model, info
