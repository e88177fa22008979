"""In-Context Adaptation (ICA): zero-initialised bottlenecks beside frozen projections (docs/METHOD.md, ICA).

ViT: for the normalised tokens X of an adapted block,
``Q = X Wq + bq + s * up_q(act(down_q(X)))`` and the same for K; V and the MLP are untouched.
timm fuses Q, K, V into one ``attn.qkv`` Linear, so the branches are added to the first two
thirds of its output (:class:`QKVAdapter`).

CNN: the same parallel bottleneck beside chosen 1x1 convolutions, as 1x1 convs
``C_in -> r -> C_out`` (:class:`ConvAdapter`); it is added before the frozen BatchNorm, which
in eval mode is a fixed affine map, so the branch acts like a low-rank update of the conv.

``up`` starts at zero: the adapted model is *exactly* the frozen model at initialisation.
The same holds at any time for ``alpha = 0``: every branch is multiplied by an embedding-time
``alpha`` (``ica.alpha``, :func:`set_ica_scale`; 1 in training), which moves the model from the
frozen backbone (0) to the trained one (1) without retraining (docs/METHOD.md, "Between frozen
and trained").
With ``act="identity"`` the branch is linear and :func:`merge_ica` folds it into the frozen
weight (zero inference overhead).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from dva import backbone as bb
from dva.config import ICAConfig
from dva.ica_names import ACTIVATIONS, AUTO, CNN_TARGETS, VIT_TARGETS, parse_blocks

# The modules behind the names of ``ica.act`` (dva.ica_names.ACTIVATIONS, what the config accepts).
_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "identity": nn.Identity}
if tuple(_ACTS) != ACTIVATIONS:  # one list of names: the config must accept exactly what is built here
    raise ImportError(f"dva.ica: activations {tuple(_ACTS)} differ from dva.ica_names.ACTIVATIONS {ACTIVATIONS}")


def resolve(cfg: ICAConfig, fam: str, has_head: bool = True) -> tuple[str, str]:
    """``(target, blocks)`` with ``auto`` replaced by the family default.

    ``has_head``: whether the CNN has a 1x1 ``conv_head`` (ResNets do not: ``auto`` then omits it).
    """
    target = AUTO[fam]["target"] if cfg.target == "auto" else cfg.target
    if cfg.target == "auto" and not has_head:
        target = "+".join(t for t in target.split("+") if t != "head")
    blocks = AUTO[fam]["blocks"] if cfg.blocks == "auto" else cfg.blocks
    return target, blocks


class Bottleneck(nn.Module):
    """``alpha * s * up(act(down(x)))`` on the last dim (``linear``) or channels (``conv``).

    ``s`` is the trained scale (fixed or learnable); ``alpha`` a plain float set at load time,
    not a tensor: it is neither trained nor saved, and a traced graph holds it as a constant.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, act: str, scale: float, learnable_scale: bool,
                 conv: bool = False, stride: int | tuple = 1, alpha: float = 1.0) -> None:
        super().__init__()
        # act and rank come from a validated ICAConfig (dva.config.validate: choices and bounds).
        if conv:
            self.down = nn.Conv2d(d_in, rank, 1, stride=stride, bias=False)
            self.up = nn.Conv2d(rank, d_out, 1, bias=False)
        else:
            self.down = nn.Linear(d_in, rank, bias=False)
            self.up = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.up.weight)  # training starts at the frozen model
        self.act = _ACTS[act]()
        self.act_name = act
        s = torch.tensor(float(scale))
        if learnable_scale:
            self.scale = nn.Parameter(s)
        else:
            self.register_buffer("scale", s, persistent=False)
        self.alpha = float(alpha)
        self.enabled = True

    def effective_scale(self) -> torch.Tensor:
        """``alpha * s``; at ``alpha = 1`` the trained ``s`` itself (no extra op in training)."""
        return self.scale if self.alpha == 1.0 else self.scale * self.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # alpha = 0 gives exact zeros (0 * finite), so ``base(x) + 0`` is the frozen output bit for bit.
        return self.effective_scale() * self.up(self.act(self.down(x)))

    def delta_weight(self) -> torch.Tensor:
        """The (linear) update ``alpha * s * W_up @ W_down`` as an ``(out, in)`` matrix."""
        wd = self.down.weight.flatten(1)
        wu = self.up.weight.flatten(1)
        return self.effective_scale() * (wu @ wd)


