"""The rules the data decide (src/dva_train/budget.py): step budget, validation hold-out, batch shape."""
import pytest

from dva.config import AUTO, AUTO_EVALS, load_config
from dva_train.budget import eval_period, fit_batch, held_out_classes, resolve_budget


def _tc(*extra):
    return load_config(None, list(extra)).train


# --------------------------------------------------------------------------- the evaluation period
@pytest.mark.parametrize("n_train, steps, every, evals", [
    (140, 200, 7, 8),     # pets37-sized: 4 batches per epoch, 50 epochs -> every 7 epochs (28 steps), 8 evaluations
    (2362, 184, 1, 3),    # cub100's demo: 73 batches per epoch, 3 epochs -> every epoch, as before
    (3186, 2000, 3, 7),   # 99 batches per epoch, 21 epochs -> every 3 epochs
])
def test_auto_evaluates_about_a_fixed_number_of_times_per_run(n_train, steps, every, evals):
    tc = _tc("--train.steps", str(steps))
    assert tc.eval_every == AUTO  # the default
    got, note = eval_period(tc.eval_every, resolve_budget(tc, n_train=n_train, batch_size=32))
    assert got == every and f"{evals} evaluations over {steps} steps" in note
    assert evals <= AUTO_EVALS


def test_an_explicit_eval_period_is_kept_and_auto_is_read_from_the_command_line():
    b = resolve_budget(_tc("--train.steps", "200"), n_train=140, batch_size=32)
    assert eval_period(1, b) == (1, "") and eval_period(0, b) == (0, "")
    assert _tc("--train.eval_every", "auto").eval_every == AUTO
    assert _tc("--train.eval_every", "2").eval_every == 2
    with pytest.raises(ValueError, match="train.eval_every"):
        _tc("--train.eval_every", "-2")


# --------------------------------------------------------------------------- the step budget
def test_explicit_steps_are_the_budget_whatever_the_data():
    b = resolve_budget(_tc("--train.steps", "37"), n_train=10_000, batch_size=32)
    assert (b.steps, b.schedule, b.steps_per_epoch, b.rule) == (37, 37, 312, "train.steps=37")
    assert b.epochs == 38  # steps alone end the loop


def test_epochs_override_the_steps():
    b = resolve_budget(_tc("--train.steps", "500", "--train.epochs", "3"), n_train=480, batch_size=24)
    assert (b.steps, b.steps_per_epoch, b.epochs) == (60, 20, 3)  # epochs also end the loop
    assert b.rule == "train.epochs=3 x 20 batches per epoch"


def test_max_steps_caps_and_keeps_the_recorded_benchmark_schedule():
    # --train.epochs E --train.max_steps M, as the benchmark passes them: the cosine spans M.
    b = resolve_budget(_tc("--train.epochs", "2", "--train.max_steps", "184"), n_train=2362, batch_size=32)
    assert (b.steps, b.schedule) == (146, 184)  # 2 x 73 batches, schedule as before train.steps existed
    b = resolve_budget(_tc("--train.epochs", "3", "--train.max_steps", "184"), n_train=2362, batch_size=32)
    assert (b.steps, b.schedule) == (184, 184)
    b = resolve_budget(_tc("--train.steps", "300", "--train.max_steps", "50"), n_train=100, batch_size=10)
    assert (b.steps, b.schedule) == (50, 50) and b.rule.endswith("capped by train.max_steps=50")


@pytest.mark.parametrize("n_train,batch,steps", [
    (480, 24, 240),                      # the small flower set: 6 epochs = 120 steps -> the floor
    (140, 32, 240),                      # the pets37 split: 6 x 4 = 24 -> the floor
    (2349, 32, 438),                     # cub100 less 10 held-out classes: 6 x 73
    (3186, 32, 594),                     # cars196 less 20 held-out classes: 6 x 99
    (8054, 32, 1506),                    # a cars196-sized set of both halves: 6 x 251, inside the clamp
    (500_000, 32, 2000),                 # a large set: the ceiling
])
def test_the_default_budget_scales_with_the_data_within_the_clamp(n_train, batch, steps):
    b = resolve_budget(_tc(), n_train=n_train, batch_size=batch)
    assert b.steps == b.schedule == steps
    assert b.rule.startswith("train.steps=auto")


# --------------------------------------------------------------------------- the validation hold-out
@pytest.mark.parametrize("n_classes,held", [(2, 0), (5, 0), (9, 0), (10, 2), (12, 2), (50, 10), (100, 20)])
def test_auto_holds_out_max_2_or_20_percent_of_at_least_10_classes(n_classes, held):
    n, note = held_out_classes(AUTO, n_classes)
    assert n == held
    assert ("too few to hold some out" in note) == (held == 0)


def test_an_explicit_count_is_kept_without_a_note():
    assert held_out_classes(0, 50) == (0, "")
    assert held_out_classes(7, 50) == (7, "")


def test_val_classes_reads_auto_and_refuses_below_minus_one():
    assert load_config(None, ["--data.val_classes", "auto"]).data.val_classes == AUTO
    assert load_config(None, []).data.val_classes == AUTO  # the default
    with pytest.raises(ValueError, match="data.val_classes=-2 must be >= -1"):
        load_config(None, ["--data.val_classes", "-2"])


# --------------------------------------------------------------------------- the batch shape
def test_a_batch_is_fitted_to_a_split_with_few_classes():
    shape, note = fit_batch(_tc(), [96, 80, 80, 80, 80])  # 5 classes, default 8 x 4
    assert (shape.classes, shape.images, shape.size) == (5, 7, 35)  # ceil(32 / 5) = 7 images per class
    assert note.startswith("batch: train.classes_per_batch=8 but the training split has 5 classes: 5 classes x 7")
    shape, _ = fit_batch(_tc(), [3, 3, 3, 3, 3])  # small classes: no more images than the median class holds
    assert (shape.classes, shape.images) == (5, 4)  # never fewer than asked (the sampler repeats images)
    shape, note = fit_batch(_tc("--train.classes_per_batch", "4", "--train.images_per_class", "3"), [10] * 5)
    assert (shape.classes, shape.images, note) == (4, 3, "")  # fits: the values given are kept
    shape, _ = fit_batch(_tc(), [2, 12])  # the lower median: not 12 draws of a 2-image class per batch
    assert (shape.classes, shape.images) == (2, 4)
    shape, note = fit_batch(_tc(), [96, 80, 80, 80, 80], world=2)  # 5 x 7 = 35 does not split over 2 processes
    assert (shape.classes, shape.images) == (5, 8) and "(a multiple of the 2 processes)" in note
    with pytest.raises(ValueError, match="3 x 3 = 9 images per batch do not divide over 2 processes"):
        fit_batch(_tc("--train.classes_per_batch", "3", "--train.images_per_class", "3"), [10] * 5, world=2)
    # No classes at all: no batch verdict (check_split names the empty split, the clearer message).
    assert fit_batch(_tc("--train.classes_per_batch", "3", "--train.images_per_class", "3"), [], world=2) == \
        ((3, 3), "")
