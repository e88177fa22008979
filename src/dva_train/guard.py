"""Divergence and collapse detection during training (docs/METHOD.md, Training: collapse guard).

Three cheap checks; each returns a :class:`Finding` (what tripped, at which step, the figure,
the likely fix) or None, and the trainer decides what a finding does (``train.on_collapse``):

* :meth:`Guard.check_step` — every step, before the optimiser update: the loss and the gradient
  norm are finite (a float each: the loop reads the loss anyway);
* :meth:`Guard.check_batch` — every ``train.log_every`` steps: the embeddings of the training
  batch still spread (finite, not all zero, mean pairwise cosine at most ``train.collapse_cos``,
  unless the frozen backbone's own embeddings were already that close);
* :meth:`Guard.check_eval` — at every evaluation: MAP@R and R@1 at least
  ``train.collapse_fraction`` x the frozen backbone's; without a frozen figure, R@1 above
  1.5 x chance (chance = 1 / number of evaluation classes).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from dva.config import TRAINABLE_DEFAULTS, TrainConfig

# Without a frozen figure, an evaluation is "near chance" below this multiple of chance.
NEAR_CHANCE = 1.5
# Raw embeddings with a larger norm than this are not "zero".
ZERO_NORM = 1e-6


@dataclass(frozen=True)
class Finding:
    """One tripped check: ``kind`` (non-finite, embeddings, evaluation), the step, the figure, the fix."""

    kind: str
    step: int
    figure: str
    fix: str

    def message(self) -> str:
        return f"training diverged at step {self.step} ({self.kind}): {self.figure}. Likely fix: {self.fix}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "message": self.message()}


def _num(x: float) -> str:
    return f"{x:g}"


def lr_fix(tc: TrainConfig) -> str:
    """What to change: a lower ``train.lr``, naming where the current one came from."""
    default = TRAINABLE_DEFAULTS[tc.trainable]["lr"]
    if "lr" in tc.defaulted:
        source = "train.ica_lr, the preset's adapter rate" if tc.trainable == "ica" and tc.ica_lr is not None \
            else f"the default for train.trainable={tc.trainable}"
        return f"lower train.lr (now {_num(tc.lr)}, {source}; try --train.lr {_num(tc.lr / 10)})"
    if tc.lr > default:
        return f"lower train.lr (now {_num(tc.lr)}, set in the config; try --train.lr {_num(default)}, " \
               f"the default for train.trainable={tc.trainable})"
    return f"lower train.lr (now {_num(tc.lr)}; try --train.lr {_num(tc.lr / 10)})"


# What was measured above the default (cub100 validation split; docs/METHOD.md, Training).
_COLLAPSED_AT = {"full": "at lr 1e-3 a full fine-tune collapsed within 5 steps (validation MAP@R 0.537 -> 0.037)",
                 "head": "at lr 1e-2 the head collapsed within 5 steps (validation MAP@R 0.537 -> 0.399)"}


def lr_warning(tc: TrainConfig, factor: float = 3.0) -> str | None:
    """A warning before training when an explicit ``train.lr`` is far above its trainable's default."""
    default = TRAINABLE_DEFAULTS[tc.trainable]["lr"]
    if "lr" in tc.defaulted or tc.trainable not in _COLLAPSED_AT or tc.lr <= factor * default:
        return None
    return (f"train.lr={_num(tc.lr)} is {tc.lr / default:.0f}x the default for train.trainable={tc.trainable} "
            f"({_num(default)}, used when train.lr is not set); on cub100 {_COLLAPSED_AT[tc.trainable]} "
            f"(docs/METHOD.md, Training). The collapse guard watches this run (train.on_collapse={tc.on_collapse})")


def mean_pairwise_cosine(emb: torch.Tensor) -> float:
    """Mean cosine over the pairs of distinct rows of ``emb`` ``(B, D)`` (zero rows count as 0)."""
    n = F.normalize(emb.float(), dim=-1)
    b = len(n)
    if b < 2:
        return float("nan")
    s = n.sum(0)
    return float((s @ s - (n * n).sum()) / (b * (b - 1)))


class Guard:
    """The checks of one run; ``reference_cos`` is the frozen embeddings' mean pairwise cosine, once known."""

    def __init__(self, tc: TrainConfig, eval_classes: int, split: str = "test") -> None:
        self.tc, self.split = tc, split
        self.chance = 1.0 / max(1, eval_classes)
        self.reference_cos: float | None = None

    def check_step(self, step: int, loss: float, grad_norm: float, scaled: bool = False) -> Finding | None:
        """Non-finite loss or gradient norm. ``scaled``: a loss scaler (CUDA AMP) is on; it skips
        steps with inf/nan gradients by itself, so only the loss is checked."""
        if not math.isfinite(loss):
            return Finding("non-finite loss", step, f"the loss is {loss}", lr_fix(self.tc))
        if not scaled and not math.isfinite(grad_norm):
            return Finding("non-finite gradient", step, f"the gradient norm is {grad_norm} (loss {loss:.4g})",
                           lr_fix(self.tc))
        return None

    def check_batch(self, step: int, emb: torch.Tensor) -> Finding | None:
        """Embeddings of a training batch (raw, ``(B, D)``) that no longer tell images apart."""
        emb = emb.detach().float()
        if not bool(torch.isfinite(emb).all()):
            return Finding("embeddings", step, "the embeddings of the training batch are not finite", lr_fix(self.tc))
        if float(emb.norm(dim=-1).max()) <= ZERO_NORM:
            return Finding("embeddings", step, "every embedding of the training batch is zero", lr_fix(self.tc))
        limit = self.tc.collapse_cos
        cos = mean_pairwise_cosine(emb)
        ref = self.reference_cos
        if limit < 1 and cos > limit and (ref is None or cos > ref):
            was = f"; the frozen backbone's: {ref:.3f}" if ref is not None else ""
            return Finding("embeddings", step,
                           f"the embeddings of the training batch collapsed: mean pairwise cosine {cos:.4f} "
                           f"> train.collapse_cos={_num(limit)}{was}", lr_fix(self.tc))
        return None

    def check_eval(self, step: int, metrics: dict[str, float] | None,
                   frozen: dict[str, float] | None) -> Finding | None:
        """An evaluation far below the frozen backbone's (or near chance without one)."""
        frac = self.tc.collapse_fraction
        if metrics is None or frac <= 0:
            return None
        where = f"on the {self.split} split at step {step}"
        if frozen:
            for key, name in (("map@r", "MAP@R"), ("recall@1", "R@1")):
                v, ref = metrics[key], frozen[key]
                if not v >= frac * ref:  # also catches nan
                    return Finding("evaluation", step,
                                   f"{name} {v:.3f} {where}, below train.collapse_fraction={_num(frac)} x the frozen "
                                   f"backbone's {ref:.3f} (chance: {self.chance:.3f})", lr_fix(self.tc))
            return None
        v = metrics["recall@1"]
        if not v >= min(NEAR_CHANCE * self.chance, (1 + self.chance) / 2):
            return Finding("evaluation", step, f"R@1 {v:.3f} {where} is near chance ({self.chance:.3f})",
                           lr_fix(self.tc))
        return None
