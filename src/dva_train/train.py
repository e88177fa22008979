"""Train DVA: one function, :func:`train`, run directly or under ``torchrun`` (DDP).

Stages of :func:`_train` (docs/METHOD.md, "One image through the code"):

1. setup — seed, run folder, the split (:mod:`dva_train.data`), frozen backbone + ICA + proxies;
2. boxes — one OPA box per training image (:func:`dva.opa.sources.compute_boxes`, cached);
3. data — a :class:`~dva_train.data.BatchSource`: frozen-prefix cache, or images with online
   augmentation; it gives every step a :class:`~dva_train.data.Batch`;
4. proxies — initialised at the frozen class means;
5. optimiser, or resume (:mod:`dva_train.state`);
6. loop — epochs of class-balanced batches through :class:`dva.objective.DVAObjective`, with
   evaluation (Recall@K, MAP@R), ``best.safetensors``, resumable checkpoints and the collapse
   guard (:mod:`dva_train.guard`: a finding stops the run unless ``train.on_collapse=warn``);
7. final evaluation and ``summary.json`` (which checkpoint is which, frozen vs trained).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dva.config import DVAConfig, save_config, validate
from dva.model import DVAModel, build_model, count_parameters
from dva.objective import DVAObjective
from dva.opa.geometry import Boxes
from dva.opa.sources import compute_boxes, min_score
from dva.runtime.frozen import FrozenRunner, frozen_runner
from dva.utils import atomic_write_json, seed_everything
from dva.checkpoint import load_into
from dva_train.budget import Budget, eval_period, resolve_budget
from dva_train.data import (Batch, BatchSource, TrainData, build_batches, embed_paths, opa_views, prepare_data,
                            use_prefix_cache)
from dva_train.distributed import DistInfo, any_rank, barrier, cleanup, init_distributed
from dva_train.guard import Finding, Guard, lr_fix, lr_warning, mean_pairwise_cosine
from dva_train.runlog import RunLog
from dva_train.sampler import epoch_batches
from dva_train.state import (
    BEST_FILE,
    LAST_FILE,
    SUMMARY_FILE,
    Position,
    TrainState,
    check_resume_batch,
    check_resume_config,
    check_run_folder,
    clear_results,
    read_state,
)

__all__ = ["RunLog", "StepCallback", "TrainData", "prepare_data", "train"]

# Called with the number of optimisation steps done, after each step (on every rank).
StepCallback = Callable[[int], None]


def train(cfg: DVAConfig, resume: bool = False, progress: bool = True, allow_config_changes: bool = False,
          overwrite: bool = False, on_step: StepCallback | None = None, echo: bool | None = None) -> dict[str, Any]:
    """Train (or resume) one run in ``cfg.output_dir``; returns a summary with final metrics.

    Args:
        cfg: the run (checked with :func:`dva.config.validate` first: it may have been built or
            changed in code).
        resume: continue from ``train_state.pt`` when the run folder has one.
        progress: progress bars (rank 0).
        allow_config_changes: resume even if the config differs from the saved one (the
            differences are logged); otherwise such a resume raises ValueError.
        overwrite: train from scratch in a folder holding another run's results (deleted once
            the split and the model are ready; ``log.jsonl`` keeps the old rows under their run
            id). Without it, and without ``resume``, such a folder is refused before anything is
            written (:func:`dva_train.state.check_run_folder`).
        on_step: called with the step number after every optimisation step, after that step's
            log row and checkpoint: progress reporting, or an interruption at a chosen step (an
            exception it raises ends the run there, as a crash would).
        echo: print each log row on the console too (rank 0; default: as ``progress``). ``log.jsonl``
            holds them either way.
    """
    cfg.train.apply_trainable_defaults()  # a train.trainable set after the config was read
    validate(cfg, "train config")
    if cfg.ica.alpha != 1.0:  # a query-time dial (docs/METHOD.md, Between frozen and trained), not a training setting
        raise ValueError(f"ica.alpha={cfg.ica.alpha:g} scales trained adapters at load time (dva eval/embed/export "
                         "--ica-scale, dva interpolate); training runs at ica.alpha=1")
    check_run_folder(cfg.output_dir, resume, overwrite)  # before any process group, file or model
    info = init_distributed(cfg.train.device)
    threads = torch.get_num_threads()  # train.threads is this run's: the caller's setting comes back
    try:
        echo = progress if echo is None else echo
        return _train(cfg, info, _Options(resume, progress and info.main, allow_config_changes, overwrite, on_step,
                                          echo and info.main))
    finally:
        torch.set_num_threads(threads)
        cleanup(info)


@dataclass(frozen=True)
class _Options:
    """How :func:`train` was called."""

    resume: bool
    progress: bool
    allow_changes: bool
    overwrite: bool
    on_step: StepCallback | None
    echo: bool


@dataclass
class _Run:
    """What every stage reads."""

    cfg: DVAConfig
    info: DistInfo
    out: Path
    log: RunLog
    data: TrainData
    model: DVAModel
    progress: bool
    frozen: FrozenRunner  # runs the frozen network for the boxes and prefix caches (dva.runtime.frozen)
    on_step: StepCallback | None = None


def _train(cfg: DVAConfig, info: DistInfo, opts: _Options) -> dict[str, Any]:
    saved = read_state(Path(cfg.output_dir)) if opts.resume else None
    # Checked first: a refused resume fails at once and leaves the run folder (config.yaml) as it was.
    changes = check_resume_config(saved, cfg, opts.allow_changes) if saved is not None else {}
    data = prepare_data(cfg, info.world)  # the split checked and the batch fitted, before anything is written
    if saved is not None:  # the fitted batch too: another process count can change it
        changes.update(check_resume_batch(saved, data.batch, Path(cfg.output_dir), opts.allow_changes))
    run = _setup(cfg, info, opts, data, str((saved or {}).get("run_id", "")))
    t0 = time.time()
    boxes, x_prefix = _boxes(run)
    source = build_batches(cfg, run.model, run.data, boxes, info, run.progress, run.frozen, x_prefix)
    prep_s = time.time() - t0
    _init_proxies(run, source)
    trainer = _Trainer(run, source)
    if saved is not None:
        notes = trainer.state.restore(saved, run.out)
        trainer.resumed()
        run.log.write(kind="resume", step=trainer.pos.step, epoch=trainer.pos.epoch, **notes,
                      **({"changes": changes} if changes else {}))
    del saved
    n_box, box_row = _box_report(run, boxes)
    fresh = trainer.pos.step == 0
    if fresh:
        trainer.start(n_box, prep_s)
    run.log.write(**box_row)
    if fresh:
        trainer.baseline()
    run.frozen.close()  # its onnxruntime threads must not compete with the training steps
    trainer.fit()
    return trainer.finish(n_box, prep_s)


def _setup(cfg: DVAConfig, info: DistInfo, opts: _Options, data: TrainData, run_id: str = "") -> _Run:
    """Threads, seed, run folder and config, log (with the split's notes), the model; then, with
    ``--overwrite``, the previous run's results are deleted (not before: a run refused by these
    checks leaves them as they were)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    out = Path(cfg.output_dir)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier(info)
    log = RunLog(out / "log.jsonl", info.main, quiet=not opts.echo, run_id=run_id)
    if data.val_note:
        log.alert(data.val_note, kind="validation")
    for note in data.notes:
        log.alert(note, kind="warning")
    model = build_model(cfg, data.num_classes).to(info.device)
    if opts.overwrite and info.main:
        cleared = clear_results(out)
        if cleared:
            log.write(kind="overwrite", removed=cleared,
                      note=f"--overwrite: deleted the previous run's {', '.join(cleared)}; training from scratch")
    return _Run(cfg, info, out, log, data, model, opts.progress,
                frozen_runner(model, info.device, cfg.train.frozen_runtime), opts.on_step)


