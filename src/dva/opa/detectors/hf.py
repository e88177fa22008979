"""Open-vocabulary detectors through Hugging Face ``transformers``: GroundingDINO and OWLv2.

``opa.box_source=groundingdino`` / ``owlv2`` (docs/METHOD.md, OPA), for users with the hub (or a
local copy: a model id may be a folder). Install with ``pip install 'dva[detectors]'``. Model
ids: ``opa.groundingdino_model`` (default ``IDEA-Research/grounding-dino-tiny``) and
``opa.owlv2_model`` (default ``google/owlv2-base-patch16-ensemble``).

The prompt is the super-category (``opa.prompt``): GroundingDINO reads ``"a cat. a dog."``, OWLv2
one query per class (``"a photo of a cat"``, ...). The boxes come from the library's own
post-processing (``post_process_grounded_object_detection`` of each processor) in pixels of the
original image; the best-scoring one is kept and clipped to the image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PIL import Image

from dva.opa.detectors.common import Detection
from dva.opa.geometry import clip_box

KINDS = ("groundingdino", "owlv2")
TEXT_THRESHOLD = 0.25  # GroundingDINO: tokens above it name the box's phrase (the library default)


def prompt_text(kind: str, classes: Sequence[str]) -> str | list[str]:
    """What the model reads: ``"a bird."`` / ``"a cat. a dog."`` (GroundingDINO, lower case, each
    phrase ended by a dot) or ``["a photo of a bird"]`` (OWLv2, one query per class)."""
    phrases = [_phrase(c) for c in classes]
    if kind == "groundingdino":
        return " ".join(f"{p}." for p in phrases)
    if kind == "owlv2":
        return [f"a photo of {p}" for p in phrases]
    raise ValueError(f"unknown detector kind {kind!r}; expected one of {KINDS}")


def _phrase(name: str) -> str:
    """``bird`` -> ``a bird``; a name that already has an article is kept (``an owl``)."""
    n = " ".join(name.strip().lower().split())
    return n if n.split(" ", 1)[0] in ("a", "an", "the") else f"a {n}"


def _label(text: str, classes: Sequence[str]) -> str:
    """The class named in a detected phrase (the phrase itself when none or several are)."""
    hits = [c for c in classes if c.lower() in text.lower()]
    return hits[0] if len(hits) == 1 else text.strip()


@dataclass
class HFDetector:
    """A loaded model and its processor; :meth:`detect` gives the best box for the classes."""

    kind: str
    model: Any
    processor: Any
    device: str = "cpu"

    def detect(self, img: Image.Image, classes: Sequence[str]) -> Detection | None:
        import torch

        img = img.convert("RGB")
        text = prompt_text(self.kind, classes)
        size = [(img.height, img.width)]
        if self.kind == "groundingdino":
            inputs = self.processor(images=img, text=text, return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model(**inputs)
            res = self.processor.post_process_grounded_object_detection(
                out, inputs["input_ids"], threshold=0.0, text_threshold=TEXT_THRESHOLD, target_sizes=size)[0]
            labels = [_label(t, classes) for t in res["text_labels"]]
        else:
            inputs = self.processor(images=img, text=[text], return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model(**inputs)
            res = self.processor.post_process_grounded_object_detection(
                out, threshold=0.0, target_sizes=size, text_labels=[list(classes)])[0]
            labels = list(res["text_labels"])
        scores, boxes = res["scores"].float().cpu(), res["boxes"].float().cpu()
        for i in torch.argsort(scores, descending=True).tolist():
            box = clip_box(*boxes[i].tolist(), img.width, img.height)
            if box is not None:
                return Detection(box, float(scores[i]), labels[i])
        return None


@lru_cache(maxsize=2)
def load(kind: str, model_id: str, device: str = "cpu") -> HFDetector:
    """Model and processor of ``model_id`` (the hub, its cache, or a local folder), once per process."""
    try:
        from transformers import AutoProcessor
    except ImportError:
        raise ImportError(
            f"opa.box_source={kind} needs Hugging Face transformers: pip install 'dva[detectors]'"
        ) from None
    if kind == "groundingdino":
        from transformers import GroundingDinoForObjectDetection as Model
    elif kind == "owlv2":
        from transformers import Owlv2ForObjectDetection as Model
    else:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {KINDS}")
    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = Model.from_pretrained(model_id).eval().to(device)
    except OSError as exc:  # not on the hub / no network and not cached
        raise FileNotFoundError(
            f"cannot load {kind} model {model_id!r} ({exc}); it needs the Hugging Face hub once "
            f"(then its cache), or set opa.{kind}_model to a local folder"
        ) from exc
    return HFDetector(kind, model, processor, device)