class QKVAdapter(nn.Module):
    """Wraps a fused timm ``qkv`` Linear and adds bottlenecks to the Q / K (/ V) slices."""

    def __init__(self, base: nn.Linear, cfg: ICAConfig, parts: str) -> None:
        super().__init__()
        self.base = base
        d = base.in_features
        self.dim = base.out_features // 3
        self.parts = parts
        self.ica_branches = nn.ModuleDict({
            p: Bottleneck(d, self.dim, cfg.rank, cfg.act, cfg.scale, cfg.learnable_scale, alpha=cfg.alpha)
            for p in parts
        })
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.enabled:
            return out
        deltas = [
            self.ica_branches[p](x) if p in self.ica_branches else torch.zeros_like(out[..., :self.dim])
            for p in "qkv"
        ]
        return out + torch.cat(deltas, dim=-1)

    def merged(self) -> nn.Linear:
        w = self.base.weight.detach().clone()
        for i, p in enumerate("qkv"):
            if p in self.ica_branches:
                w[i * self.dim:(i + 1) * self.dim] += self.ica_branches[p].delta_weight().detach()
        w0 = self.base.weight
        lin = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=w0.device, dtype=w0.dtype)
        lin.weight.data.copy_(w)
        if self.base.bias is not None:
            lin.bias.data.copy_(self.base.bias.detach())
        return lin


class ConvAdapter(nn.Module):
    """Wraps a frozen 1x1 ``Conv2d`` and adds a 1x1 bottleneck in parallel."""

    def __init__(self, base: nn.Conv2d, cfg: ICAConfig) -> None:
        super().__init__()
        self.base = base
        self.ica_branch = Bottleneck(base.in_channels, base.out_channels, cfg.rank, cfg.act, cfg.scale,
                                     cfg.learnable_scale, conv=True, stride=base.stride, alpha=cfg.alpha)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.ica_branch(x) if self.enabled else out

    def merged(self) -> nn.Conv2d:
        w0 = self.base.weight
        conv = nn.Conv2d(self.base.in_channels, self.base.out_channels, 1, stride=self.base.stride,
                         bias=self.base.bias is not None, device=w0.device, dtype=w0.dtype)
        conv.weight.data.copy_(self.base.weight.detach() + self.ica_branch.delta_weight().detach()[:, :, None, None])
        if self.base.bias is not None:
            conv.bias.data.copy_(self.base.bias.detach())
        return conv


def select_stages(n: int, spec: str) -> list[int]:
    """``"all"`` or a slice such as ``"-2:"`` / ``"4:7"`` or a list ``"0,3,5"`` -> indices of ``n`` stages.

    The syntax is :func:`dva.ica_names.parse_blocks` (ValueError for text of no form); indices
    outside the ``n`` stages of this backbone are refused here, where ``n`` is known.
    """
    idx = parse_blocks(spec)
    if idx is None:
        return list(range(n))
    if isinstance(idx, slice):
        return list(range(n))[idx]
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise ValueError(f"ica.blocks: indices {bad} out of range for {n} blocks/stages")
    return sorted({i % n for i in idx})


def _cnn_kind(name: str, m: nn.Module) -> str | None:
    if not isinstance(m, nn.Conv2d) or m.kernel_size != (1, 1) or m.groups != 1:
        return None
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("conv_pw", "conv1"):
        return "pw"
    if leaf in ("conv_pwl", "conv3"):
        return "pwl"
    return None


