"""Decoding any image file a user has into the RGB picture a person would see.

``PIL.Image.convert("RGB")`` alone gets two common cases wrong: a 16-bit grey PNG (mode ``I;16``)
is clipped to white, and a phone photo stored sideways with an EXIF orientation tag is
embedded sideways. :func:`to_rgb` fixes both; every reader (datasets, gallery embedding, search,
the server) decodes through it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, keeping the picture's contrast."""
    a = np.asarray(img)
    if img.mode in _SIXTEEN_BIT:
        a = a.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    elif img.mode == "I":  # 32-bit ints: 16-bit data (older Pillow opens 16-bit PNGs so), or 8-bit
        a = a.astype(np.float64) / (257.0 if a.max(initial=0) > 255 else 1.0)
    else:  # "F": [0, 1] floats, or already 0..255
        a = a.astype(np.float64) * (255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0)
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, upright (EXIF orientation applied), fully decoded.

    An RGB image without an orientation tag is returned as it is (decoded, not copied): a large
    upload must not be held in memory two or three times over.
    """
    img.load()
    if img.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img)
    if img.mode in (*_SIXTEEN_BIT, "I", "F"):
        img = _high_depth_to_l(img)
    return img if img.mode == "RGB" else img.convert("RGB")
