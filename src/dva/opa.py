"""Object-Perceptual Adaptation (OPA): object-focused and background views (SPEC 2.3).

Training-time only. For each training image a box around the object is found once (from
annotations, from the frozen backbone's own response — the default — or from a detector) and
cached; two extra views are then built from it:

* ``x_disc``: the box enlarged by ``expand`` (1.1), its short side padded to ``aspect`` (3:4),
  clipped to the image, cropped and resized to the input size — the object, zoomed;
* ``x_bg``: the original with the (un-enlarged) box filled with the dataset mean colour — the
  context without the object.

Without a box, or with a score below ``min_score``: ``x_disc = x`` and no background term.
Boxes are ``(x, y, w, h)`` in pixels of the original image.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from dva.utils import atomic_write_json

Box = tuple[float, float, float, float]


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


# --------------------------------------------------------------------------------------------
# Box sources and the boxes file


def read_boxes_file(path: str | Path) -> dict[str, tuple[Box, float]]:
    """Read ``path,x,y,w,h[,score]`` (CSV, header optional) or our JSON cache format."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"boxes file {p} not found (set opa.boxes_file or use opa.box_source=self)")
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        boxes = data.get("boxes", data)
        return {k: (tuple(map(float, v[:4])), float(v[4]) if len(v) > 4 else 1.0) for k, v in boxes.items()}
    out: dict[str, tuple[Box, float]] = {}
    base = p.parent
    for i, line in enumerate(p.read_text().splitlines(), 1):
        parts = [s.strip() for s in line.split(",")]
        if not line.strip() or (i == 1 and parts[0].lower() in ("path", "image")):
            continue
        if len(parts) not in (5, 6):
            raise ValueError(f"{p}:{i}: expected 'path,x,y,w,h[,score]', got {line!r}")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{p}:{i}: non-numeric box in {line!r}") from None
        path_i = parts[0] if Path(parts[0]).is_absolute() else str((base / parts[0]).resolve())
        out[path_i] = (tuple(vals[:4]), vals[4] if len(vals) == 5 else 1.0)
    return out


def write_boxes_cache(path: str | Path, boxes: dict[str, tuple[Box, float]], meta: dict) -> None:
    atomic_write_json(path, {"meta": meta, "boxes": {k: [*b, s] for k, (b, s) in boxes.items()}})


def load_boxes_cache(path: str | Path, meta: dict) -> dict[str, tuple[Box, float]] | None:
    """The cached boxes if ``path`` exists and was computed with the same ``meta``; else None."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    if data.get("meta") != meta:
        return None
    return {k: (tuple(v[:4]), float(v[4])) for k, v in data["boxes"].items()}


def min_score(source: str, configured: float) -> float:
    """The box-score threshold in force (``configured``, or the per-source default when < 0)."""
    if configured >= 0:
        return configured
    return 0.15 if source == "self" else 0.5


Detector = Callable[[Image.Image], tuple[Box, float] | None]


def detector_from_spec(spec: str) -> Detector:
    """Open-vocabulary detector hook (SPEC 2.3 source 3).

    No detector ships with dva (GroundingDINO weights are not bundled). A user plugs one in
    with ``opa.box_source=detector`` and ``opa.boxes_file=module:function`` naming an importable
    callable ``f(PIL.Image) -> ((x, y, w, h), score) | None``.
    """
    import importlib

    if ":" not in spec:
        raise ValueError(
            "opa.box_source=detector needs opa.boxes_file='package.module:function', a callable "
            "f(PIL image) -> ((x, y, w, h), score) or None; or precompute a boxes CSV and use "
            "opa.box_source=annotations"
        )
    mod, fn = spec.split(":", 1)
    return getattr(importlib.import_module(mod), fn)
