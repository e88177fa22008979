"""Training samples with their OPA views: ``(x, x_disc, x_bg, keep, label)``.

``keep`` is 1 when the image has a confident object box (then ``x_disc`` is the zoomed object and
``x_bg`` the original with the object filled with the mean colour) and 0 otherwise (then
``x_disc = x`` and the background term of that sample is masked out, SPEC 2.3).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from dva.config import OPAConfig
from dva.data import load_rgb
from dva.opa import Box, background_view, discriminative_view, min_score


def mirror_box(box: Box, img_w: int) -> Box:
    x, y, w, h = box
    return (img_w - x - w, y, w, h)


def make_views(img: Image.Image, box: Box | None, opa: OPAConfig, fill: Sequence[int]) -> tuple[Image.Image, Image.Image, bool]:
    """``(x_disc, x_bg, keep)`` as PIL images (before transforms)."""
    if box is None:
        return img, img, False
    x_bg = background_view(img, box, fill) if opa.background else img
    return discriminative_view(img, box, opa.expand, opa.aspect), x_bg, True


class ViewDataset(Dataset):
    """OPA views of a list of images.

    Args:
        paths, labels: the training images and their (contiguous) labels.
        boxes: path -> (box, score); boxes below ``opa.min_score`` are ignored.
        x_tf: transform of the original view; ``view_tf``: of the object/background views.
        flips: 1 = as is; 2 = also the mirrored image (items are then stacked on dim 0).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], boxes: dict, opa: OPAConfig,
                 fill: Sequence[int], x_tf: Callable, view_tf: Callable, flips: int = 1) -> None:
        self.paths, self.labels = list(paths), list(labels)
        self.boxes, self.opa, self.fill = boxes, opa, fill
        self.x_tf, self.view_tf, self.flips = x_tf, view_tf, flips

    def __len__(self) -> int:
        return len(self.paths)

    def box_of(self, i: int) -> Box | None:
        got = self.boxes.get(self.paths[i]) if self.opa.enabled else None
        if got is None or got[1] < min_score(self.opa.box_source, self.opa.min_score) or got[0][2] < 1 or got[0][3] < 1:
            return None
        return got[0]

    def __getitem__(self, i: int):
        img = load_rgb(self.paths[i])
        box = self.box_of(i)
        xs, ds, bs = [], [], []
        for f in range(self.flips):
            im, bx = (ImageOps.mirror(img), mirror_box(box, img.width) if box else None) if f else (img, box)
            d, b, keep = make_views(im, bx, self.opa, self.fill)
            xs.append(self.x_tf(im))
            # No confident box: x_disc is x itself (same tensor, same augmentation), so its DPT
            # term is exactly zero; x_bg is a placeholder that the objective masks out.
            ds.append(self.view_tf(d) if keep else xs[-1])
            bs.append(self.view_tf(b) if keep else xs[-1])
        stack = (lambda t: torch.stack(t)) if self.flips > 1 else (lambda t: t[0])
        return stack(xs), stack(ds), stack(bs), float(box is not None), self.labels[i], i


def mean_colour(paths: Sequence[str], max_images: int = 256) -> tuple[int, int, int]:
    """Mean RGB of (a strided sample of) the training images, 0-255."""
    step = max(1, len(paths) // max_images)
    acc = np.zeros(3)
    n = 0
    for p in list(paths)[::step][:max_images]:
        acc += np.asarray(load_rgb(p).resize((64, 64)), dtype=np.float64).reshape(-1, 3).mean(0)
        n += 1
    return tuple(int(round(v)) for v in acc / max(n, 1))
