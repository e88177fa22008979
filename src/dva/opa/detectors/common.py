"""What the OPA detectors share: :class:`Detection`, and what to detect (``opa.prompt``).

``opa.prompt=auto`` means the super-category of the dataset (:func:`resolve_prompt`): bird for
the bird datasets, cat and dog for pets, car, airplane.
"""
from __future__ import annotations

from typing import NamedTuple

from dva.opa.geometry import Box


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
