"""Export an embedder to ONNX: backbone + adapters -> L2-normalised embeddings (docs/METHOD.md, Inference).

The ONNX file maps a normalised ``(B, 3, H, W)`` float32 batch (dynamic ``B``) to ``(B, dim)``
L2-normalised embeddings. Its ``metadata_props`` carry what a runtime needs to reproduce the
torch :class:`dva.runtime.torch_embedder.Embedder` exactly and to be checked against an index:

* ``dva.format`` — :data:`FORMAT`;
* ``dva.fingerprint`` — the torch embedder's fingerprint (an index built with either runtime is
  searchable with the other);
* ``dva.dim``, ``dva.img_size``;
* ``dva.transform`` — JSON of the eval transform (resize, crop, mean, std, interpolation), read
  off the torch embedder's own transform, so nothing is re-derived;
* ``dva.config_digest`` — SHA-256 of the settings that shape the graph but are not in the
  fingerprint (adapter activation and scale, export format): a cached export is reused only
  while it matches;
* ``dva.model`` — human-readable description (backbone, weights, adapters, merged or not).

Adapters with ``ica.act=identity`` are merged into the frozen weights first
(:func:`dva.ica.merge_ica`, zero overhead); an embedding-time adapter scale ``alpha``
(``--ica-scale``) multiplies the merged weight delta, ``W + alpha * s * W_up W_down``, and is a
constant factor on the branch of the other adapters, so the export scales exactly as torch does. GELU/ReLU adapters of a CNN are rewritten for the
runtime without changing what they compute (:func:`fold_adapter_norms`): the frozen BatchNorm
after an adapted conv is folded into the conv and the adapter's ``up`` weights, and the
bottleneck is zero-padded to a multiple of 16 channels, so that onnxruntime fuses the conv,
its bias and activation and keeps its blocked channel layout (measured gain small: equal on one
thread, ~5% on two; docs/METHOD.md, Inference).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dva.ica import ConvAdapter, branches_of, ica_modules, ica_scale, merge_ica
from dva.utils import atomic_write_bytes

if TYPE_CHECKING:
    from dva.model import DVAModel
    from dva.runtime.torch_embedder import Embedder

FORMAT = "dva-onnx/1"
OPSET = 17
INPUT, OUTPUT = "images", "embeddings"
# How adapters are rewritten for the runtime (fold_adapter_norms): part of the config digest, so
# that a cached export from before a change is made again rather than reused.
REWRITE = "fold-norms-pad16/1"


# --------------------------------------------------------------------------- the eval transform
def transform_spec(transform: Any) -> dict:
    """The parameters of an eval transform (timm/torchvision ``Compose``) as JSON-able data.

    Accepts exactly Resize -> CenterCrop -> ToTensor -> Normalize (what
    :func:`dva.transforms.eval_transform` builds); anything else raises, because a runtime
    that cannot rebuild the transform would silently embed other pixels.

    Raises:
        ValueError: naming the step that cannot be described.
    """
    import torchvision.transforms as T

    steps = list(getattr(transform, "transforms", [transform]))
    spec: dict[str, Any] = {}
    for s in steps:
        name = type(s).__name__
        if isinstance(s, T.Resize):
            if s.max_size is not None:
                raise ValueError("transform: Resize with max_size cannot be exported")
            size = s.size
            spec["resize"] = size if isinstance(size, int) else list(size)
            spec["interpolation"] = s.interpolation.value
            spec["antialias"] = bool(s.antialias)
        elif isinstance(s, T.CenterCrop):
            spec["crop"] = [int(v) for v in s.size]
        elif name in ("ToTensor", "MaybeToTensor"):
            spec["to_tensor"] = True
        elif isinstance(s, T.Normalize):
            spec["mean"] = [float(v) for v in torch.as_tensor(s.mean).flatten().tolist()]
            spec["std"] = [float(v) for v in torch.as_tensor(s.std).flatten().tolist()]
        else:
            raise ValueError(f"transform step {name} cannot be exported (expected Resize, CenterCrop, "
                             "ToTensor, Normalize)")
    missing = [k for k in ("resize", "crop", "to_tensor", "mean", "std") if k not in spec]
    if missing:
        raise ValueError(f"transform lacks {', '.join(missing)}; cannot describe it for another runtime")
    return spec


def transform_from_spec(spec: dict) -> Any:
    """The torchvision transform described by :func:`transform_spec` (same tensors as the original)."""
    import torchvision.transforms as T

    resize = spec["resize"] if isinstance(spec["resize"], int) else tuple(spec["resize"])
    return T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode(spec["interpolation"]), antialias=spec["antialias"]),
        T.CenterCrop(tuple(spec["crop"])),
        T.ToTensor(),
        T.Normalize(spec["mean"], spec["std"]),
    ])


# --------------------------------------------------------------------------- export
class _EmbedGraph(nn.Module):
    """What is traced: ``model.embed`` (adapters on, L2-normalised)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def _adapter_acts(model: nn.Module) -> list[str]:
    return [b.act_name for m in ica_modules(model) for b in branches_of(m)]


