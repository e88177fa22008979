"""The collapse guard (src/dva_train/guard.py) and the per-trainable defaults it points to."""
import math

import pytest
import torch

from dva.config import TRAINABLE_DEFAULTS, DVAConfig, load_config, save_config
from dva_train.guard import Guard, lr_fix, lr_warning, mean_pairwise_cosine

FROZEN = {"map@r": 0.40, "recall@1": 0.80}


def _tc(*overrides):
    return load_config(None, list(overrides)).train


# --------------------------------------------------------------------------- per-trainable defaults
def test_learning_rate_follows_what_is_trained_unless_given():
    assert _tc().lr == 1e-3 and _tc().warmup_epochs == 0.0  # trainable=ica: as before
    assert _tc("--train.trainable", "full").lr == TRAINABLE_DEFAULTS["full"]["lr"] < 1e-3
    assert _tc("--train.trainable", "head").lr == TRAINABLE_DEFAULTS["head"]["lr"]
    assert _tc("--train.trainable", "full").defaulted == ("lr", "warmup_epochs")
    explicit = _tc("--train.trainable", "full", "--train.lr", "1e-3")
    assert explicit.lr == 1e-3 and "lr" not in explicit.defaulted  # an explicit value always wins
    # demo.yaml leaves train.lr to the table: the demo trains its adapters at 1e-3, and the same
    # config with --train.trainable full trains the backbone at the full-fine-tune rate
    assert load_config("demo").train.lr == 1e-3
    demo = load_config("demo", ["--train.trainable", "full"]).train
    assert demo.lr == TRAINABLE_DEFAULTS["full"]["lr"] and "lr" in demo.defaulted
    assert load_config("demo", ["--train.trainable", "full", "--train.lr", "3e-3"]).train.lr == 3e-3
    tc = _tc()
    tc.trainable = "full"  # set after the config was read: train() re-applies the table
    tc.apply_trainable_defaults()
    assert tc.lr == TRAINABLE_DEFAULTS["full"]["lr"]


def test_a_presets_adapter_rate_applies_to_adapters_only():
    """train.ica_lr (a preset's validated adapter rate) replaces the table's ICA rate when train.lr is
    not set; a full or head run from the same preset keeps its own default; an explicit lr wins."""
    assert _tc("--train.ica_lr", "3e-3").lr == 3e-3
    assert "lr" in _tc("--train.ica_lr", "3e-3").defaulted  # still a default: lr_fix says where it came from
    assert _tc("--train.ica_lr", "3e-3", "--train.trainable", "full").lr == TRAINABLE_DEFAULTS["full"]["lr"]
    assert _tc("--train.ica_lr", "3e-3", "--train.trainable", "head").lr == TRAINABLE_DEFAULTS["head"]["lr"]
    assert _tc("--train.ica_lr", "3e-3", "--train.lr", "5e-4").lr == 5e-4
    assert _tc().ica_lr is None and _tc().lr == 1e-3
    preset = load_config("mobilenetv2").train
    assert preset.ica_lr is not None and preset.lr == preset.ica_lr
    assert load_config("mobilenetv2", ["--train.trainable", "full"]).train.lr == TRAINABLE_DEFAULTS["full"]["lr"]
    tc = _tc("--train.ica_lr", "3e-3")
    tc.trainable = "full"  # set after the config was read (as train() does): the full rate, not ica_lr
    tc.apply_trainable_defaults()
    assert tc.lr == TRAINABLE_DEFAULTS["full"]["lr"]
    assert "train.ica_lr, the preset's adapter rate; try --train.lr 0.0003" in lr_fix(_tc("--train.ica_lr", "3e-3"))
    with pytest.raises(ValueError, match="train.ica_lr=-0.001 must be > 0"):
        load_config(None, ["--train.ica_lr", "-1e-3"])


