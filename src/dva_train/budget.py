"""What a run's data decide: the validation hold-out, the batch composition and the step budget.

Three pure rules (docs/METHOD.md, Training), each returning the value and a sentence for the
log, so that a user sees what was chosen and which key overrides it:

* :func:`held_out_classes` — ``data.val_classes=auto``: enough training classes -> some are
  held out for validation (model selection and early stopping never see the test split);
  :func:`validation_classes` — which ones (the last that can be queried);
* :func:`fit_batch` — ``train.classes_per_batch`` / ``images_per_class`` shrunk or grown to what
  the training split holds, instead of refusing a small dataset;
* :func:`resolve_budget` — ``train.steps`` / ``train.epochs`` / the data-scaled default;
* :func:`eval_period` — ``train.eval_every=auto``: a fixed number of evaluations per run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from dva.config import AUTO, AUTO_EVALS, AUTO_STEPS, AUTO_VAL_CLASSES, TrainConfig


def held_out_classes(requested: int, n_classes: int) -> tuple[int, str]:
    """How many of ``n_classes`` training classes to hold out for validation, and why.

    Args:
        requested: ``data.val_classes``: ``AUTO`` (-1) for the rule, else the explicit count.
        n_classes: classes in the training split before the hold-out.

    Returns:
        ``(count, note)``; ``auto`` holds out ``max(2, round(20%))`` when there are at least 10
        classes, else none (the note then says the run trains a fixed budget and selects nothing).
    """
    if requested != AUTO:
        return requested, ""
    r = AUTO_VAL_CLASSES
    if n_classes < r["min_classes"]:
        return 0, (f"data.val_classes=auto: the training split has {n_classes} classes (< {r['min_classes']:g}), "
                   "too few to hold some out for validation: training runs the fixed step budget, with no early "
                   "stopping, and the test split is evaluated once, at the end, only to report (no best.safetensors: "
                   "nothing is chosen by a test score; use last.safetensors)")
    n = max(int(r["min"]), round(r["fraction"] * n_classes))
    return n, (f"data.val_classes=auto: {n} of the {n_classes} training classes are held out for validation "
               f"(periodic evaluation, best.safetensors, early stopping); the test split is scored once at the end "
               f"(--data.val_classes N sets the count, 0 evaluates on the test split)")


def validation_classes(requested: int, sizes: Mapping[int, int]) -> tuple[list[int], str]:
    """Which training classes ``data.val_classes`` holds out, and the note saying why.

    The count comes from :func:`held_out_classes`; the classes are the last training classes that
    hold two or more images (a class of one image cannot be queried), never a test class, and at
    least two such classes stay in training (a proxy loss needs classes with positives to learn from).

    Args:
        requested: ``data.val_classes`` (``AUTO`` for the rule).
        sizes: images per training class (class id -> count).

    Raises:
        ValueError: an explicit count larger than that allows (the message gives one that works);
            ``auto`` then holds none out instead, and the note says so.
    """
    classes = sorted(sizes)
    n, note = held_out_classes(requested, len(classes))
    if not n:
        return [], note
    scorable = [c for c in classes if sizes[c] >= 2]
    most = len(scorable) - 2  # held out, at most: two classes of 2+ images stay to train on
    if n <= most:
        return scorable[-n:], note
    counts = (f"{len(classes)} training classes, {len(scorable)} of them with 2 or more images (the only ones a "
              "validation query can use, and the ones training learns from)")
    if requested != AUTO:
        fix = min(max(int(AUTO_VAL_CLASSES["min"]), round(AUTO_VAL_CLASSES["fraction"] * len(classes))), most)
        raise ValueError(f"data.val_classes={n} is too many: {counts}; holding out {n} would leave fewer than 2 to "
                         "train on: set --data.val_classes " + (f"{fix} or 0" if fix >= 2 else "0"))
    return [], (f"data.val_classes=auto: {counts}: too few to hold some out for validation and keep 2 to train on: "
                "training runs the fixed step budget and the test split is evaluated once, at the end, only to "
                "report (no best.safetensors; use last.safetensors)")


class BatchShape(NamedTuple):
    """The batch composition a run uses: ``classes`` x ``images`` per class."""

    classes: int
    images: int

    @property
    def size(self) -> int:
        return self.classes * self.images


def fit_batch(tc: TrainConfig, counts: Sequence[int], world: int = 1) -> tuple[BatchShape, str]:
    """``train.classes_per_batch`` x ``images_per_class`` fitted to a split with ``counts`` images per class.

    Fewer classes than ``classes_per_batch``: every class in each batch, and more images of each
    (up to the lower median class size, never fewer than ``images_per_class``) so that a batch keeps
    about its configured size; then as many more images per class as make the batch divide evenly
    over ``world`` processes (each takes an equal share). The note (empty when nothing changed) names
    the keys that override it.

    Raises:
        ValueError: the configured batch (not fitted: the split has enough classes) does not divide
            over ``world`` processes.
    """
    asked = BatchShape(tc.classes_per_batch, tc.images_per_class)
    if not counts:  # no classes: prepare_data's check_split says so, more clearly than a batch could
        return asked, ""
    if asked.classes <= len(counts):
        if asked.size % world:
            raise ValueError(f"train.classes_per_batch x train.images_per_class = {asked.classes} x {asked.images} = "
                             f"{asked.size} images per batch do not divide over {world} processes: choose values whose "
                             f"product is a multiple of {world}")
        return asked, ""
    classes = len(counts)
    # The lower median: with two classes of 2 and 12 images, 12 images of each would draw the small
    # class six times over in every batch.
    median = sorted(counts)[(len(counts) - 1) // 2]
    images = max(asked.images, min(math.ceil(asked.size / classes), median))
    while (classes * images) % world:
        images += 1
    shape = BatchShape(classes, images)
    return shape, (f"batch: train.classes_per_batch={asked.classes} but the training split has {classes} classes: "
                   f"{classes} classes x {images} images per batch instead of {asked.classes} x {asked.images} "
                   + (f"(a multiple of the {world} processes) " if world > 1 else "")
                   + "(set --train.classes_per_batch / --train.images_per_class to choose)")


class Budget(NamedTuple):
    """The number of optimisation steps, the batches per epoch, where the number came from, and
    the length of the cosine schedule (``schedule``: = ``steps`` except in one case, below)."""

    steps: int
    steps_per_epoch: int
    rule: str
    schedule: int
    max_epochs: int = 0  # train.epochs: the loop also ends after this many epochs (0: steps alone end it)

    @property
    def epochs(self) -> int:
        """Epochs the loop may run: ``train.epochs``, else as many as ``steps`` need from any
        position (a resumed run may have moved to a fresh epoch part-way through one)."""
        return self.max_epochs or self.steps + 1


def resolve_budget(tc: TrainConfig, n_train: int, batch_size: int) -> Budget:
    """The step budget of a run on ``n_train`` training images in batches of ``batch_size``.

    ``train.epochs > 0`` wins (epochs x batches per epoch), then ``train.steps > 0``; otherwise
    ``clamp(AUTO_STEPS["epochs"] x batches per epoch, min, max)``. ``train.max_steps > 0`` caps the result.

    One quirk is kept for the recorded benchmark runs (``--train.epochs E --train.max_steps M``,
    before train.steps existed): with both set, the cosine schedule spans ``M`` steps even when the
    ``E`` epochs end sooner, so those runs stay reproducible.
    """
    spe = max(1, n_train // batch_size)  # dva_train.sampler.epoch_batches draws this many per epoch
    if tc.epochs:
        steps, rule = tc.epochs * spe, f"train.epochs={tc.epochs} x {spe} batches per epoch"
    elif tc.steps:
        steps, rule = tc.steps, f"train.steps={tc.steps}"
    else:
        a = AUTO_STEPS
        raw = a["epochs"] * spe
        steps = min(a["max"], max(a["min"], raw))
        rule = (f"train.steps=auto: {a['epochs']} epochs of {spe} batches = {raw} steps, clamped to "
                f"[{a['min']}, {a['max']}] (--train.steps N or --train.epochs N to choose)")
    schedule = tc.max_steps if tc.epochs and tc.max_steps else steps
    if tc.max_steps and tc.max_steps < steps:
        steps, rule = tc.max_steps, f"{rule}, capped by train.max_steps={tc.max_steps}"
    return Budget(steps, spe, rule, min(schedule, steps) if not tc.epochs else schedule, tc.epochs)


def eval_period(requested: int, budget: Budget) -> tuple[int, str]:
    """Epochs between periodic evaluations: ``train.eval_every``, or for ``auto`` about
    ``AUTO_EVALS`` evaluations over the budget (at least one epoch apart), and the note saying so.

    Early stopping counts evaluations (``train.patience``): evaluating a fixed number of times
    per run, not once per epoch, keeps the patience a share of the budget whatever the dataset's
    size (a 140-image training split has 4 batches per epoch: patience 3 per epoch would be 12 steps).
    """
    if requested != AUTO:
        return requested, ""
    epochs = budget.max_epochs or math.ceil(budget.steps / budget.steps_per_epoch)
    every = max(1, math.ceil(epochs / AUTO_EVALS))
    return every, (f"train.eval_every=auto: every {every} epoch(s) of {budget.steps_per_epoch} batches, "
                   f"{math.ceil(epochs / every)} evaluations over {budget.steps} steps (--train.eval_every N sets it)")