def config_digest(embedder: Embedder) -> str:
    """Hash of what shapes the exported graph beyond the fingerprint (see the module docstring)."""
    cfg = embedder.model.cfg
    # alpha * s per branch: the embedding-time --ica-scale shapes the graph (a constant in it).
    scales = [float(b.effective_scale()) for m in ica_modules(embedder.model) for b in branches_of(m)]
    blob = {"format": FORMAT, "opset": OPSET, "rewrite": REWRITE, "fingerprint": embedder.fingerprint,
            "ica": cfg.ica.__dict__ if cfg.ica.enabled else None, "scales": scales,
            "trainable": cfg.train.trainable, "transform": transform_spec(embedder.transform)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def export_metadata(embedder: Embedder, merged: int) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file."""
    cfg = embedder.model.cfg
    model = {"backbone": cfg.backbone.name, "weights": cfg.backbone.weights,
             "adapters": bool(embedder.model.adapted), "merged_adapters": merged,
             "adapter_act": cfg.ica.act if embedder.model.adapted else None,
             "ica_scale": ica_scale(embedder.model.encoder)}
    return {
        "dva.format": FORMAT,
        "dva.fingerprint": embedder.fingerprint,
        "dva.dim": str(int(embedder.dim)),
        "dva.img_size": str(int(embedder.img_size)),
        "dva.transform": json.dumps({**transform_spec(embedder.transform),
                                     "crop_pct": embedder.model.data_cfg.get("crop_pct")}),
        "dva.config_digest": config_digest(embedder),
        "dva.model": json.dumps(model),
    }


def _without_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BatchNorm once it is folded away: timm's BatchNormAct2d keeps its drop + act."""
    return nn.Sequential(*(getattr(bn, k) for k in ("drop", "act") if hasattr(bn, k))) or nn.Identity()


@torch.no_grad()
def fold_adapter_norms(model: nn.Module, pad_to: int = 16) -> int:
    """Rewrite CNN adapters for export, in place; the function computed stays the same.

    For a :class:`dva.ica.ConvAdapter` whose next sibling BatchNorm normalises its output
    (``bn(conv(x) + a(x))``, docs/METHOD.md, ICA), the eval-mode BatchNorm is an affine map per
    channel, ``g * y + b``: it moves into the frozen conv (weight x g, bias) and into the
    adapter's ``up`` (x g), and the BatchNorm module is replaced by its activation. The
    bottleneck is zero-padded to a multiple of ``pad_to`` channels (zero ``down`` rows and
    zero ``up`` columns add exactly 0 through any activation with act(0) = 0). Callers check
    the result numerically (:func:`export_onnx` does).

    Returns:
        How many adapters were rewritten.
    """
    count = 0
    for parent in list(model.modules()):
        kids = list(parent.named_children())
        for i, (_, child) in enumerate(kids):
            if not isinstance(child, ConvAdapter) or not child.enabled:
                continue
            # timm blocks register each conv right before the norm applied to its output
            # (conv_pw/bn1, conv_pwl/bn3, conv_head/bn2, ResNet conv1/bn1, conv3/bn3).
            nxt = kids[i + 1] if i + 1 < len(kids) else None
            if nxt is None or not isinstance(nxt[1], nn.BatchNorm2d) or nxt[1].num_features != child.base.out_channels:
                continue
            bn_name, bn = nxt
            g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            base, br = child.base, child.ica_branch
            bias = base.bias if base.bias is not None else torch.zeros_like(g)
            base.weight.copy_(base.weight * g[:, None, None, None])
            base.bias = nn.Parameter((bias - bn.running_mean) * g + bn.bias, requires_grad=False)
            up_w = br.up.weight * g[:, None, None, None]
            r = br.down.out_channels
            rp = -(-r // pad_to) * pad_to  # every ICA activation (gelu, relu, identity) maps 0 to 0
            down = nn.Conv2d(br.down.in_channels, rp, 1, stride=br.down.stride, bias=False)
            up = nn.Conv2d(rp, br.up.out_channels, 1, bias=False)
            down.weight.zero_()
            up.weight.zero_()
            down.weight[:r] = br.down.weight
            up.weight[:, :r] = up_w
            br.down, br.up = down.requires_grad_(False), up.requires_grad_(False)
            setattr(parent, bn_name, _without_norm(bn))
            count += 1
    return count


def runtime_copy(model: DVAModel, size: int, *, merge: bool = True, fold: bool = True) -> tuple[DVAModel, int]:
    """A CPU copy of ``model`` rewritten for the runtime, and how many adapters were merged.

    Identity-activation adapters are merged into the frozen weights (:func:`dva.ica.merge_ica`);
    the others of a CNN are folded (:func:`fold_adapter_norms`) when the folded copy embeds a
    probe batch of ``size`` px like the original (float32, max abs difference < 1e-4).
    ``model`` itself is not modified.
    """
    model = copy.deepcopy(model).cpu().eval()
    acts = _adapter_acts(model.encoder)
    merged = merge_ica(model.encoder) if merge and acts and all(a == "identity" for a in acts) else 0
    model = model.to(memory_format=torch.contiguous_format)
    if fold and acts and not merged:
        # The rewrite is exact in algebra; check it in float32 before trusting it (an
        # architecture whose norm is not right after the conv would be skipped, not folded).
        probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = model.embed(probe)
            folded = copy.deepcopy(model)
            if fold_adapter_norms(folded.encoder) and float((folded.embed(probe) - want).abs().max()) < 1e-4:
                model = folded
    return model, merged


def export_onnx(embedder: Embedder, out: str | Path, *, merge: bool = True, fold: bool = True) -> dict[str, str]:
    """Write ``embedder`` (backbone + adapters + normalisation) to ``out`` as ONNX, atomically.

    Args:
        embedder: a torch :class:`dva.runtime.torch_embedder.Embedder`; it is not modified (a copy is merged).
        out: the ``.onnx`` file.
        merge: fold identity-activation adapters into the frozen weights first.
        fold: rewrite the other CNN adapters with :func:`fold_adapter_norms` (same function, faster).

    Returns:
        The metadata written (see the module docstring).
    """
    import onnx  # noqa: F401 - a missing onnx package fails here, before the export's work

    size = int(embedder.img_size)
    model, merged = runtime_copy(embedder.model, size, merge=merge, fold=fold)
    x = torch.zeros(2, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_EmbedGraph(model).eval(), (x,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return _write_with_metadata(buf.getvalue(), export_metadata(embedder, merged), out)


def _write_with_metadata(graph: bytes, meta: dict[str, str], out: str | Path) -> dict[str, str]:
    """Replace the graph's metadata by ``meta`` and write it to ``out`` atomically; returns ``meta``."""
    import onnx

    proto = onnx.load_from_string(graph)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    atomic_write_bytes(out, proto.SerializeToString())
    return meta


# --------------------------------------------------------------------------- several domains
SUFFIX_FORMAT = "dva-onnx-suffix/1"
PREFIX_INPUT = "prefix"


class _SuffixGraph(nn.Module):
    """What is traced for one domain: its network from the activation entering stage ``start``."""

    def __init__(self, model: DVAModel, start: int, adapted: bool) -> None:
        super().__init__()
        # A private copy (runtime_copy): moving its split down to ``start`` only makes it run the
        # frozen stages between ``start`` and its first adapter too, which carry no adapter.
        model.split = start
        self.model, self.adapted = model, adapted

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.embed_from_prefix(h, normalize=True, adapted=self.adapted)


def export_suffix(embedder: Embedder, start: int, out: str | Path, *, adapted: bool = True) -> dict[str, str]:
    """Write one domain's suffix graph to ``out``, atomically: the activation entering stage ``start``
    (``dva.backbone.forward_prefix(..., start)``) -> L2-normalised ``(B, dim)`` embeddings.

    Adapters are merged or folded as :func:`export_onnx` does for whole embedders.
    ``adapted=False``: the frozen network (adapters and head bypassed; a model without adapters).

    Raises:
        ValueError: ``start`` is above the first adapted stage (the graph would skip adapters).
    """
    import onnx  # noqa: F401 - a missing onnx package fails here, before the export's work

    from dva import backbone as bb

    if start > embedder.model.split:
        raise ValueError(f"a suffix graph from stage {start} would skip the adapters of stages "
                         f"{embedder.model.split}-{start - 1}: start at or below the first adapted stage")
    size = int(embedder.img_size)
    model, merged = runtime_copy(embedder.model, size)
    with torch.no_grad():
        h = bb.forward_prefix(model.encoder, torch.zeros(2, 3, size, size), start).contiguous()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(_SuffixGraph(model, start, adapted).eval(), (h,), buf, dynamo=False,
                          opset_version=OPSET, input_names=[PREFIX_INPUT], output_names=[OUTPUT],
                          dynamic_axes={PREFIX_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    meta = {**export_metadata(embedder, merged), "dva.format": SUFFIX_FORMAT, "dva.start": str(int(start)),
            "dva.adapted": str(bool(adapted))}
    return _write_with_metadata(buf.getvalue(), meta, out)
