"""Object-Perceptual Adaptation (OPA): object-focused and background views (docs/METHOD.md, OPA).

Training-time only. For each training image a box around the object is found once
(:mod:`dva.boxes`: from annotations, from the frozen backbone's own response — the default — or
from a detector); two extra views are then built from it:

* ``x_disc``: the box enlarged by ``expand`` (1.1), its short side padded to ``aspect`` (3:4),
  clipped to the image, cropped and resized to the input size — the object, zoomed;
* ``x_bg``: the original with the (un-enlarged) box filled with the dataset mean colour — the
  context without the object.

Without a box, or with a score below ``min_score``: ``x_disc = x`` and no background term.
Boxes are ``(x, y, w, h)`` in pixels of the original image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dva.boxes import Box

if TYPE_CHECKING:
    from dva.config import OPAConfig


def expand_box(box: Box, img_w: int, img_h: int, factor: float = 1.1, aspect: float = 0.75) -> tuple[int, int, int, int]:
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


def discriminative_view(img: Image.Image, box: Box | None, factor: float = 1.1, aspect: float = 0.75) -> Image.Image:
    """The object crop (resize happens in the transform); the image itself without a box."""
    if box is None:
        return img
    return img.crop(expand_box(box, img.width, img.height, factor, aspect))


def background_view(img: Image.Image, box: Box, fill: Sequence[int]) -> Image.Image:
    """A copy of ``img`` with ``box`` filled by the colour ``fill`` (RGB 0-255)."""
    x, y, w, h = box
    out = img.copy()
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(img.width, int(np.ceil(x + w))), min(img.height, int(np.ceil(y + h)))
    if x1 > x0 and y1 > y0:
        out.paste(tuple(int(c) for c in fill), (x0, y0, x1, y1))
    return out


def mirror_box(box: Box, img_w: int) -> Box:
    """``box`` in the horizontally mirrored image."""
    x, y, w, h = box
    return (img_w - x - w, y, w, h)


def make_views(img: Image.Image, box: Box | None, opa: OPAConfig, fill: Sequence[int]) -> tuple[Image.Image, Image.Image, bool]:
    """``(x_disc, x_bg, keep)`` as PIL images (before transforms); no box: ``(img, img, False)``."""
    if box is None:
        return img, img, False
    x_bg = background_view(img, box, fill) if opa.background else img
    return discriminative_view(img, box, opa.expand, opa.aspect), x_bg, True
