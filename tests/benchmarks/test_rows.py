"""benchmarks._rows.train_row: a benchmark row cut off mid-training continues; one it cannot resume starts afresh."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _helpers import Crash, crash_at
from safetensors.torch import load_file

import dva_train.train as T
from benchmarks._rows import train_row
from dva.config import load_config


def _cfg(root, out, *extra):
    return load_config(None, [
        "--data.dataset", "synthetic", "--data.root", str(root), "--output_dir", str(out),
        "--backbone.weights", "bundled", "--backbone.img_size", "64", "--ica.rank", "8",
        "--opa.box_source", "annotations", "--train.classes_per_batch", "4", "--train.images_per_class", "2",
        "--train.eval_frozen", "false", "--train.log_every", "1", "--train.batch_size_eval", "32",
        "--train.steps", "6", "--train.save_every", "3", "--data.val_classes", "0", *extra])


def _train_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "train"]


@pytest.fixture(scope="module")
def straight(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rows") / "straight"
    T.train(_cfg(synthetic_root, out), progress=False)
    return out


def test_an_interrupted_row_continues_to_the_uninterrupted_result(synthetic_root, tmp_path, straight):
    out = tmp_path / "row"
    with pytest.raises(Crash):
        T.train(_cfg(synthetic_root, out), progress=False, on_step=crash_at(4))  # state saved at step 3
    summary = train_row(_cfg(synthetic_root, out))
    assert summary["resumed"] is True and summary["steps"] == 6 and summary["status"] == "completed"
    steps = [r["step"] for r in _train_rows(out)]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # steps 1-3 not trained again (4 ran before the cut, lost with it)
    a, b = load_file(straight / "last.safetensors"), load_file(out / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_row_whose_state_cannot_be_resumed_trains_afresh(synthetic_root, tmp_path, capsys):
    out = tmp_path / "row"
    with pytest.raises(Crash):
        T.train(_cfg(synthetic_root, out), progress=False, on_step=crash_at(4))
    summary = train_row(_cfg(synthetic_root, out, "--train.lr", "0.0123"))  # another config: no silent resume
    assert "resumed" not in summary and summary["steps"] == 6
    assert "not resumed" in capsys.readouterr().out
    runs = [r["run"] for r in _train_rows(out)]
    assert [r["step"] for r in _train_rows(out)][-6:] == [1, 2, 3, 4, 5, 6] and len(set(runs)) == 2


def test_a_fresh_row_trains_from_the_start(synthetic_root, tmp_path):
    summary = train_row(_cfg(synthetic_root, tmp_path / "row"))
    assert "resumed" not in summary and [r["step"] for r in _train_rows(tmp_path / "row")] == [1, 2, 3, 4, 5, 6]
