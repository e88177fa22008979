"""Adapter checkpoints: only the trainable tensors (safetensors) + config + backbone fingerprint.

A checkpoint is small (adapters and proxies, never the frozen backbone) and loading it never
executes code. It records the fingerprint of the frozen weights it was trained on, so that it is
refused on top of any other backbone.

:func:`interpolate` writes WiSE-FT-style checkpoints between the frozen backbone and a trained
one (docs/METHOD.md, "Between frozen and trained").
"""
from __future__ import annotations

import json
import math
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
        last = p.with_name("last.safetensors")
        hint = ""
        if p.name == "best.safetensors" and last.is_file():  # a run without validation keeps no best model
            hint = (f": its run kept none (a best model is chosen on validation, off when too few training classes "
                    f"can be held out); {last} is the model where training ended")
        raise FileNotFoundError(f"checkpoint {p} not found{hint}")
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
            # limits=False: the bounds of new runs must not lock out a model trained before them.
            "config": DVAConfig.from_dict(json.loads(meta["config"]), source=str(p), limits=False),
            "fingerprint": meta["fingerprint"],
            "num_classes": int(meta["num_classes"]),
            "extra": json.loads(meta.get("extra", "{}")),
        }
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{p}: unreadable checkpoint metadata ({exc})") from None
    return tensors, info


def _check_backbone(model: DVAModel, info: dict[str, Any], path: str | Path) -> None:
    if info["fingerprint"] != model.fingerprint:
        raise ValueError(
            f"{path}: trained on backbone {info['config'].backbone.name} with weights fingerprint "
            f"{info['fingerprint']}, but the backbone loaded now ({model.cfg.backbone.name}, weights "
            f"{model.cfg.backbone.weights!r}) has fingerprint {model.fingerprint}: load it with the "
            "same backbone name and weights it was trained with"
        )