def apply_ica(model: nn.Module, cfg: ICAConfig) -> list[str]:
    """Insert adapters into a frozen timm backbone in place; returns the adapted module names."""
    fam = bb.family(model)
    target, blocks = resolve(cfg, fam, isinstance(getattr(model, "conv_head", None), nn.Conv2d))
    targets = set(target.split("+"))
    n_stages = len(bb.stages(model))
    chosen = select_stages(n_stages, blocks)
    adapted: list[str] = []
    if fam == "vit":
        # The names are checked by the config (dva.ica_names.check_target); which family they
        # belong to is known only now that the backbone is built.
        if not targets <= set(VIT_TARGETS):
            raise ValueError(f"ica.target {target!r} is not valid for a ViT: use {' | '.join(VIT_TARGETS)}")
        parts = "".join(p for p in "qkv" if any(p in t for t in targets))
        for i in chosen:
            attn = model.blocks[i].attn
            attn.qkv = QKVAdapter(attn.qkv, cfg, parts)
            adapted.append(f"blocks.{i}.attn.qkv")
    else:
        if not targets <= set(CNN_TARGETS):
            raise ValueError(f"ica.target {target!r} is not valid for a CNN: "
                             f"use {', '.join(CNN_TARGETS)} joined by '+'")
        stage_mods = bb.stages(model)
        stage_prefix = "blocks" if hasattr(model, "blocks") else "layer"
        for i in chosen:
            for name, m in list(stage_mods[i].named_modules()):
                kind = _cnn_kind(name, m)
                if kind in targets:
                    parent = stage_mods[i].get_submodule(name.rsplit(".", 1)[0]) if "." in name else stage_mods[i]
                    setattr(parent, name.rsplit(".", 1)[-1], ConvAdapter(m, cfg))
                    full = f"blocks.{i}.{name}" if stage_prefix == "blocks" else f"layer{i + 1}.{name}"
                    adapted.append(full)
        if "head" in targets:
            if not isinstance(getattr(model, "conv_head", None), nn.Conv2d):
                raise ValueError("ica.target 'head' needs a backbone with a 1x1 conv_head (MobileNet/EfficientNet)")
            model.conv_head = ConvAdapter(model.conv_head, cfg)
            adapted.append("conv_head")
    if not adapted:
        raise ValueError(f"ica: no layer matched target {target!r} in blocks {blocks!r}")
    return adapted


def first_adapted_stage(model: nn.Module) -> int:
    """Index of the lowest stage holding an adapter (``len(stages)`` if only the head has one)."""
    for i, st in enumerate(bb.stages(model)):
        if any(isinstance(m, (QKVAdapter, ConvAdapter)) for m in st.modules()):
            return i
    return len(bb.stages(model))


def ica_modules(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if isinstance(m, (QKVAdapter, ConvAdapter)))


def ica_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in ica_modules(model) for n, p in m.named_parameters() if n.startswith("ica_")]


def branches_of(module: nn.Module) -> list[Bottleneck]:
    """The bottleneck branches of one adapted layer (Q and K of a ViT block; one of a conv)."""
    return list(module.ica_branches.values()) if isinstance(module, QKVAdapter) else [module.ica_branch]


def _bottlenecks(model: nn.Module) -> list[Bottleneck]:
    return [b for m in ica_modules(model) for b in branches_of(m)]


def set_ica_scale(model: nn.Module, alpha: float) -> int:
    """Multiply every adapter branch of ``model`` by ``alpha`` (replacing the previous alpha).

    0 = the frozen backbone exactly, 1 = the trained adapters; values outside [0, 1]
    extrapolate. Returns how many branches were set.

    Raises:
        ValueError: ``alpha`` is not a finite number, or ``model`` has no adapters.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"ica scale must be a finite number, got {alpha!r}")
    branches = _bottlenecks(model)
    if not branches:
        raise ValueError("an ICA scale needs a model with adapters (train.trainable=ica); a full or head "
                         "fine-tune is moved toward the frozen weights with `dva interpolate` instead")
    for b in branches:
        b.alpha = alpha
    return len(branches)


def ica_scale(model: nn.Module) -> float | None:
    """The common ``alpha`` of ``model``'s adapter branches (None without adapters)."""
    alphas = {b.alpha for b in _bottlenecks(model)}
    if len(alphas) > 1:
        raise ValueError(f"adapter branches carry different ICA scales {sorted(alphas)}; set one with set_ica_scale")
    return alphas.pop() if alphas else None


@contextlib.contextmanager
def ica_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily run the plain frozen backbone (for baselines and activation-map comparisons)."""
    mods = list(ica_modules(model))
    states = [m.enabled for m in mods]
    for m in mods:
        m.enabled = False
    try:
        yield
    finally:
        for m, s in zip(mods, states):
            m.enabled = s


def merge_ica(model: nn.Module) -> int:
    """Fold identity-activation adapters into the frozen weights in place; returns how many."""
    count = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, (QKVAdapter, ConvAdapter)):
            if any(b.act_name != "identity" for b in branches_of(m)):
                raise ValueError(f"{name}: only ica.act=identity adapters can be merged (a non-linear branch cannot)")
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            new = m.merged()
            new.requires_grad_(False)
            setattr(parent, name.rsplit(".", 1)[-1], new)
            count += 1
    return count
