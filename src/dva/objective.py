"""The DVA training objective (docs/METHOD.md, Objective), as a module so DDP sees every trainable use.

``L = Lp(e_x) + w_disc Lp(e_disc) + w_bg Lp(e_bg) + w_con Lcon(e_x) + beta L_DPT(e_x <- e_disc)
+ w_anchor (1 - cos(e_x, sg(e_x of the frozen backbone)))``

All three views are pulled to their class proxy; the background term only for samples with a
confident object box (``keep``). Masked terms are divided by the batch size, not by the number of
kept samples, so that averaging the gradients of equal-size DDP shards equals the gradient of the
global batch exactly — except for the optional contrastive term (``w_con > 0``, off by default),
whose pairs are formed within each rank's shard.
"""
from __future__ import annotations

import torch
from torch import nn

from dva.config import LossConfig
from dva.dpt import dpt_loss
from dva.ica import ica_disabled, ica_modules
from dva.losses import contrastive_margin, proxy_nca_pp
from dva.model import DVAModel


class DVAObjective(nn.Module):
    """Embeds the views of a batch (once, concatenated) and returns the weighted losses."""

    def __init__(self, model: DVAModel, cfg: LossConfig, use_views: bool) -> None:
        super().__init__()
        if cfg.w_anchor > 0 and next(iter(ica_modules(model.encoder)), None) is None:
            raise ValueError("loss.w_anchor > 0 holds the adapted embedding near the frozen one and needs adapters "
                             "(train.trainable=ica); this model has none: set loss.w_anchor 0")
        self.model, self.cfg, self.use_views = model, cfg, use_views

    def forward(self, x: torch.Tensor, disc: torch.Tensor | None, bg: torch.Tensor | None,
                keep: torch.Tensor, labels: torch.Tensor, from_prefix: bool = False) -> dict[str, torch.Tensor]:
        c, m = self.cfg, self.model
        embed = m.embed_from_prefix if from_prefix else m.forward
        views = [x]
        if self.use_views and disc is not None:
            views.append(disc)
            if c.w_bg > 0 and bg is not None:
                views.append(bg)
        # One pass over all views: the frozen BatchNorms are in eval mode, so batching the views
        # together changes nothing but speed.
        e = embed(torch.cat(views)).float().split(len(x))
        P = m.proxies
        out = {"proxy": proxy_nca_pp(e[0], labels, P, c.proxy_scale, c.proxy_temperature)}
        total = out["proxy"]
        if len(e) > 1:
            out["disc"] = proxy_nca_pp(e[1], labels, P, c.proxy_scale, c.proxy_temperature)
            out["dpt"] = dpt_loss(e[0], e[1], P, c.tau, c.proxy_scale, c.dpt_cos)
            total = total + c.w_disc * out["disc"] + c.beta * out["dpt"]
        if len(e) > 2:
            per = proxy_nca_pp(e[2], labels, P, c.proxy_scale, c.proxy_temperature, reduction="none")
            out["bg"] = (per * keep).sum() / len(x)
            total = total + c.w_bg * out["bg"]
        if c.w_con > 0:
            out["con"] = contrastive_margin(e[0], labels, c.con_margin)
            total = total + c.w_con * out["con"]
        if c.w_anchor > 0:
            # The frozen model's embedding of the same images: the adapters switched off, no gradient
            # (from the cached prefix only the adapted suffix runs again). Zero-initialised adapters
            # start at e_x = frozen, so the term is 0 at step 0 and grows only as they move away:
            # a pull toward what pre-training knew, against the fine-grained losses above.
            with torch.no_grad(), ica_disabled(m.encoder):
                frozen = embed(x).float()
            out["anchor"] = (1.0 - nn.functional.cosine_similarity(e[0], frozen, dim=-1)).mean()
            total = total + c.w_anchor * out["anchor"]
        out["loss"] = total
        return out
