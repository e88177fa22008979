"""Image transforms, built with timm from the backbone's pretrained normalisation."""
from __future__ import annotations

from collections.abc import Callable

from timm.data import create_transform


def eval_transform(img_size: int, data_cfg: dict) -> Callable:
    """Resize (short side to ``img_size / crop_pct``), centre crop, tensor, normalise."""
    return create_transform(img_size, is_training=False, mean=data_cfg["mean"], std=data_cfg["std"],
                            crop_pct=data_cfg["crop_pct"], interpolation="bilinear")


def view_transform(img_size: int, data_cfg: dict) -> Callable:
    """Whole view resized to a square (used for OPA crops: the crop already frames the object)."""
    return create_transform(img_size, is_training=False, mean=data_cfg["mean"], std=data_cfg["std"],
                            crop_pct=1.0, crop_mode="squash", interpolation="bilinear")


def train_transform(img_size: int, data_cfg: dict, augment: str = "standard") -> Callable:
    """DVF-style augmentation ([DVF]: random resized crop, flip, colour jitter 0.3, grayscale 0.2).

    ``augment``: ``standard``, ``flip`` (flip only, else like eval), ``none`` (eval transform).
    """
    if augment == "none":
        return view_transform(img_size, data_cfg)
    if augment == "flip":
        import torchvision.transforms as T

        return T.Compose([T.RandomHorizontalFlip(), view_transform(img_size, data_cfg)])
    if augment != "standard":
        raise ValueError(f"train.augment must be standard | flip | none, got {augment!r}")
    return create_transform(img_size, is_training=True, mean=data_cfg["mean"], std=data_cfg["std"],
                            scale=(0.5, 1.0), hflip=0.5, color_jitter=0.3, interpolation="bilinear")
