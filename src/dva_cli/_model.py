"""The model options shared by ``embed``, ``search``, ``serve``, ``report``, ``eval`` and ``export``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

# The one list of runtimes. dva/runtime/__init__.py holds only names; the runtimes' modules load
# when a command runs. Importing it loads the package ``dva`` (torch with it), which building the
# parser did already through dva.data (dva_cli._data), so ``dva --help`` costs no more.
from dva.runtime import RUNTIMES

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike

DEFAULT_BACKBONE = "mobilenetv2_100"


def add_model_arguments(p: argparse.ArgumentParser, runtime: bool = False, ica_scale: bool = False) -> None:
    """Add ``--checkpoint``, ``--backbone``, ``--weights``, ``--img-size`` and ``--device``.

    ``runtime``: also ``--runtime torch|onnx|auto`` (commands that only embed; ``report`` and
    ``boxes`` need the torch model's activation maps and stay on torch).
    ``ica_scale``: also ``--ica-scale A`` (``eval``, ``embed``, ``export``; elsewhere a checkpoint
    written by ``dva interpolate`` carries the scale).
    """
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", help="a checkpoint from `dva train` (backbone + adapters)")
    g.add_argument("--backbone", help="timm backbone name when no checkpoint is given "
                   f"(default {DEFAULT_BACKBONE}: the frozen, un-adapted backbone)")
    g.add_argument("--weights", default=None,
                   help="backbone weights: bundled | hub | none | PATH (default: bundled, or "
                        "the checkpoint's own)")
    g.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    g.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    if ica_scale:
        g.add_argument("--ica-scale", type=float, default=None, metavar="A",
                       help="scale every adapter's output by A in [0, 1] at embedding time: 0 = the frozen "
                            "backbone, 1 = the trained adapters (default: the checkpoint's own, 1 after "
                            "`dva train`). Part of the model fingerprint: an index built at one scale refuses "
                            "queries at another. Adapter checkpoints only (full/head: `dva interpolate`)")
    if runtime:
        g.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="who runs the model: torch, or onnx (onnxruntime; the model is exported once "
                            "into $DVA_CACHE/onnx/, default ~/.cache/dva/onnx/); auto (default) = onnx "
                            "on CPU when onnx and onnxruntime are installed, else torch. Same fingerprint, "
                            "so an index built with one is searched with the other")


def embedder_from_args(args: argparse.Namespace) -> EmbedderLike:
    """Load the embedder the model options describe (torch unless ``--runtime`` says otherwise)."""
    from dva.runtime.load import load_embedder

    weights = args.weights
    if weights is None and not args.checkpoint:
        weights = "bundled"
    return load_embedder(checkpoint=args.checkpoint, backbone=args.backbone or DEFAULT_BACKBONE,
                         weights=weights, img_size=args.img_size, device=args.device,
                         runtime=getattr(args, "runtime", "torch"), ica_scale=getattr(args, "ica_scale", None))


def check_query_model(gallery: object, embedder: EmbedderLike, args: argparse.Namespace) -> None:
    """``gallery.check_fingerprint`` for the query model, saying so when no ``--checkpoint`` was given
    (the query model is then a frozen backbone: a common slip when the gallery was embedded by a trained one)."""
    from dva.retrieval.index import FingerprintMismatchError

    try:
        gallery.check_fingerprint(embedder.fingerprint)  # type: ignore[attr-defined]
    except FingerprintMismatchError as exc:
        if args.checkpoint:
            raise
        backbone = args.backbone or DEFAULT_BACKBONE
        raise FingerprintMismatchError(f"{exc} (no --checkpoint was given: the query model is the frozen {backbone}; "
                                       "pass the checkpoint that embedded the gallery)") from None
