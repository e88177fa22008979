"""Loading an embedder: a checkpoint or a frozen backbone, on the runtime asked for (docs/METHOD.md, Inference)."""
from __future__ import annotations

from pathlib import Path

from dva.config import DVAConfig
from dva.model import build_model
from dva.runtime import RUNTIMES, sessions
from dva.runtime.cache import onnx_cache_path
from dva.runtime.onnx_embedder import OnnxEmbedder
from dva.runtime.onnx_export import config_digest, export_onnx
from dva.runtime.protocol import EmbedderLike
from dva.runtime.torch_embedder import Embedder


def load_embedder(checkpoint: str | None = None, backbone: str | None = None, weights: str | None = None,
                  img_size: int | None = None, device: str = "cpu", runtime: str = "torch",
                  ica_scale: float | None = None) -> EmbedderLike:
    """An embedder from a checkpoint, or the frozen zero-shot backbone.

    Args:
        checkpoint: a ``.safetensors`` file from ``dva train``; None = frozen backbone only.
        backbone: timm name when no checkpoint is given (default ``mobilenetv2_100``).
        weights: backbone weights (``bundled`` | ``hub`` | ``none`` | PATH); None = the
            checkpoint's own (the ones it was trained with), or ``bundled`` without a checkpoint.
        img_size: input size (default: the checkpoint's, else 224).
        device: ``cpu``, ``cuda`` or ``auto``.
        runtime: one of :data:`dva.runtime.RUNTIMES`: ``torch`` (an :class:`Embedder`), ``onnx``
            (an :class:`OnnxEmbedder` of the same model, exported once into the cache, see
            :func:`dva.runtime.cache.onnx_cache_path`) or ``auto`` (onnx on CPU when onnx and
            onnxruntime are installed, else torch). The fingerprint is the same for all.
        ica_scale: embedding-time adapter scale alpha in [0, 1] for an adapter checkpoint
            (0 = the frozen backbone, 1 = the trained adapters; None = the checkpoint's own,
            normally 1). It enters the fingerprint: an index built at one scale refuses
            queries embedded at another.

    Raises:
        ValueError: an unknown ``runtime``, a checkpoint that does not fit its backbone, or an
            ``ica_scale`` outside [0, 1] or without an adapter checkpoint.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if ica_scale is not None and not checkpoint:
        raise ValueError("an ICA scale (--ica-scale) needs an adapter checkpoint (--checkpoint); the frozen "
                         "backbone has no adapters to scale")
    if checkpoint:
        from dva.checkpoint import load_checkpoint

        # The checkpoint names its backbone weights; an explicit source overrides them (e.g. a
        # local file instead of the hub). The fingerprint check still applies.
        model, _ = load_checkpoint(checkpoint, weights=weights, ica_scale=ica_scale)
        if img_size:
            model.cfg.backbone.img_size = img_size
    else:
        cfg = DVAConfig()
        cfg.backbone.name = backbone or "mobilenetv2_100"
        cfg.backbone.weights = weights or "bundled"
        cfg.backbone.img_size = img_size or 224
        cfg.ica.enabled = False
        model = build_model(cfg, 0)
    embedder = Embedder(model, device)
    if runtime == "torch":
        return embedder
    # Through the module attribute: one definition, and tests can stand in a missing onnxruntime.
    if runtime == "auto" and (embedder.device.type != "cpu" or not sessions.onnx_available()):
        return embedder
    return onnx_embedder_for(embedder)


def onnx_embedder_for(embedder: Embedder, path: str | Path | None = None) -> EmbedderLike:
    """The onnxruntime twin of a torch ``embedder``, exported into the cache on first use.

    A cached file is reused only when its fingerprint and configuration digest match (else it
    is re-exported, atomically, so concurrent processes never read half a file).
    """
    sessions.providers_for(str(embedder.device))  # no CUDA in this onnxruntime: say so before exporting
    p = Path(path) if path else onnx_cache_path(embedder.fingerprint)
    want = config_digest(embedder)
    try:
        onnx = OnnxEmbedder(p, device=str(embedder.device))
        if onnx.fingerprint == embedder.fingerprint and onnx.meta.get("dva.config_digest") == want:
            return onnx
    except (FileNotFoundError, ValueError):
        pass
    export_onnx(embedder, p)
    return OnnxEmbedder(p, device=str(embedder.device))
