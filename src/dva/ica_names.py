"""The values the ``ica.*`` settings may take, and the syntax of ``ica.blocks`` (no imports).

Kept apart from :mod:`dva.ica` (which loads torch) so that config validation reads them without
building anything, as :mod:`dva.opa.names` does for the box sources. :mod:`dva.ica` builds its
activation table from :data:`ACTIVATIONS` and refuses to import when the two differ, so each
name is listed once.
"""
from __future__ import annotations

# ``ica.act``: the bottleneck's non-linearity (identity: linear, mergeable into the frozen weight).
ACTIVATIONS: tuple[str, ...] = ("gelu", "relu", "identity")

# ``ica.target``: "auto" or these names joined by "+". ViT: the slices of the fused qkv projection
# (the paper: "qk"); CNN: the expansion 1x1 conv ("pw"), the projection 1x1 conv ("pwl") and the
# 1x1 head conv ("head").
VIT_TARGETS: tuple[str, ...] = ("qk", "q", "k", "v", "qkv")
CNN_TARGETS: tuple[str, ...] = ("pw", "pwl", "head")

# The family defaults that ``auto`` stands for. ViT: the paper's Q/K adapters in every block.
# CNN: our choice (measured in docs/BENCHMARKS.md): beside the expansion and projection 1x1 convs
# of the last two stages and the 1x1 head conv; with rank 4 on MobileNetV2 that is 39,552
# parameters = 1.78%.
AUTO: dict[str, dict[str, str]] = {"vit": {"target": "qk", "blocks": "all"},
                                   "cnn": {"target": "pw+pwl+head", "blocks": "-2:"}}

_BLOCKS_SYNTAX = "expected 'auto', 'all', a slice like '-2:' or '4:7', or indices like '0,3' or [0, 3]"


def check_target(target: str) -> None:
    """Refuse an ``ica.target`` that names no known layer kind, or mixes ViT and CNN kinds."""
    if target == "auto":
        return
    parts = set(str(target).split("+"))
    unknown = sorted(parts - set(VIT_TARGETS) - set(CNN_TARGETS))
    if unknown or not (parts <= set(VIT_TARGETS) or parts <= set(CNN_TARGETS)):
        what = f"no layer kind is called {', '.join(map(repr, unknown))}" if unknown else \
            "it mixes ViT and CNN layer kinds"
        raise ValueError(f"ica.target={target!r}: {what}; use 'auto', for a ViT one of {' | '.join(VIT_TARGETS)}, "
                         f"for a CNN {', '.join(CNN_TARGETS)} joined by '+'")


def parse_blocks(spec: str) -> slice | list[int] | None:
    """``ica.blocks`` as ``None`` (every block), a slice, or a list of indices (any sign).

    ``auto`` is not parsed here: it stands for the family default (:data:`AUTO`).

    Raises:
        ValueError: the text is none of the forms, naming the key and the forms.
    """
    text = str(spec).strip()
    if text in ("all", ":", ""):
        return None
    try:
        if ":" in text:
            a, b = (int(s) if s.strip() else None for s in text.split(":", 1))
            return slice(a, b)
        if text.startswith("[") and text.endswith("]"):  # a YAML list written as text
            text = text[1:-1]
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"ica.blocks={spec!r}: {_BLOCKS_SYNTAX}") from None
