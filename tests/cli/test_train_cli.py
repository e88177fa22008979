"""`dva train` end to end (src/dva_cli/commands/train.py): exit codes, the final table, the
collapse guard, input checks before any expensive work, and --resume-with-changes."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dva_cli.cli import main


def _args(root, out, *extra):
    return ["train", "--data.dataset", "synthetic", "--data.root", str(root), "--output_dir", str(out),
            "--backbone.img_size", "64", "--ica.rank", "4", "--opa.box_source", "annotations",
            "--train.classes_per_batch", "4", "--train.images_per_class", "2", "--train.batch_size_eval", "32",
            "--train.threads", "1", "--train.log_every", "2", "--no-progress",
            "--data.val_classes", "0", *extra]  # evaluate (and keep best.safetensors) on the test split, as before


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- the collapse guard
def test_a_diverging_run_stops_with_exit_3_and_keeps_the_best_checkpoint(synthetic_root, tmp_path, capsys):
    from dva.checkpoint import load_checkpoint
    from dva.model import build_model

    out = tmp_path / "run"
    rc = main(_args(synthetic_root, out, "--train.trainable", "full", "--train.lr", "1.0", "--train.epochs", "2"))
    cap = capsys.readouterr()
    assert rc == 3, cap.err[-2000:]
    assert "training diverged at step" in cap.err
    assert "Likely fix: lower train.lr (now 1, set in the config; try --train.lr 0.0001" in cap.err
    assert "train.lr=1 is 10000x the default for train.trainable=full" in cap.err  # warned before training
    assert "WARNING: the trained model is worse than the frozen backbone" in cap.out
    assert "STOPPED: training diverged" in cap.out and "best.safetensors" in cap.out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["collapse"]["step"] == summary["steps"] < 16
    assert summary["checkpoints"]["best"]["step"] == 0 and summary["worse_than_frozen"] is True
    rows = _log(out)
    stop = [r for r in rows if r["kind"] == "collapse"]
    assert len(stop) == 1 and stop[0]["action"] == "stop" and "lower train.lr" in stop[0]["fix"]
    assert max(r["step"] for r in rows if r["kind"] == "train") <= stop[0]["step"]  # nothing trained after

    # best.safetensors = the step-0 model: it loads, and it is the frozen backbone, weight for weight.
    best, info = load_checkpoint(out / "best.safetensors")
    assert info["extra"]["step"] == 0 and info["extra"]["metrics"] == summary["frozen_metrics"]
    frozen = build_model(best.cfg, 0)
    ref = dict(frozen.encoder.named_parameters())
    for n, p in best.encoder.named_parameters():
        assert torch.equal(p, ref[n]), n
    last = load_file(out / "last.safetensors")
    assert any(not torch.equal(last[k], v) for k, v in load_file(out / "best.safetensors").items() if k in last)


def test_a_non_finite_loss_stops_before_the_update(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(_args(synthetic_root, out, "--train.lr", "1e30", "--train.epochs", "1"))  # adapters (ica)
    cap = capsys.readouterr()
    assert rc == 3, cap.err[-2000:]
    assert "(non-finite loss): the loss is nan. Likely fix: lower train.lr (now 1e+30, set in the config; " \
           "try --train.lr 0.001, the default for train.trainable=ica)" in cap.err
    assert "WARNING: the trained model is worse than the frozen backbone (its embeddings are not finite); use " in cap.out
    summary = json.loads((out / "summary.json").read_text())
    # Stopped before the update of the step whose loss was nan: the saved state is the step before.
    assert summary["collapse"]["step"] == summary["steps"] + 1
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == summary["steps"]
    best = load_file(out / "best.safetensors")
    assert all(torch.isfinite(t).all() for t in best.values())
    assert all(not t.any() for k, t in best.items() if k.endswith("up.weight"))  # step 0: zero-initialised ups


def test_warn_goes_on_to_the_end_and_says_so(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(_args(synthetic_root, out, "--train.trainable", "full", "--train.lr", "1.0", "--train.epochs", "1",
                    "--train.on_collapse", "warn"))
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 8 and summary["findings"]
    assert "going on (train.on_collapse=warn)" in cap.err
    assert "WARNING: the collapse guard tripped" in cap.out


@pytest.mark.parametrize("split", ["test", "val"])
def test_an_evaluation_finding_stops_on_validation_only(synthetic_root, tmp_path, capsys, monkeypatch, split):
    # Every evaluation "trips" (a stand-in for the guard's figure check): on validation the run
    # stops there; on the test split the figures may not decide anything, so it warns and goes on.
    from dva_train import guard

    monkeypatch.setattr(guard.Guard, "check_eval", lambda self, step, metrics, frozen: guard.Finding(
        "evaluation", step, "MAP@R 0.001 below the frozen backbone's", "lower train.lr"))
    out = tmp_path / "run"
    val = ["--data.val_classes", "2"] if split == "val" else []
    rc = main(_args(synthetic_root, out, "--train.epochs", "2", "--train.eval_every", "1", *val))
    cap = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for r in _log(out) if r["kind"] == "collapse"]
    if split == "test":
        assert rc == 0, cap.err[-2000:]
        assert summary["status"] == "completed" and summary["steps"] == summary["budget"]["steps"] == 16
        assert rows and {r["action"] for r in rows} == {"warn"}
        assert "an evaluation on the test split never decides when training ends" in cap.err
    else:
        assert rc == 3, cap.err[-2000:]
        assert summary["status"] == "stopped" and rows[0]["action"] == "stop" and summary["steps"] < 16


# --------------------------------------------------------------------------- input checks, at once
def test_classes_per_batch_above_the_training_classes_is_fitted_not_refused(synthetic_root):
    # Once refused; now every class goes into each batch, with as many images as the classes hold
    # (8 classes of 8 images, 9 x 2 asked: 8 x 3 = 24), and the log says so (dva_train.budget.fit_batch).
    from dva.config import load_config
    from dva_train.data import prepare_data

    tokens = [t for t in _args(synthetic_root, "unused", "--train.classes_per_batch", "9") if t not in ("train", "--no-progress")]
    cfg = load_config(None, tokens)
    d = prepare_data(cfg)
    assert (d.batch.classes, d.batch.images) == (8, 3)
    assert d.notes == ["batch: train.classes_per_batch=9 but the training split has 8 classes: 8 classes x 3 images "
                       "per batch instead of 9 x 2 (set --train.classes_per_batch / --train.images_per_class to choose)"]


def _relabelled(synthetic_root, tmp_path, keep):
    """A copy of the synthetic dataset listing only the images ``keep(label, index)`` accepts."""
    root = tmp_path / "data"
    root.mkdir(parents=True)
    (root / "images").symlink_to(Path(synthetic_root) / "images")
    lines = (Path(synthetic_root) / "labels.csv").read_text().splitlines()
    seen: dict[int, int] = {}
    rows = [lines[0]]
    for line in lines[1:]:
        label = int(line.rsplit(",", 1)[1])
        seen[label] = seen.get(label, 0) + 1
        if keep(label, seen[label] - 1):
            rows.append(line)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    shutil.copy(Path(synthetic_root) / "boxes.csv", root / "boxes.csv")
    return root


def test_single_image_classes_are_refused_at_once(synthetic_root, tmp_path, capsys):
    one_train = _relabelled(synthetic_root, tmp_path / "a", lambda c, i: c >= 8 or i == 0)
    assert main(_args(one_train, tmp_path / "ra", "--train.classes_per_batch", "2", "--train.images_per_class", "1")) == 2
    assert "training split: every class holds a single image (8 classes)" in capsys.readouterr().err
    one_test = _relabelled(synthetic_root, tmp_path / "b", lambda c, i: c < 8 or i == 0)
    assert main(_args(one_test, tmp_path / "rb")) == 2
    assert "test split: every class holds a single image (8 classes)" in capsys.readouterr().err


def test_values_too_large_fail_in_a_second_with_the_reason(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    for key, value, reason in (("--ica.rank", "100000000", "the width of each adapter's bottleneck"),
                               ("--train.images_per_class", "1000", "a batch holds classes_per_batch x"),
                               ("--backbone.img_size", "100000", "the input side in pixels")):
        assert main(_args(synthetic_root, out, key, value)) == 2
        err = capsys.readouterr().err.strip()
        assert f"{key[2:]}={value} must be" in err and reason in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()  # refused before the run folder


def test_cuda_without_cuda_fails_at_start(synthetic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with CUDA
    assert main(_args(synthetic_root, tmp_path / "run", "--train.device", "cuda")) == 2
    assert "device 'cuda': no CUDA device is available here (use cpu or auto)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # before the run folder


# --------------------------------------------------------------------------- table, resume, run ids
def test_table_resume_with_changes_and_run_ids(synthetic_root, tmp_path, capsys):
    from dva.retrieval.report import read_log

    out = tmp_path / "run"
    first = ("--train.epochs", "2", "--train.max_steps", "3")
    assert main(_args(synthetic_root, out, *first)) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:4] == ["test", "split", "frozen", "trained"])
    assert lines[head].split()[-1] == "change"
    assert [line.split()[0] for line in lines[head + 1:head + 6]] == ["R@1", "R@2", "R@4", "R@8", "MAP@R"]
    assert all(len(line.split()) == 4 for line in lines[head + 1:head + 6])  # name, frozen, trained, change
    assert any(line.startswith("trained = ") and "last.safetensors" in line for line in lines)

    # A changed config is refused on --resume, and accepted (and logged) with --resume-with-changes.
    more = ("--train.epochs", "2", "--train.max_steps", "5")
    assert main(_args(synthetic_root, out, *more, "--resume")) == 2
    err = capsys.readouterr().err
    assert "train.max_steps: 3 -> 5" in err and "--resume-with-changes" in err
    assert main(_args(synthetic_root, out, *more, "--resume-with-changes")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["status"] == "completed"
    rows = _log(out)
    resume = [r for r in rows if r["kind"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 3 and resume[0]["changes"] == {"train.max_steps": [3, 5]}
    assert len({r["run"] for r in rows}) == 1  # a resumed run keeps its run id
    boxes = [r for r in rows if r["kind"] == "boxes"]
    assert boxes[0]["confident"] == 64 and boxes[0]["note"].startswith("boxes 64 of 64")

    # Trained again from scratch in the same folder: refused, the run as it was; then with --overwrite.
    again = ("--train.epochs", "1", "--train.max_steps", "2")
    before = [(out / f).read_bytes() for f in ("last.safetensors", "summary.json", "log.jsonl", "config.yaml")]
    assert main(_args(synthetic_root, out, *again)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dva train: error: {out} holds a finished run (completed, 5 steps; ") and "\n" not in err
    assert "pass --resume to continue it" in err and "choose another --output_dir, or pass --overwrite" in err
    assert [(out / f).read_bytes() for f in ("last.safetensors", "summary.json", "log.jsonl", "config.yaml")] == before
    assert main(_args(synthetic_root, out, *again, "--overwrite")) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    # A new run id; the report reads that run only.
    ids = [r["run"] for r in _log(out)]
    assert len(set(ids)) == 2 and ids[-1] != ids[0]
    train, evals = read_log(out / "log.jsonl")
    assert [r["step"] for r in train] == [2] and {r["run"] for r in train + evals} == {ids[-1]}
    assert [r["step"] for r in read_log(out / "log.jsonl", run=ids[0])[0]] == [2, 4]  # log_every 2
