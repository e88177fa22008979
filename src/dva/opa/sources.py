"""The box-source registry and the cached computation of the boxes (docs/METHOD.md, OPA).

One box ``(x, y, w, h)`` (pixels of the original image) and a score per training image, found
once and cached as ``boxes.json`` in the run folder. A *box source* is a
:class:`~dva.opa.job.BoxSource` keyed by its name in :data:`SOURCES` (``opa.box_source``):

* ``self`` (default): the frozen backbone's own response map (:mod:`dva.opa.self_boxes`);
* ``annotations``: the dataset's boxes, or a CSV/JSON file (:func:`dva.opa.cache.read_boxes_file`);
* ``none``: no boxes (the object view is the image itself);
* ``detector``, ``yolox``, ``saliency``, ``groundingdino``, ``owlv2``: detectors
  (:mod:`dva.opa.detector_boxes`).

The score threshold is applied by the users of the boxes (:func:`min_score`), not by the sources:
a detector's best box is stored with its score even when it is low, so changing
``opa.min_score`` needs no recomputation. The views built from the boxes are in
:mod:`dva.opa.views`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dva.opa import detector_boxes as det
from dva.opa.cache import load_boxes_cache, read_boxes_file, write_boxes_cache
from dva.opa.geometry import Box, Boxes
from dva.opa.job import BoxJob, BoxSource
from dva.opa.names import SOURCE_NAMES
from dva.opa.self_boxes import self_boxes

if TYPE_CHECKING:
    import torch

    from dva.config import DVAConfig
    from dva.model import DVAModel
    from dva.runtime.frozen import FrozenRunner


def _annotation_boxes(job: BoxJob) -> Boxes:
    """``opa.boxes_file`` when set, else the boxes that came with the dataset (score 1)."""
    if job.cfg.opa.boxes_file:
        return read_boxes_file(job.cfg.opa.boxes_file)
    if not job.annotated:
        raise ValueError("opa.box_source=annotations but the dataset has no boxes: set opa.boxes_file")
    return {p: (b, 1.0) for p, b in job.annotated.items()}


def _registry(sources: dict[str, BoxSource]) -> dict[str, BoxSource]:
    """``sources`` in the order of :data:`~dva.opa.names.SOURCE_NAMES`, which must name them all.

    Config validation reads the names without importing this module; a source added here but
    not there (or the reverse) must fail at once, not when a run asks for it.
    """
    if set(sources) != set(SOURCE_NAMES):
        raise ImportError(f"dva.opa.sources defines {sorted(sources)} but dva.opa.names.SOURCE_NAMES lists "
                          f"{sorted(SOURCE_NAMES)}: add or remove the name in dva/opa/names.py")
    return {name: sources[name] for name in SOURCE_NAMES}


# Thresholds (min_score, docs/METHOD.md, OPA): 0.5 as DVF for detector boxes. Self-localisation
# scores are lower for large, loosely framed objects (cub100: median 0.34), hence 0.15; saliency
# boxes have the same score. OWLv2's sigmoid scores run lower (its Hugging Face examples keep
# boxes above 0.1), hence 0.3; neither transformers threshold is measured here.
SOURCES: dict[str, BoxSource] = _registry({
    "self": BoxSource(self_boxes, min_score=0.15),
    "annotations": BoxSource(_annotation_boxes, cached=False),
    "none": BoxSource(lambda job: {}, cached=False, uses_model=False),
    "detector": BoxSource(det.user_boxes, setting=det.user_setting),
    "yolox": BoxSource(det.yolox_boxes, min_score=0.5, setting=det.yolox_setting, uses_model=False),
    "saliency": BoxSource(det.saliency_boxes, min_score=0.15, setting=det.saliency_setting, uses_model=False),
    "groundingdino": BoxSource(det.hf_boxes("groundingdino"), min_score=0.5,
                               setting=det.hf_setting("groundingdino"), uses_model=False),
    "owlv2": BoxSource(det.hf_boxes("owlv2"), min_score=0.3, setting=det.hf_setting("owlv2"), uses_model=False),
})


def min_score(source: str, configured: float) -> float:
    """The box-score threshold in force (``configured``, or the per-source default when < 0)."""
    if configured >= 0:
        return configured
    return SOURCES[source].min_score if source in SOURCES else 0.5


def cache_key(name: str, cfg: DVAConfig, model: DVAModel | None, n: int) -> dict:
    """What the ``n`` boxes of source ``name`` depend on, as it reads back from the cache file (JSON).

    Sources that do not read the backbone are keyed by their own settings only (model file,
    prompt, thresholds), so any run reuses their boxes.
    """
    source = SOURCES[name]
    meta = {"source": name, "setting": source.setting(cfg), "n": n}
    if source.uses_model:
        if model is None:
            raise ValueError(f"opa.box_source={name} needs the frozen backbone (no model given)")
        meta.update(fingerprint=model.fingerprint, img_size=cfg.backbone.img_size,
                    threshold=cfg.opa.threshold, loc_scale=cfg.opa.loc_scale)
        if name == "self":
            meta["loc_view"] = cfg.opa.loc_view
    return json.loads(json.dumps(meta))  # tuples -> lists, as the file reads back


def compute_boxes(model: DVAModel | None, paths: Sequence[str], cfg: DVAConfig, cache: str | Path,
                  annotated: dict[str, Box] | None = None, device: torch.device | str = "cpu",
                  progress: bool = True, runner: FrozenRunner | None = None,
                  prefix_sink: list | None = None) -> Boxes:
    """Boxes ``path -> ((x, y, w, h), score)`` from ``cfg.opa.box_source``.

    Results of a cached source are stored in ``cache`` keyed by :func:`cache_key` (the source,
    the backbone fingerprint for sources that read it, the settings they depend on), so reruns
    and resumes are free. ``model`` may be None for sources that do not read the backbone. The
    result of a detector source is a :class:`~dva.opa.cache.FoundBoxes` (``.labels``: each box's
    class). ``runner`` runs the frozen network for ``self``
    (:func:`dva.runtime.frozen.frozen_runner`; default torch). ``prefix_sink``: see
    :class:`~dva.opa.job.BoxJob` (filled only when the ``self`` boxes are computed now).
    """
    name = cfg.opa.box_source
    if not cfg.opa.enabled:
        return {}
    if name not in SOURCES:
        raise ValueError(f"opa.box_source must be one of {' | '.join(SOURCES)}, got {name!r}")
    source = SOURCES[name]
    job = BoxJob(list(paths), cfg, model, dict(annotated or {}), device, progress, runner, prefix_sink)
    if not source.cached:
        return source.find(job)
    meta = cache_key(name, cfg, model, len(job.paths))
    hit = load_boxes_cache(cache, meta)
    if hit is not None and all(p in hit for p in job.paths):
        return hit
    out = source.find(job)
    write_boxes_cache(cache, out, meta)
    return out
