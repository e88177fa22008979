"""A small synthetic fine-grained dataset, generated on the fly for tests and smoke runs.

Each class is one object: a shape (8 kinds) filled with a colour pattern (solid, stripes,
checker, dots) in a class-specific pair of colours. Classes come in pairs that share shape
and main colour and differ only in the fill pattern, so a frozen ImageNet CNN separates
them somewhat but not perfectly.
Every image draws the object at a random position, scale and rotation, with colour and
brightness jitter, on a cluttered background (a random gradient, small distractor shapes in
random colours, pixel noise); sometimes a distractor overlaps the object.

Layout written by :func:`make_synthetic` under ``root``::

    images/class_003/img_0007.png
    labels.csv     path,label          (paths relative to root)
    boxes.csv      path,x,y,w,h        (tight box of the drawn object, pixels)
    synthetic.json the generator's arguments

:func:`read_synthetic` loads it: open protocol = first half of the classes train, second
half test; closed protocol = within every class the first ``ceil(n/2)`` images (by file
name) train and the rest test.
"""
from __future__ import annotations

import colorsys
import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dva.data import _files as F
from dva.data.csvlist import read_rows
from dva.data.protocols import CLOSED, check_protocol, finish_split, half_of, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "synthetic"
HINT = "Create the tree with dva.data.make_synthetic(root) first."
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")
PATTERNS = ("solid", "stripes", "checker", "dots")
_GOLDEN = 0.6180339887498949


def _class_style(c: int) -> dict[str, object]:
    """The fixed appearance of class ``c`` (independent of the seed).

    Classes come in fine-grained pairs (2j, 2j+1) sharing shape and main colour and differing
    in the fill pattern (solid vs stripes, or checker vs dots) and slightly in the second
    colour; so the hard negatives of every class are in the same half of the classes.
    """
    pair = c // 2
    hue = (pair * _GOLDEN) % 1.0
    return {
        "shape": SHAPES[pair % len(SHAPES)],
        "pattern": PATTERNS[c % 2 + 2 * ((pair // len(SHAPES)) % 2)],
        "hue1": hue,
        "hue2": (hue + 0.35 + 0.08 * (c % 2) + 0.1 * ((pair // 3) % 3)) % 1.0,
        "stripe_period": 5 + (pair % 3) * 2,
    }


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, min(max(sat, 0), 1), min(max(val, 0), 1)))


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring_pts(n: int, radii: list[float], offset: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + radii[i % len(radii)] * r * math.cos(rot + offset + 2 * math.pi * i / n),
                 cy + radii[i % len(radii)] * r * math.sin(rot + offset + 2 * math.pi * i / n))
                for i in range(n)]

    if shape == "square":
        return ring_pts(4, [1.0], math.pi / 4)
    if shape == "triangle":
        return ring_pts(3, [1.0], -math.pi / 2)
    if shape == "diamond":
        return ring_pts(4, [1.0, 0.6])
    if shape == "star":
        return ring_pts(10, [1.0, 0.45], -math.pi / 2)
    if shape == "hexagon":
        return ring_pts(6, [1.0])
    if shape == "cross":
        w = 0.35
        pts = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w),
               (-1, w), (-w, w), (-w, 1)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]
    raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                rot: float, fill: int | tuple[int, int, int], hole: int | tuple[int, int, int]
                ) -> None:
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        if shape == "ring":
            draw.ellipse([cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r], fill=hole)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=fill)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, rot, 255, 0)
    return np.asarray(img) > 127