def _check_layout(model: DVAModel, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{path}: adapter layout differs: missing {missing[:4]}, unexpected {unexpected[:4]}")
    params = dict(model.named_parameters())
    for n, t in tensors.items():
        if params[n].shape != t.shape:
            raise ValueError(f"{path}: {n} has shape {tuple(t.shape)}, model expects {tuple(params[n].shape)}")


def _copy_in(model: DVAModel, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def load_into(model: DVAModel, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's tensors into an existing model, refusing another backbone."""
    tensors, info = read_checkpoint(path)
    _check_backbone(model, info, path)
    _check_layout(model, tensors, path)
    _copy_in(model, tensors)
    return info


def load_checkpoint(path: str | Path, weights: str | None = None,
                    ica_scale: float | None = None) -> tuple[DVAModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load it.

    Args:
        path: a ``.safetensors`` file written by :func:`save_checkpoint`.
        weights: override where the frozen backbone weights come from (e.g. a local file
            instead of the hub); the fingerprint must still match.
        ica_scale: embedding-time adapter scale alpha in [0, 1] (0 = the frozen backbone,
            1 = the trained adapters); replaces the ``ica.alpha`` the checkpoint records. None
            keeps it. Needs an adapter checkpoint.
    """
    _, info = read_checkpoint(path)
    cfg: DVAConfig = info["config"]
    if weights:
        cfg.backbone.weights = weights
    if ica_scale is not None:
        alpha = check_alpha(ica_scale, False, "ica scale")
        if not (cfg.ica.enabled and cfg.train.trainable == "ica"):
            raise ValueError(f"{path}: an ICA scale needs an adapter checkpoint, this one trained "
                             f"train.trainable={cfg.train.trainable}: move it toward the frozen backbone with "
                             "`dva interpolate --checkpoint CKPT --alpha A --out OUT` instead")
        cfg.ica.alpha = alpha  # built in: the adapters are created at this scale
    model = build_model(cfg, info["num_classes"])
    load_into(model, path)
    model.eval()
    return model, info


def check_alpha(alpha: float, extrapolate: bool = False, what: str = "alpha") -> float:
    """``alpha`` as a float in [0, 1] (any finite value with ``extrapolate``).

    Raises:
        ValueError: not finite, or outside [0, 1] without ``extrapolate``.
    """
    a = float(alpha)
    if not math.isfinite(a):
        raise ValueError(f"{what} must be a finite number, got {alpha!r}")
    if not extrapolate and not 0.0 <= a <= 1.0:
        raise ValueError(f"{what}={a} is outside [0, 1] (0 = the frozen backbone, 1 = the trained model); "
                         + ("pass --extrapolate to go past them" if what == "--alpha" else
                            "to extrapolate past them write a checkpoint with "
                            "`dva interpolate --checkpoint CKPT --alpha A --extrapolate --out OUT`"))
    return a


def mix(frozen: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * frozen + alpha * tuned``: exactly ``frozen`` at 0 and ``tuned`` at 1."""
    # Written as two products, not frozen + alpha * (tuned - frozen): 1 * x + 0 * y and
    # 0 * x + 1 * y are exact in floating point, so both ends reproduce their weights bit for bit.
    return ((1.0 - alpha) * frozen.to(tuned.dtype) + alpha * tuned).contiguous()


def interpolate(path: str | Path, alpha: float, out: str | Path, *, extrapolate: bool = False,
                weights: str | None = None) -> dict[str, Any]:
    """Write a checkpoint between the frozen backbone (``alpha`` 0) and ``path``'s model (1).

    Full and head fine-tunes (``train.trainable`` full | head): WiSE-FT, every trained tensor
    becomes ``(1 - alpha) * w_frozen + alpha * w_tuned``, with ``w_frozen`` the pre-trained
    backbone weights (full) or the identity projection the head starts from (head). BatchNorm
    running statistics are not in the checkpoint: the backbone never leaves eval mode in
    training (:meth:`dva.model.DVAModel.train`), so they are the frozen ones at every alpha. The
    class proxies (training state, unused at query time) are kept as trained.

    Adapter checkpoints: the same dial is the adapter scale; the adapters are kept and
    ``ica.alpha`` becomes ``alpha`` times the one ``path`` records (docs/METHOD.md, "Between
    frozen and trained").

    Args:
        path: a checkpoint written by ``dva train`` (or by this function).
        alpha: in [0, 1]; any finite value with ``extrapolate`` (e.g. 1.2, past the trained model).
        out: the checkpoint to write (atomically); it loads like any other.
        extrapolate: allow ``alpha`` outside [0, 1].
        weights: where the frozen weights come from when not where ``path`` says (the fingerprint
            must still match).

    Returns:
        ``{"mode", "alpha", "ica_alpha", "mixed_tensors"}`` (``ica_alpha``: None for full/head).
    """
    a = check_alpha(alpha, extrapolate)
    tensors, info = read_checkpoint(path)
    cfg: DVAConfig = info["config"]
    if weights:
        cfg.backbone.weights = weights
    model = build_model(cfg, info["num_classes"])  # its trainable tensors start at the frozen/initial values
    _check_backbone(model, info, path)
    _check_layout(model, tensors, path)
    mode, mixed = cfg.train.trainable, 0
    if model.adapted:
        _copy_in(model, tensors)
        model.set_ica_scale(a * cfg.ica.alpha)
    elif mode in ("full", "head"):
        start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        new = {n: t if n == "proxies" else mix(start[n], t, a) for n, t in tensors.items()}
        mixed = sum(n != "proxies" for n in new)
        _copy_in(model, new)
    else:
        raise ValueError(f"{path}: nothing to interpolate (train.trainable={mode}, ica.enabled={cfg.ica.enabled}): "
                         "the checkpoint holds no trained adapter or backbone weight")
    record = {"source": str(path), "alpha": a, "mode": mode}
    save_checkpoint(out, model, {**info["extra"], "interpolation": record})
    return {"mode": mode, "alpha": a, "ica_alpha": model.cfg.ica.alpha if model.adapted else None,
            "mixed_tensors": mixed}
