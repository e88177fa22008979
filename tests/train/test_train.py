"""End-to-end training (src/dva_train/train.py): loss goes down, resume is exact, DDP equals one process."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dva.config import load_config


def _cfg(root, out, *extra):
    return load_config(None, [
        "--data.dataset", "synthetic", "--data.root", str(root), "--output_dir", str(out),
        "--backbone.weights", "bundled", "--backbone.img_size", "64",
        "--ica.rank", "8", "--opa.box_source", "annotations",
        "--train.classes_per_batch", "4", "--train.images_per_class", "2", "--train.cache_flips", "true",
        "--train.eval_frozen", "false", "--train.log_every", "1", "--train.batch_size_eval", "32", *extra])


def _read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_short_training_lowers_the_loss(synthetic_root, tmp_path):
    from dva_train.train import train

    cfg = _cfg(synthetic_root, tmp_path / "run", "--train.epochs", "4", "--train.lr", "3e-3")
    summary = train(cfg, progress=False)
    losses = [r["loss"] for r in _read_log(cfg.output_dir) if r["kind"] == "train"]
    assert len(losses) == summary["steps"] == 4 * (64 // 8)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    assert summary["boxes"] == 64  # every synthetic image has an annotated box -> OPA views used
    first_train_row = next(r for r in _read_log(cfg.output_dir) if r["kind"] == "train")
    assert {"loss_disc", "loss_bg", "loss_dpt"} <= set(first_train_row)
    assert 0.0 <= summary["metrics"]["recall@1"] <= 1.0
    assert Path(summary["checkpoint"]).is_file()


def test_resume_after_a_crash_is_exact(synthetic_root, tmp_path):
    import dva_train.train as T

    args = ("--train.epochs", "2", "--train.save_every", "3")
    T.train(_cfg(synthetic_root, tmp_path / "straight", *args), progress=False)

    class Crash(Exception):
        pass

    seen = []

    def crash(step):  # train(on_step=...): called after every step, its checkpoint written
        seen.append(step)
        if step == 11:  # mid-epoch 2, after the checkpoint of step 9
            raise Crash

    cfg = _cfg(synthetic_root, tmp_path / "crashed", *args)
    with pytest.raises(Crash):
        T.train(cfg, progress=False, on_step=crash)
    assert seen == list(range(1, 12))
    state = torch.load(tmp_path / "crashed/train_state.pt", weights_only=True)
    assert state["step"] == 9 and state["epoch"] == 1 and state["batch_in_epoch"] == 1
    T.train(cfg, resume=True, progress=False)
    a = load_file(tmp_path / "straight/last.safetensors")
    b = load_file(tmp_path / "crashed/last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(r["kind"] == "resume" for r in _read_log(tmp_path / "crashed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Launched through a two-line script rather than the CLI: this tests training, wherever the
# command line lives.
_MAIN = """import sys
from dva.config import load_config
from dva_train.train import train
train(load_config(None, sys.argv[1:]), progress=False)
"""


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_equal_one(synthetic_root, tmp_path):
    args = ["--data.dataset", "synthetic", "--data.root", str(synthetic_root), "--backbone.weights", "bundled",
            "--backbone.img_size", "64", "--ica.rank", "8", "--opa.box_source", "annotations",
            "--train.classes_per_batch", "4", "--train.images_per_class", "2", "--train.max_steps", "4",
            "--train.epochs", "1", "--train.eval_frozen", "false", "--train.threads", "1",
            # Adam divides by sqrt(v): with eps 1e-8 a gradient element that is ~0 up to float32
            # reduction-order noise gets a full-size update of random sign. A larger eps keeps the
            # comparison about what DDP computes, not about that amplification.
            "--train.adam_eps", "1e-4"]
    main = tmp_path / "train_main.py"
    main.write_text(_MAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(main), "--output_dir", str(tmp_path / "one"), *args],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                          "--master_port", str(_free_port()), str(main),
                          "--output_dir", str(tmp_path / "two"), *args],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(tmp_path / "one/last.safetensors")
    b = load_file(tmp_path / "two/last.safetensors")
    init = {k for k in a if k.endswith("up.weight")}
    assert init and all(a[k].abs().sum() > 0 for k in init)  # training moved the zero-initialised ups
    # One Adam step moves a weight by up to its lr (adapters 1e-3, proxies 1e-2): the two runs
    # agree to 1/10 of one step in every element and to ~1/1000 on average.
    for k in a:
        lr = 1e-2 if k == "proxies" else 1e-3
        torch.testing.assert_close(b[k], a[k], atol=0.1 * lr, rtol=0)
        assert float((b[k] - a[k]).abs().mean()) < 1e-3 * lr, k
    ma = json.loads((tmp_path / "one/summary.json").read_text())["metrics"]
    mb = json.loads((tmp_path / "two/summary.json").read_text())["metrics"]
    assert ma["recall@1"] == pytest.approx(mb["recall@1"], abs=1 / 64 + 1e-9)  # gathered once per image


def test_online_augmentation_path_without_prefix_cache(synthetic_root, tmp_path):
    from dva_train.train import train

    cfg = _cfg(synthetic_root, tmp_path / "online", "--train.cache_prefix", "off", "--train.augment", "standard",
               "--train.max_steps", "3", "--train.epochs", "1")
    s = train(cfg, progress=False)
    assert s["prefix_cache"] is False and s["steps"] == 3
    rows = [r for r in _read_log(cfg.output_dir) if r["kind"] == "train"]
    assert len(rows) == 3 and all(r["loss"] == r["loss"] and r["loss"] > 0 for r in rows)  # finite
    assert s["metrics"]["recall@1"] > 0.2  # 8 test classes: chance is ~0.12


def test_self_boxes_on_the_view_share_the_frozen_pass(synthetic_root, tmp_path, monkeypatch):
    """opa.loc_view=view: the training images go through the frozen network once for boxes + x
    prefixes (no separate x prefix pass), and the run equals one whose x prefixes were computed apart."""
    from dva.runtime.frozen import FrozenRunner
    from dva_train import train as train_mod

    calls: dict[str, int] = {}

    def counted(name):
        orig = getattr(FrozenRunner, name)

        def f(self, x):
            calls[name] = calls.get(name, 0) + len(x)
            return orig(self, x)
        return f

    for name in ("prefix", "activation_map", "prefix_and_map"):
        monkeypatch.setattr(FrozenRunner, name, counted(name))
    common = ("--opa.box_source", "self", "--opa.loc_view", "view", "--train.cache_flips", "false",
              "--train.frozen_runtime", "torch", "--train.epochs", "1", "--train.cache_dir", "")
    one = train_mod.train(_cfg(synthetic_root, tmp_path / "one", *common), progress=False)
    # 64 training images: one pass for boxes + x, then the object and background views; 64 test images.
    assert calls == {"prefix_and_map": 64, "prefix": 64 * 2 + 64}, calls

    calls.clear()  # the same run with the x prefixes computed by a pass of their own
    boxes_alone = train_mod.compute_boxes
    monkeypatch.setattr(train_mod, "compute_boxes", lambda *a, **k: boxes_alone(*a[:8], **k))
    two = train_mod.train(_cfg(synthetic_root, tmp_path / "two", *common), progress=False)
    assert calls == {"activation_map": 64, "prefix": 64 * 3 + 64}, calls
    read = lambda run: json.loads((tmp_path / run / "boxes.json").read_text())["boxes"]  # noqa: E731
    assert read("one") == read("two") and one["boxes"] == two["boxes"] > 0
    for k, v in one["metrics"].items():
        assert v == pytest.approx(two["metrics"][k], abs=1e-9), k


def test_training_refuses_a_load_time_adapter_scale(tmp_path):
    from dva.config import load_config
    from dva_train.train import train

    cfg = load_config(None, ["--ica.alpha", "0.5", "--output_dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=r"ica.alpha=0.5 scales trained adapters at load time"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written
