"""Box geometry of OPA (docs/METHOD.md, OPA): the box type, boxes from response maps, crops.

A box is ``(x, y, w, h)`` in pixels of the original image — the one definition, :data:`Box`,
that the sources, the cache, the detectors and the views all use. Nothing here reads a file or
runs a network: a response map in, a box out; a box in, crop corners out.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

Box = tuple[float, float, float, float]
Boxes = dict[str, tuple[Box, float]]  # image path -> (box, score)


def box_from_map(act: torch.Tensor | np.ndarray, img_w: int, img_h: int, threshold: float = 0.0) -> tuple[Box, float]:
    """Self-localisation: threshold a response map, keep the largest connected component.

    Args:
        act: ``(h, w)`` non-negative response of the frozen encoder on the whole image.
        img_w, img_h: size of the image the map was computed on (the box is scaled to it).
        threshold: keep pixels above ``mean + threshold * (max - mean)`` (0: the mean).

    Returns:
        ``(box, score)``; ``score`` in [0, 1] measures how concentrated the response is in the
        box: ``(mass_in_box - area_fraction) / (1 - area_fraction)`` — 0 for a flat map (no
        object found), near 1 when all the response sits in a small box.
    """
    a = torch.as_tensor(act, dtype=torch.float32)[None, None]
    # Upsample before thresholding so the box is not quantised to the encoder's stride.
    a = F.interpolate(a, size=(img_h, img_w), mode="bilinear", align_corners=False)[0, 0].clamp_min(0).numpy()
    total = float(a.sum())
    if total <= 0 or not np.isfinite(total):
        return (0.0, 0.0, float(img_w), float(img_h)), 0.0
    labels, n = ndimage.label(a > a.mean() + threshold * (a.max() - a.mean()))
    if n == 0:
        return (0.0, 0.0, float(img_w), float(img_h)), 0.0
    sizes = ndimage.sum_labels(np.ones_like(a), labels, index=np.arange(1, n + 1))
    comp = labels == (int(np.argmax(sizes)) + 1)
    ys, xs = np.nonzero(comp)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    area = (x1 - x0) * (y1 - y0) / (img_w * img_h)
    mass = float(a[y0:y1, x0:x1].sum()) / total
    score = 0.0 if area >= 1.0 else max(0.0, (mass - area) / (1 - area))
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), float(score)


def view_geometry(transform: Callable, img_w: int, img_h: int) -> tuple[float, float, float, float, int]:
    """Where the original view (Resize of the short side, then CenterCrop) sits in an image.

    Returns:
        ``(scale_x, scale_y, left, top, crop)``: view pixel ``(u, v)`` is image pixel
        ``((u + left) / scale_x, (v + top) / scale_y)``. Follows torchvision's own rounding.
    """
    steps = {type(t).__name__: t for t in getattr(transform, "transforms", [])}
    resize, crop = steps.get("Resize"), steps.get("CenterCrop")
    if resize is None or crop is None or not isinstance(resize.size, int | list | tuple):
        raise ValueError("opa.loc_view=view needs an eval transform of Resize + CenterCrop")
    if isinstance(resize.size, int) or len(resize.size) == 1:  # the short side to this size
        r = resize.size if isinstance(resize.size, int) else resize.size[0]
        short, long = sorted((img_w, img_h))
        new_short, new_long = r, int(r * long / short)
        new_w, new_h = (new_short, new_long) if img_w <= img_h else (new_long, new_short)
    else:  # a fixed (height, width)
        new_h, new_w = int(resize.size[0]), int(resize.size[1])
    c = int(crop.size[0])
    left, top = int(round((new_w - c) / 2.0)), int(round((new_h - c) / 2.0))
    return new_w / img_w, new_h / img_h, float(left), float(top), c


def box_from_view_map(act: torch.Tensor | np.ndarray, transform: Callable, img_w: int, img_h: int,
                      threshold: float = 0.0) -> tuple[Box, float]:
    """:func:`box_from_map` on the original view, as a box of the whole image.

    The map covers only the centre crop; where the box reaches the crop's edge the object
    likely goes on beyond it, so that side is extended to the image's edge.
    """
    sx, sy, left, top, c = view_geometry(transform, img_w, img_h)
    (u, v, bw, bh), score = box_from_map(act, c, c, threshold)
    x0 = 0.0 if u <= 0.5 else (u + left) / sx
    y0 = 0.0 if v <= 0.5 else (v + top) / sy
    x1 = float(img_w) if u + bw >= c - 0.5 else (u + bw + left) / sx
    y1 = float(img_h) if v + bh >= c - 0.5 else (v + bh + top) / sy
    x0, y0 = min(max(x0, 0.0), float(img_w)), min(max(y0, 0.0), float(img_h))
    x1, y1 = min(max(x1, x0 + 1.0), float(img_w)), min(max(y1, y0 + 1.0), float(img_h))
    return (x0, y0, x1 - x0, y1 - y0), score


def expand_box(box: Box, img_w: int, img_h: int, factor: float = 1.1,
               aspect: float = 0.75) -> tuple[int, int, int, int]:
    """Enlarge ``box`` about its centre, pad its short side to ``aspect``, clip to the image.

    Returns integer crop corners ``(x0, y0, x1, y1)`` (exclusive end), at least 1 px wide/high.
    """
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    w, h = w * factor, h * factor
    # Pad the short side so that short/long >= aspect ([DVF]: 3:4).
    if w < h * aspect:
        w = h * aspect
    elif h < w * aspect:
        h = w * aspect
    eps = 1e-6  # 100 * 1.1 = 110.00000000000001 must not grow the crop by a pixel
    x0, y0 = max(0, math.floor(cx - w / 2 + eps)), max(0, math.floor(cy - h / 2 + eps))
    x1, y1 = min(img_w, math.ceil(cx + w / 2 - eps)), min(img_h, math.ceil(cy + h / 2 - eps))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def mirror_box(box: Box, img_w: int) -> Box:
    """``box`` in the horizontally mirrored image."""
    x, y, w, h = box
    return (img_w - x - w, y, w, h)


def clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> Box | None:
    """Corners clipped to the image, as ``(x, y, w, h)``; None when nothing is left."""
    x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
    y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