def _boxes(run: _Run) -> tuple[Boxes, torch.Tensor | None]:
    """OPA boxes: rank 0 computes them (or reads the cache), the other ranks then read its file.

    With ``opa.loc_view=view`` and the x view cached as it is, the pass that finds the boxes also
    returns the x view's prefixes (one frozen pass for both; None when the boxes came from a cache).
    """
    d, info, cfg = run.data, run.info, run.cfg
    path = run.out / "boxes.json"
    share = (cfg.opa.loc_view == "view" and cfg.opa.box_source == "self" and opa_views(cfg)
             and use_prefix_cache(cfg, run.model) and not cfg.train.cache_flips)
    sink: list | None = [] if share and info.main else None
    if info.main:
        boxes = compute_boxes(run.model, d.train_paths, cfg, path, d.annotated, info.device, run.progress,
                              run.frozen, sink)
    barrier(info)
    if not info.main:
        boxes = compute_boxes(run.model, d.train_paths, cfg, path, d.annotated, info.device, False)
    return boxes, (torch.cat(sink) if sink else None)


def _box_report(run: _Run, boxes: Boxes) -> tuple[int, dict[str, Any]]:
    """How many training images got a confident box, and a log row saying what happens to the others."""
    o, paths = run.cfg.opa, run.data.train_paths
    if not opa_views(run.cfg):
        return 0, {"kind": "boxes", "confident": 0,
                   "note": "OPA off (opa.enabled=false or opa.box_source=none): no object or background views"}
    thr = min_score(o.box_source, o.min_score)
    scores = [boxes[p][1] for p in paths if p in boxes]
    n_ok = sum(1 for s in scores if s >= thr)
    n_low, n_none = len(scores) - n_ok, len(paths) - len(scores)
    why = f"opa.min_score={o.min_score:g}" if o.min_score >= 0 else \
        f"the default for opa.box_source={o.box_source}; opa.min_score=-1"
    none = f" and {n_none} got no box" if n_none else ""
    note = (f"boxes {n_ok} of {len(paths)}: {n_ok} training images got a confident {o.box_source} box "
            f"(score >= {thr:g}, {why}); {n_low} scored below it{none}: for those x_disc = x and no background term")
    return n_ok, {"kind": "boxes", "source": o.box_source, "threshold": thr, "confident": n_ok, "below": n_low,
                  "missing": n_none, "train_images": len(paths), "note": note}


