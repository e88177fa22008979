"""YOLOX-Nano, a COCO detector, through onnxruntime (``opa.box_source=yolox``, docs/METHOD.md, OPA).

The model file (``yolox_nano.onnx``, Apache-2.0, Megvii) is not shipped: it is read from
``opa.detector_path``, else ``$DVA_YOLOX``, else ``../shared/models/yolox_nano.onnx`` beside the
working directory or beside the checkout (as :func:`dva.data.locate.find_dataset` finds data).

Pre-processing (as the model was exported): resize keeping the aspect ratio to fit 416x416,
paste into the top-left of a 416x416 canvas filled with 114, BGR, raw 0-255, NCHW float32.
Output ``1x3549x85``: the cells of the stride 8, 16 and 32 grids (52x52 + 26x26 + 13x13,
row-major, in that order), each ``(dx, dy, dw, dh, obj, 80 class scores)`` with obj and classes
already sigmoid-ed. Centre ``(dx + gx, dy + gy) * stride``, size ``exp(dw, dh) * stride``,
score ``obj * class``, class-wise NMS at IoU 0.45, then divided by the resize factor.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dva.opa.detectors.common import Detection
from dva.opa.geometry import clip_box
from dva.runtime.sessions import shared_session

INPUT = 416
STRIDES = (8, 16, 32)
NMS_IOU = 0.45
CANDIDATE_SCORE = 0.01  # candidates kept for NMS; below it a class is "not found" (score 0)
FILE = "yolox_nano.onnx"
ENV = "DVA_YOLOX"

# COCO-80 class names in the order of the model's 80 scores (0-based).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
ALIASES = {"aeroplane": "airplane", "plane": "airplane", "aircraft": "airplane", "birds": "bird",
           "cats": "cat", "dogs": "dog", "cars": "car", "automobile": "car", "motorbike": "motorcycle"}


def class_ids(names: Sequence[str]) -> list[int]:
    """COCO-80 indices of class names (``bird``, ``cat``, ...; a few plurals/synonyms accepted)."""
    out = []
    for n in names:
        key = ALIASES.get(n.strip().lower(), n.strip().lower())
        if key not in COCO_CLASSES:
            raise ValueError(f"opa.prompt: {n!r} is not a COCO class the yolox detector knows; "
                             f"use one of: {', '.join(COCO_CLASSES)}")
        out.append(COCO_CLASSES.index(key))
    return out


def find_model(explicit: str | os.PathLike | None = None) -> Path:
    """The ONNX file: ``explicit``, ``$DVA_YOLOX``, or ``../shared/models/yolox_nano.onnx``.

    Raises:
        FileNotFoundError: naming where it looked and how to point at a copy.
    """
    from dva.data.locate import shared_candidates

    cands = [Path(explicit)] if explicit else shared_candidates(f"models/{FILE}", ENV)
    for c in cands:
        if c.is_file():
            return c.resolve()
    where = ", ".join(str(c) for c in cands)
    raise FileNotFoundError(
        f"YOLOX model {FILE} not found (looked at {where}): set opa.detector_path "
        f"(`dva boxes`: --detector-path) or ${ENV} to your copy of {FILE} (YOLOX-Nano ONNX, "
        "input 1x3x416x416, output 1x3549x85)"
    )


def preprocess(img: Image.Image) -> tuple[np.ndarray, float]:
    """``(1x3x416x416 float32 BGR 0-255, resize factor)``: top-left letterbox filled with 114."""
    r = min(INPUT / img.height, INPUT / img.width)
    w, h = max(1, int(img.width * r)), max(1, int(img.height * r))
    canvas = np.full((INPUT, INPUT, 3), 114, np.uint8)
    canvas[:h, :w] = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR))
    x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)  # RGB -> BGR, NCHW
    return np.ascontiguousarray(x), r


def _grids() -> tuple[np.ndarray, np.ndarray]:
    """Per output row: its cell ``(gx, gy)`` and its stride."""
    cells, strides = [], []
    for s in STRIDES:
        n = INPUT // s
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([gx.ravel(), gy.ravel()], 1))
        strides.append(np.full(n * n, s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression over ``(x0, y0, x1, y1)`` boxes; kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        order = rest[inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9) <= iou]
    return keep


def decode(output: np.ndarray, ratio: float, score_thr: float = CANDIDATE_SCORE,
           nms_iou: float = NMS_IOU) -> list[tuple[tuple[float, float, float, float], float, int]]:
    """Detections ``((x0, y0, x1, y1), score, class)`` in original-image pixels, best first.

    Args:
        output: the model's ``1x3549x85`` (or ``3549x85``) output.
        ratio: the resize factor of :func:`preprocess`.
        score_thr: candidates below ``obj * class`` are dropped before NMS.
        nms_iou: class-wise NMS IoU.
    """
    out = np.asarray(output, np.float32).reshape(-1, 85)
    cells, strides = _grids()
    if len(out) != len(cells):
        raise ValueError(f"YOLOX output has {len(out)} rows, expected {len(cells)} (416x416 input)")
    cxy = (out[:, :2] + cells) * strides[:, None]
    wh = np.exp(np.minimum(out[:, 2:4], 20.0)) * strides[:, None]
    corners = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1) / ratio
    scores = out[:, 4:5] * out[:, 5:]  # (3549, 80)
    rows, cls = np.nonzero(scores > score_thr)
    dets = []
    for c in np.unique(cls):
        r = rows[cls == c]
        for i in nms(corners[r], scores[r, c], nms_iou):
            dets.append((tuple(map(float, corners[r[i]])), float(scores[r[i], c]), int(c)))
    dets.sort(key=lambda d: -d[1])
    return dets


def best(dets: list[tuple[tuple[float, float, float, float], float, int]], classes: Sequence[int],
         img_w: int, img_h: int) -> Detection | None:
    """The best-scoring detection among ``classes``, clipped to the image (None: none found)."""
    for (x0, y0, x1, y1), s, c in dets:
        if c in classes:
            box = clip_box(x0, y0, x1, y1, img_w, img_h)
            if box is not None:
                return Detection(box, s, COCO_CLASSES[c])
    return None


class YOLOX:
    """The YOLOX-Nano ONNX model; :meth:`detect` gives the best box of some COCO classes."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = find_model(path)
        self.session = shared_session(str(self.path))
        self.input = self.session.get_inputs()[0].name

    def raw(self, img: Image.Image) -> tuple[np.ndarray, float]:
        """The model's output on ``img`` and the resize factor."""
        x, r = preprocess(img)
        return self.session.run(None, {self.input: x})[0], r

    def detect(self, img: Image.Image, classes: Sequence[int]) -> Detection | None:
        """The best box of the COCO ``classes`` (indices, :func:`class_ids`) in ``img``; None: none."""
        out, r = self.raw(img)
        return best(decode(out, r), classes, img.width, img.height)
