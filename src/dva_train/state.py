"""Save and resume a run: the trainable tensors, optimiser, scheduler, scaler and position as one unit.

Two files in the run folder (docs/METHOD.md, Training), beside ``best.safetensors`` and ``summary.json``:

* ``last.safetensors`` — the user-facing checkpoint (:func:`dva.checkpoint.save_checkpoint`);
* ``train_state.pt`` — what resuming needs, *including its own copy of the trainable tensors and
  the step*, and the resolved config (``torch.save``; read with ``weights_only=True``, which
  refuses any object but tensors and plain values without running it).

Each is written atomically, the checkpoint first. A crash between the two writes leaves a newer
checkpoint beside an older state; resuming reads the tensors, optimiser moments and step from
the state file alone, so they always belong to the same step (and the newer checkpoint is
rewritten at the next save).

Training from scratch never replaces another run's results silently (:func:`check_run_folder`):
a folder holding them is resumed (``--resume``), or started again with ``--overwrite``
(:func:`clear_results`).
"""
from __future__ import annotations

import io
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dva.checkpoint import load_into, save_checkpoint, trainable_state
from dva.config import DVAConfig
from dva.model import DVAModel
from dva.utils import atomic_write_bytes

STATE_FILE = "train_state.pt"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"  # the best evaluation so far (docs/METHOD.md, Training)
SUMMARY_FILE = "summary.json"  # written when a run ends (completed, or stopped by the collapse guard)
# A run's results: training from scratch in its folder would replace them (check_run_folder).
RESULT_FILES = (LAST_FILE, BEST_FILE, STATE_FILE, SUMMARY_FILE)
FORMAT = "dva-train-state-v2"  # v1 (no format key): no tensors, no config

# Config keys that cannot change what a run computes: they may differ on resume.
RESUME_IGNORES = frozenset({
    "output_dir", "train.cache_dir", "train.num_workers", "train.threads", "train.log_every", "train.save_every",
    # The collapse guard only decides whether a run stops: a run stopped by it may go on with
    # --resume --train.on_collapse warn (or another threshold).
    "train.on_collapse", "train.collapse_fraction", "train.collapse_cos",
})
_ABSENT = "<absent>"


