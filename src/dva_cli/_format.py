"""Parsing and printing shared by the commands (``--k`` lists, whole-number options, metric tables)."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--k 0`` is a usage error, not an empty answer)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_ks(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]``; raises ``ValueError`` on anything else."""
    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--k must be comma-separated positive integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--k must be comma-separated positive integers, got {text!r}")
    return ks


def format_table(metrics: dict[str, float]) -> str:
    """Two-column text table, values in percent."""
    return "\n".join(f"{k:<12} {100 * v:6.2f}" for k, v in metrics.items())