def test_resolved_learning_rate_is_saved_and_reads_back_equal(tmp_path):
    cfg = load_config(None, ["--train.trainable", "full"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.train.lr == TRAINABLE_DEFAULTS["full"]["lr"] and again == cfg
    assert "lr" not in again.train.defaulted  # read from a file: explicit from now on
    assert DVAConfig().train.lr == 1e-3


def test_collapse_keys_are_validated():
    with pytest.raises(ValueError, match="train.on_collapse='halt' is not one of stop, warn"):
        load_config(None, ["--train.on_collapse", "halt"])
    with pytest.raises(ValueError, match="train.collapse_fraction=1.5 must be"):
        load_config(None, ["--train.collapse_fraction", "1.5"])
    with pytest.raises(ValueError, match="train.collapse_cos=0.0 must be > 0"):
        load_config(None, ["--train.collapse_cos", "0"])


def test_fix_names_the_learning_rate_and_where_it_came_from():
    assert lr_fix(_tc("--train.trainable", "full", "--train.lr", "1e-3")) == (
        "lower train.lr (now 0.001, set in the config; try --train.lr 0.0001, the default for train.trainable=full)")
    assert "the default for train.trainable=full; try --train.lr 1e-05" in lr_fix(_tc("--train.trainable", "full"))
    assert "now 0.001; try --train.lr 0.0001" in lr_fix(_tc("--train.lr", "1e-3"))
    assert lr_warning(_tc("--train.trainable", "full", "--train.lr", "1e-3")).startswith(
        "train.lr=0.001 is 10x the default for train.trainable=full")
    assert lr_warning(_tc("--train.trainable", "full")) is None  # the default itself
    assert lr_warning(_tc("--train.lr", "1")) is None  # adapters: no table to compare with


# --------------------------------------------------------------------------- the checks
def test_step_check_catches_non_finite_loss_and_gradients():
    g = Guard(_tc("--train.lr", "0.5"), eval_classes=50)
    assert g.check_step(3, 2.5, 4.0) is None
    f = g.check_step(7, math.nan, 4.0)
    assert f.kind == "non-finite loss" and f.step == 7 and "lower train.lr (now 0.5" in f.fix
    assert "at step 7" in f.message() and "Likely fix" in f.message()
    assert g.check_step(8, 2.5, math.inf).kind == "non-finite gradient"
    assert g.check_step(8, 2.5, math.inf, scaled=True) is None  # the AMP loss scaler skips such steps itself


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx(2 ** -0.5)


def test_batch_check_catches_collapsed_zero_and_non_finite_embeddings():
    g = Guard(_tc(), eval_classes=10)
    spread = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    assert g.check_batch(10, spread) is None
    same = torch.ones(32, 64) + 1e-4 * spread
    f = g.check_batch(20, same)
    assert f.kind == "embeddings" and "mean pairwise cosine 1.0000 > train.collapse_cos=0.99" in f.figure
    assert "zero" in g.check_batch(30, torch.zeros(32, 64)).figure
    bad = spread.clone()
    bad[3, 5] = math.nan
    assert "not finite" in g.check_batch(40, bad).figure
    g.reference_cos = mean_pairwise_cosine(same) + 1e-6  # the frozen backbone's were that close: no collapse
    assert g.check_batch(50, same) is None
    assert Guard(_tc("--train.collapse_cos", "1"), 10).check_batch(20, same) is None  # off


def test_eval_check_compares_with_the_frozen_backbone_or_chance():
    g = Guard(_tc(), eval_classes=50, split="val")
    assert g.check_eval(92, {"map@r": 0.30, "recall@1": 0.70}, FROZEN) is None
    f = g.check_eval(92, {"map@r": 0.013, "recall@1": 0.020}, FROZEN)
    assert f.kind == "evaluation" and f.step == 92
    assert f.figure == ("MAP@R 0.013 on the val split at step 92, below train.collapse_fraction=0.5 x the frozen "
                        "backbone's 0.400 (chance: 0.020)")
    assert g.check_eval(92, {"map@r": 0.30, "recall@1": 0.30}, FROZEN).figure.startswith("R@1 0.300")
    nan = g.check_eval(92, {"map@r": math.nan, "recall@1": 0.7}, FROZEN)  # a diverged model's figure
    assert nan.kind == "evaluation" and nan.step == 92
    assert nan.figure == ("MAP@R nan on the val split at step 92, below train.collapse_fraction=0.5 x the frozen "
                          "backbone's 0.400 (chance: 0.020)")
    # Without a frozen figure: near chance (1/50) only.
    assert "near chance (0.020)" in g.check_eval(5, {"map@r": 0.01, "recall@1": 0.025}, None).figure
    assert g.check_eval(5, {"map@r": 0.05, "recall@1": 0.20}, None) is None
    assert Guard(_tc("--train.collapse_fraction", "0"), 50).check_eval(5, {"map@r": 0.0, "recall@1": 0.0},
                                                                      FROZEN) is None