def _texture(style: dict, size: int, rot: float, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(-0.03, 0.03)
    bright = rng.uniform(0.8, 1.0)
    c1 = _rgb(float(style["hue1"]) + jitter, 0.85, bright)
    c2 = _rgb(float(style["hue2"]) + jitter, 0.7, bright * 0.9)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * math.cos(rot) + yy * math.sin(rot)
    v = -xx * math.sin(rot) + yy * math.cos(rot)
    p = float(style["stripe_period"])
    pattern = style["pattern"]
    if pattern == "solid":
        sel = np.zeros((size, size), bool)
    elif pattern == "stripes":
        sel = (u // p) % 2 == 0
    elif pattern == "checker":
        sel = ((u // p) + (v // p)) % 2 == 0
    else:  # dots
        sel = ((u % (2 * p) - p) ** 2 + (v % (2 * p) - p) ** 2) < (0.45 * p) ** 2
    return np.where(sel[..., None], c2, c1)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(0.15, 0.85, size=(2, 3))
    t = np.linspace(0, 1, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    g = (np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None])
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    img = a * (1 - g[..., None]) + b * g[..., None]
    return _distractors(img, rng, int(rng.integers(8, 16)))


def _distractors(img: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` small shapes in random colours over ``img`` (float HxWx3 in [0, 1])."""
    size = img.shape[0]
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        r = rng.uniform(0.04, 0.12) * size
        cx, cy = rng.uniform(0, size, size=2)
        rot = rng.uniform(0, 2 * math.pi)
        colour = tuple(int(v * 255) for v in _rgb(rng.uniform(), rng.uniform(0.2, 0.9),
                                                  rng.uniform(0.3, 1.0)))
        hole = tuple(int(v) for v in np.asarray(pil)[min(int(cy), size - 1), min(int(cx), size - 1)])
        _draw_shape(draw, shape, cx, cy, r, rot, colour, hole)  # type: ignore[arg-type]
    return np.asarray(pil, dtype=np.float64) / 255.0


def _render(style: dict, size: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    img = _background(size, rng)
    r = rng.uniform(0.18, 0.33) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    mask = _shape_mask(str(style["shape"]), size, cx, cy, r, rot)
    img = np.where(mask[..., None], _texture(style, size, rot, rng), img)
    if rng.uniform() < 0.3:  # partial occlusion by a distractor
        img = _distractors(img, rng, 1)
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return (img * 255 + 0.5).astype(np.uint8), box


def make_synthetic(root: str, num_classes: int = 20, per_class: int = 12, size: int = 96,
                   seed: int = 0) -> str:
    """Write a synthetic class-per-folder dataset under ``root`` (deterministic for a seed).

    Args:
        root: Output folder (created; existing files of the same names are overwritten).
        num_classes: Number of classes (>= 2).
        per_class: Images per class (>= 2).
        size: Image side in pixels (>= 32).
        seed: Seed of every random choice.

    Returns:
        ``root`` as an absolute path, ready for ``load_split("synthetic", root)``.
    """
    if num_classes < 2 or per_class < 2 or size < 32:
        raise ValueError("make_synthetic needs num_classes >= 2, per_class >= 2 and size >= 32")
    out = Path(root).expanduser().resolve()
    labels, boxes = [], []
    for c in range(num_classes):
        style = _class_style(c)
        folder = out / "images" / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # One generator per image: any image can be regenerated alone, and the output
            # does not depend on the order of generation.
            rng = np.random.default_rng([seed, c, i])
            pixels, box = _render(style, size, rng)
            rel = f"images/class_{c:03d}/img_{i:04d}.png"
            Image.fromarray(pixels).save(out / rel, compress_level=1)
            labels.append((rel, c))
            boxes.append((rel, *box))
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(labels)
    with open(out / "boxes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "x", "y", "w", "h"])
        w.writerows(boxes)
    (out / "synthetic.json").write_text(json.dumps(
        {"num_classes": num_classes, "per_class": per_class, "size": size, "seed": seed}, indent=1))
    return str(out)


def read_synthetic(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read a tree written by :func:`make_synthetic`.

    Args:
        root: The folder given to :func:`make_synthetic`.
        protocol: ``"open"`` (class halves) or ``"closed"`` (per-class halves of the images).
        strict_counts: Raise if the number of images differs from ``synthetic.json``.
    """
    protocol = check_protocol(protocol)
    base = Path(root).expanduser().resolve()
    F.require_files(base, ("labels.csv",), NAME, HINT)
    rows = read_rows(base / "labels.csv")
    box_of: dict[str, tuple[float, float, float, float]] = {}
    if (base / "boxes.csv").exists():
        for r in _read_boxes(base / "boxes.csv"):
            box_of[str(r["path"])] = r["box"]  # type: ignore[assignment]
    recs = []
    for r in rows:
        label = F.to_int(str(r["label"]), base / "labels.csv", int(r["line"]), "label")  # type: ignore[arg-type]
        recs.append(ImageRecord(str(r["path"]), label, box_of.get(str(r["path"]))))
    labels = sorted({r.label for r in recs})
    if labels != list(range(len(labels))):
        raise ValueError(f"{base / 'labels.csv'}: labels must be 0..{len(labels) - 1} without gaps")
    F.check_images_exist(recs, NAME, HINT)
    notes = []
    meta_p = base / "synthetic.json"
    if meta_p.exists():
        meta = json.loads(meta_p.read_text())
        want = int(meta["num_classes"]) * int(meta["per_class"])
        if want != len(recs):
            msg = f"{NAME}: {len(recs)} images listed but {meta_p} says {want}"
            if strict_counts:
                raise ValueError(msg)
            notes.append(msg)
    class_names = {c: f"class_{c:03d}" for c in labels}
    if protocol == CLOSED:
        train, test = [], []
        for c in labels:
            mine = sorted((r for r in recs if r.label == c), key=lambda r: r.path)
            k = (len(mine) + 1) // 2
            train += mine[:k]
            test += mine[k:]
    else:
        train, test = split_by_class(recs, half_of(len(labels)))
    return finish_split(NAME, protocol, train, test, class_names, strict_counts, notes)


def _read_boxes(path: Path) -> list[dict[str, object]]:
    """``path,x,y,w,h`` rows (optional header) with paths made absolute."""
    out = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if lineno == 1 and row and row[0].strip().lower() == "path":
                continue
            if not row:
                continue
            if len(row) != 5:
                raise ValueError(f"{path}:{lineno}: expected 5 columns path,x,y,w,h")
            out.append({"path": str(path.parent / row[0].strip()),
                        "box": F.to_box(row[1:], path, lineno)})
    return out
