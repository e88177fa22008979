"""What a box source reads (:class:`BoxJob`) and what it declares (:class:`BoxSource`).

A box source is one function ``find(job) -> {path: (box, score)}`` plus the few facts the
registry (:mod:`dva.opa.sources`) needs to cache and threshold its boxes. Adding a source = one
such function, one :class:`BoxSource` entry in :data:`dva.opa.sources.SOURCES`, and its name in
:data:`dva.opa.names.SOURCE_NAMES` (what the config accepts; the registry checks the two agree).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dva.opa.geometry import Box, Boxes

if TYPE_CHECKING:
    import torch

    from dva.config import DVAConfig
    from dva.model import DVAModel
    from dva.runtime.frozen import FrozenRunner


@dataclass(frozen=True)
class BoxJob:
    """What a box source may read: the images, the run config, the frozen model."""

    paths: list[str]
    cfg: DVAConfig
    model: DVAModel | None  # None for the sources that do not read the backbone
    annotated: dict[str, Box] = field(default_factory=dict)  # boxes that came with the dataset
    device: torch.device | str = "cpu"
    progress: bool = True
    runner: FrozenRunner | None = None  # who runs the frozen network (None: torch, dva.runtime.frozen)
    # opa.loc_view=view: the self-localisation pass also hands the x view's frozen prefix (float16,
    # batches in path order) to this list, so that the prefix cache need not run it again.
    prefix_sink: list | None = None


def _no_setting(cfg: DVAConfig) -> str:
    return ""


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
    setting: Callable[[DVAConfig], Any] = _no_setting
    uses_model: bool = True