def _init_proxies(run: _Run, source: BatchSource) -> None:
    """Proxies at the frozen class means (adapters are zero: the model IS the frozen one), for
    ``train.proxy_init=mean``; ``randn`` keeps the random ones :class:`~dva.model.DVAModel` made."""
    model = run.model
    if run.cfg.train.proxy_init == "mean":
        with torch.no_grad():
            e = source.embed_train(model, adapted=False).to(run.info.device)
            lab = torch.as_tensor(run.data.train_labels, device=e.device)
            means = torch.zeros(run.data.num_classes, model.dim, device=e.device).index_add_(0, lab, e)
            model.proxies.data.copy_(F.normalize(means, dim=-1))


def _lr_lambda(total: int, warmup: int, adapters: bool) -> Callable[[int], float]:
    def f(step: int) -> float:
        if adapters and step < warmup:
            return 0.0  # proxy-only warm-up
        t = (step - (warmup if adapters else 0)) / max(1, total - (warmup if adapters else 0))
        return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))
    return f


class _Stop(Exception):
    """Raised in the loop when the collapse guard ends the run (``train.on_collapse=stop``)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message())
        self.finding = finding


def _optimizer(run: _Run) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Budget]:
    """AdamW (trained weights, proxies), its cosine schedule, and the step budget (:func:`resolve_budget`)."""
    tc, model = run.cfg.train, run.model
    budget = resolve_budget(tc, len(run.data.train_labels), run.data.batch.size)
    total, steps_per_epoch = budget.schedule, budget.steps_per_epoch
    warm = int(tc.warmup_epochs * steps_per_epoch)
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and n != "proxies"], "lr": tc.lr,
         "weight_decay": tc.weight_decay},
        {"params": [model.proxies], "lr": tc.proxy_lr, "weight_decay": 0.0},
    ], eps=tc.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [_lr_lambda(total, warm, True), _lr_lambda(total, warm, False)])
    return opt, sched, budget


class _Trainer:
    """The objective, optimiser and position of a run, the loop over epochs, and its guard."""

    def __init__(self, run: _Run, source: BatchSource) -> None:
        self.run, self.source = run, source
        tc, model, info = run.cfg.train, run.model, run.info
        self.objective = DVAObjective(model, run.cfg.loss, opa_views(run.cfg))
        self.ddp: torch.nn.Module = self.objective
        if info.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[info.local_rank] if info.device.type == "cuda" else None,
                broadcast_buffers=False)
        opt, sched, self.budget = _optimizer(run)
        self.total = self.budget.steps
        self.eval_every, self.eval_note = eval_period(tc.eval_every, self.budget)
        scaler = torch.amp.GradScaler(enabled=tc.amp and info.device.type == "cuda")
        self.state = TrainState(model, opt, sched, scaler, batch=tuple(run.data.batch))
        self.state.pos.run_id = run.log.run_id
        self.amp_dtype = torch.bfloat16 if info.device.type == "cpu" else torch.float16
        self.params = count_parameters(model)
        self.guard = Guard(tc, len(set(run.data.eval_labels.tolist())), run.data.eval_name)
        self.metrics: dict | None = None
        self.frozen: dict | None = None
        self.frozen_done = False
        self.metrics_step = -1  # the step self.metrics belong to (the same on every rank)
        self.eval_cos: float | None = None  # mean pairwise cosine of the last evaluation's embeddings
        self.stopped: Finding | None = None
        self.findings: list[dict] = []
        self.test: dict[str, dict | None] = {}  # val runs: the test split, scored once at the end

    @property
    def pos(self) -> Position:
        return self.state.pos

    def evaluate(self, adapted: bool = True) -> dict[str, float] | None:
        """Retrieval metrics on the evaluation split (rank 0; None elsewhere); NaN for a model
        whose embeddings are not finite (a diverged one: the guard then says so)."""
        from dva.metrics import DEFAULT_KS, retrieval_metrics

        emb = self.source.embed_eval(self.run.model, adapted)
        if emb is None:
            return None
        self.eval_cos = mean_pairwise_cosine(torch.from_numpy(emb))
        if not np.isfinite(emb).all():
            return {k: math.nan for k in (*(f"recall@{k}" for k in DEFAULT_KS), "map@r", "r_precision")}
        return retrieval_metrics(emb, self.run.data.eval_labels)

    def start(self, n_box: int, prep_s: float) -> None:
        """A fresh run: the setup log row (with the learning rate in force and where it came from)."""
        run, tc = self.run, self.run.cfg.train
        run.log.write(kind="setup", **self.params, prefix_cache=self.source.from_prefix, boxes=n_box,
                      train_images=len(run.data.train_labels), eval_images=len(run.data.eval_paths),
                      prep_seconds=prep_s, trainable=tc.trainable, lr=tc.lr, warmup_epochs=tc.warmup_epochs,
                      defaults_for_trainable=list(tc.defaulted), steps=self.total, budget=self.budget.rule,
                      classes_per_batch=run.data.batch.classes, images_per_class=run.data.batch.images,
                      eval_split=run.data.eval_name, early_stopping=self._patience(), eval_every=self.eval_every,
                      val_classes=run.data.val_classes, train_classes=run.data.num_classes)
        run.log.alert(f"budget: {self.total} steps ({self.budget.rule}); batches of {run.data.batch.classes} classes x "
                      f"{run.data.batch.images} images; evaluation on the {run.data.eval_name} split"
                      + (f", early stopping after {self._patience()} evaluations without a better MAP@R"
                         if self._patience() else ""), kind="budget")
        if self.eval_note and run.data.select:
            run.log.alert(self.eval_note, kind="budget")
        warning = lr_warning(tc)
        if warning:
            run.log.alert(warning, kind="warning")

    def baseline(self) -> None:
        """A fresh run: the frozen baseline (same images, adapters off).

        The model at step 0 equals the frozen backbone (zero-initialised adapters, identity head),
        so the frozen evaluation is also the first ``best.safetensors``.
        """
        run, tc = self.run, self.run.cfg.train
        if tc.eval_frozen:
            self.frozen = self.evaluate(adapted=False)
            self.frozen_done = True
            if run.info.main:
                self.guard.reference_cos = self.eval_cos
                self.pos.frozen = {**self.frozen, "mean_cos": self.eval_cos}
                run.log.write(kind="eval", split=run.data.eval_name, epoch=0, step=0, frozen=True, **self.frozen,
                              mean_cos=self.eval_cos)
                if run.data.select:
                    self.state.save_best(run.out, self.frozen, 0, run.data.eval_name)

    def resumed(self) -> None:
        """A resumed run: the frozen figures the guard compares with come from the state."""
        saved = dict(self.pos.frozen)
        self.guard.reference_cos = saved.pop("mean_cos", None)
        if saved:
            self.frozen, self.frozen_done = saved, True

    def _patience(self) -> int:
        """``train.patience`` when the run evaluates on a validation split; 0 (never stop early) on the test split."""
        return self.run.cfg.train.patience if self.run.data.eval_name == "val" else 0

    def fit(self) -> None:
        """Epochs from the current position until ``total`` steps, an early stop (validation only), or a stop."""
        pos = self.pos
        try:
            # A run that stopped early stays stopped: --resume of it trains nothing more.
            for epoch in range(pos.epoch, self.budget.epochs if not pos.early_stop else pos.epoch):
                if pos.step >= self.total:
                    break
                self._epoch(epoch, pos.batch_in_epoch)
                pos.epoch, pos.batch_in_epoch = epoch + 1, 0
                last_epoch = epoch + 1 == self.budget.epochs or pos.step >= self.total
                # A run that selects nothing (data.select false) evaluates only at the end.
                periodic = self.eval_every and (epoch + 1) % self.eval_every == 0 and self.run.data.select
                if periodic or last_epoch:
                    self._evaluate_epoch(epoch + 1)
                self._save(self.metrics)
                if self.pos.early_stop:
                    break
        except _Stop as stop:
            self.stopped = stop.finding  # saved by finish(), with the metrics of this step

    def _epoch(self, epoch: int, skip: int) -> None:
        """The batches ``skip, ...`` of one epoch (fewer if the step budget runs out)."""
        run, tc, pos = self.run, self.run.cfg.train, self.pos
        run.model.train()
        shape = run.data.batch
        batches = epoch_batches(run.data.train_labels, shape.classes, shape.images, tc.seed, epoch)
        n_epochs = self.budget.max_epochs or math.ceil(self.total / self.budget.steps_per_epoch)
        bar = tqdm(total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{n_epochs}",
                   disable=not run.progress)
        t_ep, agg, n_agg = time.time(), {}, 0
        steps = self.source.epoch(epoch, batches, skip)
        for bi in range(skip, len(batches)):
            if pos.step >= self.total:
                break
            ts = time.time()
            batch = next(steps)  # after the budget check: an unused batch would still draw random numbers
            losses, gnorm = self._step(batch)
            pos.step, pos.epoch, pos.batch_in_epoch = pos.step + 1, epoch, bi + 1
            pos.train_seconds += time.time() - ts
            pos.images += len(batch.labels) * run.info.world
            for k, v in losses.items():
                agg[k] = agg.get(k, 0.0) + float(v.detach())
            n_agg += 1
            bar.update(1)
            if pos.step % tc.log_every == 0 or bi == len(batches) - 1:
                emb = self.source.embed_batch(run.model, batch)
                self._log_train(epoch, {k: v / n_agg for k, v in agg.items()}, gnorm, t_ep, mean_pairwise_cosine(emb))
                agg, n_agg = {}, 0
                self._check(self.guard.check_batch(pos.step, emb))
            if tc.save_every and pos.step % tc.save_every == 0:
                self._save()
            if run.on_step is not None:
                run.on_step(pos.step)
        bar.close()

    def _step(self, b: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimisation step on ``b``: the losses and the gradient norm (before clipping).

        The guard sees the loss and the gradient norm before the update: a non-finite one stops
        the run with the weights of the previous step.
        """
        st, tc = self.state, self.run.cfg.train
        with torch.autocast(self.run.info.device.type, dtype=self.amp_dtype, enabled=tc.amp):
            losses = self.ddp(b.x, b.disc, b.bg, b.keep, b.labels, from_prefix=self.source.from_prefix)
        st.optimizer.zero_grad(set_to_none=True)
        st.scaler.scale(losses["loss"]).backward()
        st.scaler.unscale_(st.optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(list(self.run.model.trainable_parameters()), tc.grad_clip)
        self._check(self.guard.check_step(self.pos.step + 1, float(losses["loss"].detach()), float(gnorm),
                                          st.scaler.is_enabled()))
        st.scaler.step(st.optimizer)
        st.scaler.update()
        st.scheduler.step()
        return losses, gnorm

    def _check(self, finding: Finding | None, may_stop: bool = True) -> None:
        """Act on a guard finding, the same way on every rank: log it; stop unless ``on_collapse=warn``
        (or ``may_stop`` is False: a finding on the test split only warns)."""
        run = self.run
        if not any_rank(run.info, finding is not None):
            return
        finding = finding or Finding("another rank", self.pos.step, "a check tripped on another DDP rank",
                                     lr_fix(run.cfg.train))
        stop = run.cfg.train.on_collapse == "stop" and may_stop
        first = finding.kind not in {f["kind"] for f in self.findings}
        self.findings.append(finding.to_dict())
        if stop or first:  # warn: one console line per kind of finding
            kept = ("best.safetensors keeps the best evaluation" if run.data.select
                    else "last.safetensors holds the model where it stopped; nothing is selected on this split")
            then = (f"stopping ({kept}; train.on_collapse=warn goes on)" if stop
                    else "going on (train.on_collapse=warn)" if may_stop
                    else "going on (an evaluation on the test split never decides when training ends)")
            run.log.alert(f"{finding.message()}; {then}", kind="collapse", what=finding.kind, step=finding.step,
                          figure=finding.figure, fix=finding.fix, action="stop" if stop else "warn")
        if stop:
            raise _Stop(finding)

    def _log_train(self, epoch: int, mean: dict[str, float], gnorm: torch.Tensor, t_ep: float,
                   batch_cos: float) -> None:
        """One ``train`` log row: the mean losses since the last row, throughput, and the spread of
        this batch's embeddings (``batch_cos``: mean pairwise cosine, the guard's figure)."""
        self.run.log.write(kind="train", epoch=epoch + 1, step=self.pos.step,
                           **{("loss" if k == "loss" else f"loss_{k}"): v for k, v in mean.items()},
                           grad_norm=float(gnorm), lr=self.state.optimizer.param_groups[0]["lr"],
                           seconds=round(time.time() - t_ep, 3), img_per_s=self.pos.images / max(self.pos.train_seconds, 1e-9),
                           batch_cos=batch_cos)

    def _evaluate_epoch(self, epoch: int) -> None:
        """Evaluate after ``epoch`` epochs; keep ``best.safetensors`` by MAP@R; ask the guard."""
        run = self.run
        self.metrics, self.metrics_step = self.evaluate(), self.pos.step
        finding = None
        if run.info.main:
            run.log.write(kind="eval", split=run.data.eval_name, epoch=epoch, step=self.pos.step, **self.metrics,
                          mean_cos=self.eval_cos)
            if run.data.select and self.metrics["map@r"] > self.pos.best:
                self.state.save_best(run.out, self.metrics, epoch, run.data.eval_name)
                self.pos.stale = 0
            elif run.data.select and self.pos.step == self.pos.best_step:
                # The evaluation that wrote best.safetensors, run again after a resume adopted the
                # file (state.restore): an improvement, as it was the first time (no early stop).
                self.pos.stale = 0
            else:
                self.pos.stale += 1
            finding = self.guard.check_eval(self.pos.step, self.metrics, self.frozen)
        # On the test split (data.val_classes 0) the figures only report: a finding there warns,
        # and training ends where its budget does (docs/METHOD.md, Training: collapse guard).
        self._check(finding, may_stop=run.data.eval_name != "test")
        # Early stopping, decided on rank 0's count and shared (every rank leaves the loop together).
        patience = self._patience()
        pos = self.pos
        if patience and any_rank(run.info, pos.stale >= patience) and pos.step < self.total:
            pos.early_stop = (f"early stop at step {pos.step} of {self.total}: {patience} evaluations without "
                              f"a better validation MAP@R (best: step {pos.best_step}; train.patience=0 turns it off)")
            run.log.alert(pos.early_stop, kind="early_stop", step=pos.step)

    def _save(self, metrics: dict | None = None) -> None:
        if self.run.info.main:
            self.state.save(self.run.out, self.run.cfg, metrics)

    def finish(self, n_box: int, prep_s: float) -> dict[str, Any]:
        """Final metrics (also of a stopped run, or a resumed one that had already finished) and ``summary.json``."""
        run = self.run
        # Decided by values every rank holds, not by None: non-zero DDP ranks always hold None
        # and must not evaluate alone.
        if self.metrics_step != self.pos.step:
            self.metrics, self.metrics_step = self.evaluate(), self.pos.step
        if not self.frozen_done and run.cfg.train.eval_frozen:
            self.frozen = self.evaluate(adapted=False)
        if self.stopped is not None:
            self._save(self.metrics)
        self._score_test()
        summary = {"status": "stopped" if self.stopped else "completed",
                   "collapse": self.stopped.to_dict() if self.stopped else None, "findings": self.findings,
                   "metrics": self.metrics, "frozen_metrics": self.frozen, "params": self.params,
                   "train_seconds": self.pos.train_seconds, "prep_seconds": prep_s,
                   "train_img_per_s": self.pos.images / max(self.pos.train_seconds, 1e-9), "steps": self.pos.step,
                   "prefix_cache": self.source.from_prefix, "boxes": n_box, "checkpoint": str(run.out / LAST_FILE),
                   "checkpoints": self._checkpoints(), "eval_split": run.data.eval_name,
                   "test_metrics": self.test.get("trained"), "test_frozen_metrics": self.test.get("frozen"),
                   "test_model": self.test.get("model"), "budget": {"steps": self.total, "rule": self.budget.rule},
                   "batch": {"classes_per_batch": run.data.batch.classes, "images_per_class": run.data.batch.images},
                   "data": {"train_images": len(run.data.train_labels), "train_classes": run.data.num_classes,
                            "val_classes": run.data.val_classes, "eval_images": len(run.data.eval_paths)},
                   "eval_every": self.eval_every,
                   "early_stop": self.pos.early_stop or None,
                   "worse_than_frozen": (not self.metrics["map@r"] >= self.frozen["map@r"]  # nan: worse
                                         if self.metrics and self.frozen else None)}
        if run.info.main:
            atomic_write_json(run.out / SUMMARY_FILE, summary)
        return summary

    def _score_test(self) -> None:
        """A run that validated on held-out training classes: score the test split once, for the
        model validation chose (``best.safetensors``; the frozen backbone when it is the best) and
        for the frozen backbone. Nothing here selects or stops: the figures are only reported."""
        run = self.run
        if run.data.eval_name != "val" or not run.data.test_paths:
            return
        barrier(run.info)  # best.safetensors is written by rank 0
        best = run.out / BEST_FILE
        # Rank 0 alone tracks the best step: it decides, so that every rank embeds its share of the
        # test split with the same model.
        if any_rank(run.info, run.info.main and self.pos.best_step >= 0 and best.is_file()):
            load_into(run.model, best)
        dcfg = run.model.data_cfg
        trained = embed_paths(run.model, run.data.test_paths, run.cfg, dcfg, run.info, True)
        # adapted=False is the frozen backbone unless every backbone weight was trained (trainable=full).
        frozen = embed_paths(run.model, run.data.test_paths, run.cfg, dcfg, run.info, False) \
            if run.cfg.train.eval_frozen and run.cfg.train.trainable != "full" else None
        if not run.info.main:
            return
        from dva.metrics import retrieval_metrics

        self.test = {"trained": retrieval_metrics(trained, run.data.test_labels),
                     "frozen": retrieval_metrics(frozen, run.data.test_labels) if frozen is not None else None,
                     "model": {"path": str(best), "step": self.pos.best_step, "chosen_on": "val"}
                     if self.pos.best_step >= 0 else {"path": str(run.out / LAST_FILE), "step": self.pos.step}}
        run.log.write(kind="eval", split="test", step=self.pos.step, model_step=self.test["model"]["step"],
                      **self.test["trained"], frozen_test=self.test["frozen"])

    def _checkpoints(self) -> dict[str, Any]:
        """What ``last.safetensors`` and ``best.safetensors`` hold."""
        run, pos = self.run, self.pos
        last = {"path": str(run.out / LAST_FILE), "step": pos.step,
                "what": "the model where training " + ("stopped (collapse guard)" if self.stopped else "ended"),
                "map@r": (self.metrics or {}).get("map@r")}
        best = None
        if pos.best_step >= 0:
            best = {"path": str(run.out / BEST_FILE), "step": pos.best_step, "map@r": pos.best,
                    "split": run.data.eval_name,
                    "what": "the best evaluation" + (": the starting model, = the frozen backbone"
                                                     if pos.best_step == 0 else "")
                    + (" (chosen on the test split: not an unbiased estimate; select with data.val_classes)"
                       if run.data.eval_name == "test" and pos.best_step > 0 else "")}
        return {"last": last, "best": best}