@dataclass
class Position:
    """Where a run stands: ``step`` optimiser steps done; next is batch ``batch_in_epoch`` of ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -1.0  # best evaluation MAP@R so far (the step-0 frozen evaluation included)
    best_step: int = -1  # the step of best.safetensors (-1: none)
    run_id: str = ""  # the ``run`` of the log rows (dva_train.runlog); kept by a resume
    # The step-0 evaluation of the frozen backbone (metrics and "mean_cos"), for the collapse guard.
    frozen: dict[str, float] = field(default_factory=dict)
    stale: int = 0  # evaluations in a row without a better validation MAP@R (early stopping)
    early_stop: str = ""  # why the run stopped early, if it did (kept by a resume: it stays stopped)
    # Training time and images so far, over every session of the run: a resumed (or already finished)
    # run reports the whole run's figures, not those of its last session.
    train_seconds: float = 0.0
    images: int = 0


@dataclass
class TrainState:
    """The objects whose state is saved and restored together."""

    model: DVAModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    pos: Position = field(default_factory=Position)
    # The batch composition the run trains with (fitted to the split and the process count,
    # dva_train.budget.fit_batch): saved, so that a resume that would fit another one is caught.
    batch: tuple[int, int] = (0, 0)

    def save(self, out: Path, cfg: DVAConfig, metrics: dict | None = None) -> None:
        """Write ``last.safetensors``, then ``train_state.pt`` (call on rank 0 only)."""
        p = self.pos
        save_checkpoint(out / LAST_FILE, self.model, {"step": p.step, "epoch": p.epoch, "metrics": metrics or {}})
        _write_state_file(out / STATE_FILE, {
            "format": FORMAT, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch, "best": p.best,
            "best_step": p.best_step, "run_id": p.run_id, "frozen": dict(p.frozen),
            "stale": p.stale, "early_stop": p.early_stop, "train_seconds": p.train_seconds, "images": p.images,
            "scaler": self.scaler.state_dict(), "trainable": trainable_state(self.model),
            "fingerprint": self.model.fingerprint, "config": cfg.to_dict(), "batch": list(self.batch),
        })

    def save_best(self, out: Path, metrics: dict[str, float], epoch: int, split: str) -> None:
        """Write ``best.safetensors`` (the model now, evaluated at ``metrics``) and remember it (rank 0)."""
        p = self.pos
        p.best, p.best_step = float(metrics["map@r"]), p.step
        save_checkpoint(out / BEST_FILE, self.model, {"step": p.step, "epoch": epoch, "metrics": metrics, "split": split})

    def restore(self, saved: dict[str, Any], out: Path) -> dict[str, Any]:
        """Load a state read by :func:`read_state`; returns notes for the log (e.g. a stale checkpoint)."""
        notes: dict[str, Any] = {}
        if "trainable" in saved:
            _load_trainable(self.model, saved)
            last = checkpoint_step(out / LAST_FILE)
            if last != int(saved["step"]):
                notes["last_checkpoint_step"] = last  # e.g. a crash between the two writes
        else:  # v1: the tensors are only in the checkpoint
            load_into(self.model, out / LAST_FILE)
            notes["state_format"] = "v1"
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.pos = Position(int(saved["step"]), int(saved["epoch"]), int(saved["batch_in_epoch"]),
                            float(saved.get("best", -1.0)), int(saved.get("best_step", -1)),
                            str(saved.get("run_id", "")) or self.pos.run_id, dict(saved.get("frozen") or {}),
                            int(saved.get("stale", 0)), str(saved.get("early_stop", "")),
                            float(saved.get("train_seconds", 0.0)), int(saved.get("images", 0)))
        # best.safetensors is written before the state that records it: a crash between the two
        # leaves the file ahead of the state. The file is what the run hands on, so the position
        # takes its step and MAP@R (else a later, worse evaluation could overwrite a better model);
        # the trainer counts that evaluation, run again, as the improvement it was (train.py).
        best = _checkpoint_extra(out / BEST_FILE)
        if best is not None and "map@r" in (best.get("metrics") or {}) and int(best["step"]) > self.pos.best_step:
            notes["best_checkpoint_step"] = int(best["step"])
            self.pos.best, self.pos.best_step = float(best["metrics"]["map@r"]), int(best["step"])
        return notes


def _write_state_file(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_state(out: Path) -> dict[str, Any] | None:
    """The saved state of the run in ``out``, or None when there is nothing to resume.

    A v1 state (written before the state held the tensors) needs ``last.safetensors`` too.
    """
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or hostile: each is reported below
        raise ValueError(_unreadable_state(path, exc)) from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a training state written by dva train (it holds a {type(saved).__name__}, "
                         "not a mapping): delete it to start the run again")
    if "trainable" not in saved and not (Path(out) / LAST_FILE).is_file():
        return None
    return saved


def _unreadable_state(path: Path, exc: Exception) -> str:
    """What to tell about a state file ``torch.load(weights_only=True)`` refused or could not read."""
    text = str(exc)
    # weights_only stops at the first object that is not a tensor or a plain value: a pickle that
    # would import a function (os.system, ...) is refused before anything in it is created or run.
    if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        named = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it refers to {named.group(1)}, " if named else "it holds something "
        return (f"{path}: refused: {what}which is not a tensor or a plain value. It was read with "
                "weights_only=True, so it was not loaded and nothing in it was executed. dva train writes only "
                "tensors and plain values there: this file was not written by it, or was replaced afterwards. "
                "Delete it to start the run again (or put the run's own file back); do not load it with "
                "weights_only=False unless you trust where it came from")
    return (f"{path}: unreadable training state ({type(exc).__name__}); it is written atomically, so the file "
            "was damaged afterwards: delete it to start the run again")


def check_run_folder(out: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train from scratch over another run's results (ValueError naming the way on).

    ``out`` may hold a run: with ``resume`` it is continued; with ``overwrite`` it is started
    again (the caller deletes the results with :func:`clear_results`); otherwise a folder with
    any of :data:`RESULT_FILES` is refused, saying whether that run finished and how to resume it.
    A missing folder, or one without results (e.g. a run refused before its first step), is fine.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a folder: choose another --output_dir")
    if resume and overwrite:
        raise ValueError("--resume continues the run in output_dir, --overwrite starts it again from scratch: "
                         "pass one of them")
    found = [f for f in RESULT_FILES if (out / f).exists()]
    if resume and found and not (out / STATE_FILE).exists():  # resuming would start afresh over them
        raise ValueError(f"{out} holds results ({', '.join(found)}) but no {STATE_FILE} to resume from: pass "
                         "--overwrite to train again from scratch, or choose another --output_dir")
    if not found or resume or overwrite:
        return
    ways = ("choose another --output_dir, or pass --overwrite to train again from scratch "
            "(replacing its checkpoints and summary)")
    if SUMMARY_FILE in found:
        try:
            summary = json.loads((out / SUMMARY_FILE).read_text())
            state = f"{summary.get('status', 'finished')}, {summary.get('steps')} steps"
        except (OSError, ValueError, AttributeError):
            state = "finished"
        raise ValueError(f"{out} holds a finished run ({state}; {', '.join(found)}): pass --resume to continue "
                         "it (--resume-with-changes with a larger --train.steps or --train.epochs trains it "
                         f"further), {ways}")
    step = checkpoint_step(out / LAST_FILE)
    at = f" (last checkpoint at step {step})" if step is not None else ""
    raise ValueError(f"{out} holds an unfinished run{at} ({', '.join(found)}): pass --resume to continue it, {ways}")


def clear_results(out: str | Path) -> list[str]:
    """Delete the :data:`RESULT_FILES` in ``out`` (training again from scratch); returns the names deleted.

    ``log.jsonl`` stays: its rows carry their run's id, so the next run's rows are told apart.
    """
    gone = []
    for name in RESULT_FILES:
        p = Path(out) / name
        if p.exists():
            p.unlink()
            gone.append(name)
    return gone


def _load_trainable(model: DVAModel, saved: dict[str, Any]) -> None:
    if saved["fingerprint"] != model.fingerprint:
        raise ValueError(f"{STATE_FILE} was trained on frozen weights with fingerprint {saved['fingerprint']}, "
                         f"but the backbone loaded now has {model.fingerprint}: resume with the same backbone weights")
    tensors, params = saved["trainable"], {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != set(params):
        missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise ValueError(f"{STATE_FILE}: adapter layout differs: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        for n, t in tensors.items():
            if params[n].shape != t.shape:
                raise ValueError(f"{STATE_FILE}: {n} has shape {tuple(t.shape)}, model expects {tuple(params[n].shape)}")
            params[n].copy_(t)


def _checkpoint_extra(path: Path) -> dict[str, Any] | None:
    """The ``extra`` metadata of a checkpoint (step, metrics; None: absent, unreadable or without a step)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            extra = json.loads((f.metadata() or {})["extra"])
        int(extra["step"])
        return extra
    except Exception:  # noqa: BLE001 - any failure means "no usable step"
        return None


