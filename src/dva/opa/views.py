"""OPA's two extra views of a training image: object-focused and background (docs/METHOD.md, OPA).

Training-time only. For each training image a box around the object is found once
(:mod:`dva.opa.sources`: from annotations, from the frozen backbone's own response — the
default — or from a detector); two extra views are then built from it:

* ``x_disc``: the box enlarged by ``expand`` (1.1), its short side padded to ``aspect`` (3:4),
  clipped to the image, cropped and resized to the input size — the object, zoomed;
* ``x_bg``: the original with the (un-enlarged) box filled with the dataset mean colour — the
  context without the object.

Without a box, or with a score below ``min_score``: ``x_disc = x`` and no background term.
The box arithmetic (:func:`~dva.opa.geometry.expand_box`, mirroring) is in :mod:`dva.opa.geometry`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dva.opa.geometry import Box, expand_box

if TYPE_CHECKING:
    from dva.config import OPAConfig


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


def make_views(img: Image.Image, box: Box | None, opa: OPAConfig,
               fill: Sequence[int]) -> tuple[Image.Image, Image.Image, bool]:
    """``(x_disc, x_bg, keep)`` as PIL images (before transforms); no box: ``(img, img, False)``."""
    if box is None:
        return img, img, False
    x_bg = background_view(img, box, fill) if opa.background else img
    return discriminative_view(img, box, opa.expand, opa.aspect), x_bg, True
