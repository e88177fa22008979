"""Train DVA: one function, :func:`train`, run directly or under ``torchrun`` (DDP).

Flow: read the split -> build the frozen backbone + ICA + proxies -> OPA boxes (cached) ->
data (frozen-prefix cache, or images with online augmentation) -> proxies initialised at the
frozen class means -> epochs of class-balanced batches through :class:`dva.objective.DVAObjective`
-> evaluation (Recall@K, MAP@R) -> adapter checkpoints (safetensors), resumable.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from dva.checkpoint import load_into, save_checkpoint
from dva.config import DVAConfig, save_config
from dva.ica import ica_disabled
from dva.model import DVAModel, build_model, count_parameters
from dva.objective import DVAObjective
from dva.opa import min_score
from dva.transforms import eval_transform, train_transform, view_transform
from dva.utils import atomic_write_json, seed_everything
from dva_train.boxes import compute_boxes
from dva_train.distributed import DistInfo, barrier, cleanup, gather_rows, init_distributed
from dva_train.prefix_cache import PrefixCache, build_prefix_cache, cache_keys
from dva_train.sampler import epoch_batches, rank_slice
from dva_train.views import ViewDataset, mean_colour


# Called with the step number after every optimisation step (tests use it to simulate a crash).
_STEP_HOOK = None


@dataclass
class TrainData:
    """What training and evaluation read: paths, contiguous labels, annotated boxes."""

    train_paths: list[str]
    train_labels: np.ndarray
    eval_paths: list[str]
    eval_labels: np.ndarray
    annotated: dict[str, tuple]
    num_classes: int
    eval_name: str  # "test" or "val"


def prepare_data(cfg: DVAConfig) -> TrainData:
    """Read the dataset split; optionally carve a validation split out of the training classes."""
    from dva.data import load_split

    split = load_split(cfg.data.dataset, cfg.data.root, cfg.data.protocol)
    train, evals, name = split.train, split.test, "test"
    classes = sorted({r.label for r in train})
    if cfg.data.val_classes:
        if cfg.data.val_classes >= len(classes):
            raise ValueError(f"data.val_classes={cfg.data.val_classes} leaves no training class of {len(classes)}")
        val = set(classes[-cfg.data.val_classes:])  # the last training classes: never the test ones
        evals = [r for r in train if r.label in val]
        train = [r for r in train if r.label not in val]
        classes = [c for c in classes if c not in val]
        name = "val"
    remap = {c: i for i, c in enumerate(classes)}
    return TrainData(
        train_paths=[r.path for r in train],
        train_labels=np.array([remap[r.label] for r in train]),
        eval_paths=[r.path for r in evals],
        eval_labels=np.array([r.label for r in evals]),
        annotated={r.path: r.box for r in train if r.box is not None},
        num_classes=len(classes),
        eval_name=name,
    )


def use_prefix_cache(cfg: DVAConfig, model: DVAModel) -> bool:
    """``auto``: cache when there is a frozen prefix worth caching (adapters not in stage 0)."""
    mode = cfg.train.cache_prefix
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"train.cache_prefix must be auto | on | off, got {mode!r}")
    if mode == "auto":
        return model.split > 0
    if mode == "on" and cfg.train.trainable == "full":
        raise ValueError("train.cache_prefix=on cannot train the full backbone (the cached stem would stay frozen): "
                         "use train.cache_prefix=off or auto")
    return mode == "on"


@torch.no_grad()
def embed_eval(model: DVAModel, paths: list[str], cache: PrefixCache | None, info: DistInfo, cfg: DVAConfig,
               adapted: bool = True, progress: bool = False) -> np.ndarray | None:
    """L2-normalised embeddings of the evaluation images, gathered on rank 0 (None elsewhere)."""
    model.eval()
    idx = np.arange(info.rank, len(paths), info.world)  # disjoint strided shards: no duplicates
    bs = cfg.train.batch_size_eval
    rows: list[torch.Tensor] = []
    ctx = ica_disabled(model.encoder) if not adapted else contextlib.nullcontext()
    with ctx:
        if cache is not None:
            for s in range(0, len(idx), bs):
                h = cache.tensors["x"][torch.as_tensor(idx[s:s + bs]), 0].to(info.device).float()
                rows.append(model.embed_from_prefix(h, normalize=True, adapted=adapted).float().cpu())
        else:
            from dva.inference import _Paths

            ds = Subset(_Paths(paths, eval_transform(cfg.backbone.img_size, model.data_cfg)), idx.tolist())
            for x in tqdm(DataLoader(ds, batch_size=bs, num_workers=cfg.train.num_workers), desc="eval",
                          disable=not progress):
                rows.append(model.embed(x.to(info.device), adapted=adapted).float().cpu())
    emb = torch.cat(rows).numpy() if rows else np.zeros((0, model.dim), np.float32)
    return gather_rows(info, idx, emb, len(paths))


def evaluate(model: DVAModel, data: TrainData, cache: PrefixCache | None, info: DistInfo, cfg: DVAConfig,
             adapted: bool = True) -> dict[str, float] | None:
    from dva.metrics import retrieval_metrics

    emb = embed_eval(model, data.eval_paths, cache, info, cfg, adapted)
    if emb is None:
        return None
    return retrieval_metrics(emb, data.eval_labels)


def _cached(model, ds, names, paths, flips, extra, cfg, info, what, progress) -> PrefixCache:
    """Load the prefix cache from ``train.cache_dir`` when present, else build (and store) it."""
    labels = {"labels": hashlib.sha256(np.asarray(ds.labels).tobytes()).hexdigest()}
    keys = cache_keys(model, names, paths, flips, extra, labels)
    folder = cfg.train.cache_dir
    if folder:
        hit = PrefixCache.load(folder, keys)
        if hit is not None:
            return hit
    cache = build_prefix_cache(model, ds, names, cfg.train.batch_size_eval, info.device, cfg.train.num_workers,
                               f"cache {what}", progress)
    if folder and info.main:
        cache.save(folder, keys)
    return cache


class RunLog:
    """``log.jsonl`` (one JSON object per line) plus a console line; rank 0 only."""

    def __init__(self, path: Path, enabled: bool, quiet: bool = False) -> None:
        self.path, self.enabled, self.quiet = path, enabled, quiet

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if not self.quiet:
            keys = [k for k in row if k not in ("kind",)]
            tqdm.write(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys))


def _lr_lambda(total: int, warmup: int, adapters: bool):
    def f(step: int) -> float:
        if adapters and step < warmup:
            return 0.0  # proxy-only warm-up
        t = (step - (warmup if adapters else 0)) / max(1, total - (warmup if adapters else 0))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))
    return f


def train(cfg: DVAConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one run in ``cfg.output_dir``; returns a summary with final metrics."""
    info = init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, resume, progress and info.main)
    finally:
        cleanup(info)