def checkpoint_step(path: Path) -> int | None:
    """The step recorded in a checkpoint's metadata (None: absent or unreadable)."""
    extra = _checkpoint_extra(path)
    return None if extra is None else int(extra["step"])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_changes(saved: dict[str, Any], cfg: DVAConfig) -> dict[str, list]:
    """``{dotted key: [saved value, current value]}`` for every key that may change results.

    A key missing from ``saved`` (added to the config since) counts as its default value.
    """
    old, new = _flatten(saved), _flatten(cfg.to_dict())
    default = _flatten(DVAConfig().to_dict())
    changes = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, default.get(k, _ABSENT)), new.get(k, _ABSENT)
        if k not in RESUME_IGNORES and a != b:
            changes[k] = [a, b]
    return changes


def check_resume_config(saved: dict[str, Any], cfg: DVAConfig, allow_changes: bool) -> dict[str, list]:
    """The config changes since ``saved`` was written; refused (ValueError) unless ``allow_changes``."""
    if "config" not in saved:  # v1 state: the config was not recorded
        return {}
    changes = config_changes(saved["config"], cfg)
    if changes and not allow_changes:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ValueError(f"{Path(cfg.output_dir) / STATE_FILE} was written with another config ({listed}); "
                         "resuming would not continue the same run: restore those settings, use another "
                         "output_dir, or pass --resume-with-changes to continue anyway")
    return changes


def check_resume_batch(saved: dict[str, Any], batch: tuple[int, int], out: Path,
                       allow_changes: bool) -> dict[str, list]:
    """A fitted batch composition that differs from the saved run's (refused unless ``allow_changes``).

    The config can be unchanged while the batch is not: on a split with fewer classes than
    ``train.classes_per_batch`` the batch is fitted to the split and to the process count, so a
    resume under another ``torchrun --nproc-per-node`` would continue with other batches (and
    another epoch length). Returns ``{"batch": [saved, now]}`` when they differ, else ``{}``.
    """
    if "batch" not in saved:  # a state written before the batch was recorded
        return {}
    was, now = [int(v) for v in saved["batch"]], [int(v) for v in batch]
    if was == now:
        return {}
    if not allow_changes:
        raise ValueError(f"{Path(out) / STATE_FILE} was trained with batches of {was[0]} classes x {was[1]} images; "
                         f"this resume would fit {now[0]} x {now[1]} (the batch is fitted to a split of few classes "
                         "and to the number of processes): resume with the process count the run started with, "
                         "set --train.classes_per_batch / --train.images_per_class to a composition that divides "
                         "over the processes, or pass --resume-with-changes to continue anyway")
    return {"batch": [was, now]}