def _train(cfg: DVAConfig, info: DistInfo, resume: bool, progress: bool) -> dict[str, Any]:
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    out = Path(cfg.output_dir)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier(info)
    log = RunLog(out / "log.jsonl", info.main, quiet=not progress)
    data = prepare_data(cfg)
    model = build_model(cfg, data.num_classes).to(info.device)
    params = count_parameters(model)
    cached = use_prefix_cache(cfg, model)
    views_on = cfg.opa.enabled and cfg.opa.box_source != "none"

    # OPA boxes: rank 0 computes (or reads the cache), the others then read its file.
    t0 = time.time()
    boxes_path = out / "boxes.json"
    if info.main:
        boxes = compute_boxes(model, data.train_paths, cfg, boxes_path, data.annotated, info.device, progress)
    barrier(info)
    if not info.main:
        boxes = compute_boxes(model, data.train_paths, cfg, boxes_path, data.annotated, info.device, False)
    fill = mean_colour(data.train_paths)
    thr = min_score(cfg.opa.box_source, cfg.opa.min_score)
    n_box = sum(1 for p in data.train_paths if p in boxes and boxes[p][1] >= thr)
    x_tf = eval_transform(cfg.backbone.img_size, model.data_cfg)
    v_tf = view_transform(cfg.backbone.img_size, model.data_cfg)

    # Data: frozen-prefix cache, or images with online augmentation.
    eval_cache = None
    if cached:
        names = ("x", "disc", "bg") if views_on else ("x",)
        flips = 2 if tc.cache_flips else 1
        ds = ViewDataset(data.train_paths, data.train_labels.tolist(), boxes, cfg.opa, fill, x_tf, v_tf, flips)
        eds = ViewDataset(data.eval_paths, data.eval_labels.tolist(), {}, cfg.opa, fill, x_tf, v_tf, 1)
        extra = {"boxes": sorted((p, boxes.get(p)) for p in data.train_paths), "fill": fill,
                 "opa": [cfg.opa.box_source, cfg.opa.expand, cfg.opa.aspect, cfg.opa.min_score, cfg.opa.background]}
        train_cache = _cached(model, ds, names, data.train_paths, flips, extra, cfg, info, "train", progress)
        eval_cache = _cached(model, eds, ("x",), data.eval_paths, 1, {}, cfg, info, data.eval_name, progress)
    else:
        a_tf = train_transform(cfg.backbone.img_size, model.data_cfg, tc.augment)
        ds = ViewDataset(data.train_paths, data.train_labels.tolist(), boxes, cfg.opa, fill, a_tf,
                         train_transform(cfg.backbone.img_size, model.data_cfg, "flip" if tc.augment != "none" else "none"))
    prep_s = time.time() - t0

    # Proxies start at the frozen class means (adapters are zero: the model IS the frozen one).
    if tc.proxy_init == "mean":
        with torch.no_grad():
            if cached:
                e = torch.cat([model.embed_from_prefix(train_cache.tensors["x"][s:s + 256, 0].to(info.device).float(), True)
                               for s in range(0, len(train_cache), 256)])
            else:
                e = torch.as_tensor(embed_eval(model, data.train_paths, None, DistInfo(device=info.device), cfg))
            lab = torch.as_tensor(data.train_labels, device=e.device)
            means = torch.zeros(data.num_classes, model.dim, device=e.device).index_add_(0, lab, e.to(info.device))
            model.proxies.data.copy_(F.normalize(means, dim=-1))
    elif tc.proxy_init != "randn":
        raise ValueError(f"train.proxy_init must be mean | randn, got {tc.proxy_init!r}")

    objective = DVAObjective(model, cfg.loss, views_on)
    ddp = objective
    if info.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[info.local_rank] if info.device.type == "cuda" else None, broadcast_buffers=False)
    steps_per_epoch = max(1, len(data.train_labels) // (tc.classes_per_batch * tc.images_per_class))
    total = tc.max_steps or steps_per_epoch * tc.epochs
    warm = int(tc.warmup_epochs * steps_per_epoch)
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and n != "proxies"], "lr": tc.lr,
         "weight_decay": tc.weight_decay},
        {"params": [model.proxies], "lr": tc.proxy_lr, "weight_decay": 0.0},
    ], eps=tc.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [_lr_lambda(total, warm, True), _lr_lambda(total, warm, False)])
    step, start_epoch, skip = 0, 0, 0
    best = -1.0  # best validation MAP@R so far (val_classes > 0)
    scaler = torch.amp.GradScaler(enabled=tc.amp and info.device.type == "cuda")
    state_path, last_path = out / "train_state.pt", out / "last.safetensors"
    if resume and state_path.is_file() and last_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)  # tensors and numbers only
        load_into(model, last_path)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, start_epoch, skip = int(st["step"]), int(st["epoch"]), int(st["batch_in_epoch"])
        best = float(st.get("best", -1.0))
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        log.write(kind="resume", step=step, epoch=start_epoch)

    def save(epoch: int, batch_in_epoch: int, metrics: dict | None = None) -> None:
        if not info.main:
            return
        save_checkpoint(last_path, model, {"step": step, "epoch": epoch, "metrics": metrics or {}})
        buf = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "epoch": epoch,
               "batch_in_epoch": batch_in_epoch, "best": best, "scaler": scaler.state_dict()}
        tmp = state_path.with_suffix(".tmp")
        torch.save(buf, tmp)
        tmp.replace(state_path)

    frozen, frozen_done, evaluated = None, False, False
    if step == 0:
        log.write(kind="setup", **{k: v for k, v in params.items()}, prefix_cache=cached, boxes=n_box,
                  train_images=len(data.train_labels), eval_images=len(data.eval_paths), prep_seconds=prep_s)
        if tc.eval_frozen:  # the zero-shot baseline, same images, same pipeline, adapters off
            frozen = evaluate(model, data, eval_cache, info, cfg, adapted=False)
            frozen_done = True
            if info.main:
                log.write(kind="eval", split=data.eval_name, epoch=0, step=0, frozen=True, **frozen)
    amp_dtype = torch.bfloat16 if info.device.type == "cpu" else torch.float16
    metrics: dict | None = None
    train_s = 0.0
    n_img = 0
    for epoch in range(start_epoch, tc.epochs):
        if step >= total:
            break
        model.train()
        batches = epoch_batches(data.train_labels, tc.classes_per_batch, tc.images_per_class, tc.seed, epoch)
        bar = tqdm(total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not progress)
        t_ep, agg, n_agg = time.time(), {}, 0
        if not cached:
            local = [rank_slice(b, info.rank, info.world).tolist() for b in batches[skip:]]
            loader = iter(DataLoader(ds, batch_sampler=local, num_workers=tc.num_workers))
        for bi in range(skip, len(batches)):
            if step >= total:
                break
            idx = rank_slice(batches[bi], info.rank, info.world)
            ts = time.time()
            if cached:
                # Mirrors drawn for the global batch, then sliced: any world size sees the same data.
                flips = np.random.default_rng([tc.seed, epoch, bi]).integers(0, train_cache.flips, len(batches[bi]))
                b = train_cache.batch(idx, rank_slice(flips, info.rank, info.world), info.device)
                x, disc, bg = b["x"], b.get("disc"), b.get("bg")
                keep, labels = b["keep"], b["labels"]
            else:
                x, disc, bg, keep, labels, _ = (t.to(info.device) for t in next(loader))
                keep = keep.float()
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=tc.amp):
                losses = ddp(x, disc, bg, keep, labels, from_prefix=cached)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(list(model.trainable_parameters()), tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            train_s += time.time() - ts
            n_img += len(idx) * info.world
            for k, v in losses.items():
                agg[k] = agg.get(k, 0.0) + float(v.detach())
            n_agg += 1
            bar.update(1)
            if step % tc.log_every == 0 or bi == len(batches) - 1:
                log.write(kind="train", epoch=epoch + 1, step=step, **{("loss" if k == "loss" else f"loss_{k}"): v / n_agg
                          for k, v in agg.items()}, grad_norm=float(gnorm), lr=opt.param_groups[0]["lr"],
                          seconds=round(time.time() - t_ep, 3), img_per_s=n_img / max(train_s, 1e-9))
                agg, n_agg = {}, 0
            if tc.save_every and step % tc.save_every == 0:
                save(epoch, bi + 1)
            if _STEP_HOOK is not None:
                _STEP_HOOK(step)
        bar.close()
        skip = 0
        last_epoch = epoch + 1 == tc.epochs or step >= total
        if (tc.eval_every and (epoch + 1) % tc.eval_every == 0) or last_epoch:
            metrics = evaluate(model, data, eval_cache, info, cfg)
            evaluated = True
            if info.main:
                log.write(kind="eval", split=data.eval_name, epoch=epoch + 1, step=step, **metrics)
                if data.eval_name == "val" and metrics["map@r"] > best:
                    best = metrics["map@r"]
                    save_checkpoint(out / "best.safetensors", model, {"step": step, "epoch": epoch + 1, "metrics": metrics})
        save(epoch + 1, 0, metrics)
    # A resumed run that had already finished still reports its numbers.
    # (Decided by flags, not by None: non-zero DDP ranks always hold None and must not evaluate alone.)
    if not evaluated:
        metrics = evaluate(model, data, eval_cache, info, cfg)
    if not frozen_done and tc.eval_frozen:
        frozen = evaluate(model, data, eval_cache, info, cfg, adapted=False)
    summary = {"metrics": metrics, "frozen_metrics": frozen, "params": params, "train_seconds": train_s, "prep_seconds": prep_s,
               "train_img_per_s": n_img / max(train_s, 1e-9), "steps": step, "prefix_cache": cached,
               "boxes": n_box, "checkpoint": str(last_path), "eval_split": data.eval_name}
    if info.main:
        atomic_write_json(out / "summary.json", summary)
    return summary
