"""Trainer input checks and setup reporting: device, split vs batch settings, boxes, run ids."""
import json
from types import SimpleNamespace

import pytest
import torch

from dva.config import load_config
from dva_train.data import prepare_data
from dva_train.distributed import init_distributed
from dva_train.runlog import RunLog
from dva_train.sampler import epoch_batches


def _cfg(root, *extra):
    return load_config(None, ["--data.dataset", "synthetic", "--data.root", str(root), *extra])


def test_init_distributed_refuses_a_device_that_is_not_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with CUDA
    with pytest.raises(ValueError, match="no CUDA device is available here"):
        init_distributed("cuda")
    assert init_distributed("auto").device == torch.device("cpu")


def test_images_per_class_above_the_smallest_class_is_noted_and_repeats_images(synthetic_root):
    d = prepare_data(_cfg(synthetic_root, "--train.images_per_class", "9"))  # 8 images per class
    assert d.notes == [("train.images_per_class=9 but 8 of 8 training classes have fewer images (smallest: 8): "
                        "their batches repeat images (the sampler draws a class's images again once they run out)")]
    assert prepare_data(_cfg(synthetic_root)).notes == []
    batch = epoch_batches(d.train_labels, 2, 9, seed=0, epoch=0)[0]
    assert len(batch) == 18 and len(set(batch.tolist())) < 18  # what the note says: repeats within a batch


def test_classes_per_batch_is_fitted_to_the_split_with_validation_classes(synthetic_root):
    # 8 training classes, 2 held out: 6 left for the default 8 classes per batch -> 6 x 6 (about 32 images).
    d = prepare_data(_cfg(synthetic_root, "--data.val_classes", "2"))
    assert (d.batch.classes, d.batch.images, d.num_classes) == (6, 6, 6)
    assert d.notes[-1] == ("batch: train.classes_per_batch=8 but the training split has 6 classes: 6 classes x 6 "
                           "images per batch instead of 8 x 4 (set --train.classes_per_batch / "
                           "--train.images_per_class to choose)")


def test_a_training_split_of_fewer_than_two_classes_is_refused_by_name():
    from dva_train.data import check_split

    cfg = load_config(None, [])
    one = [SimpleNamespace(path=f"a{i}.jpg", label=0, box=None) for i in range(4)]
    with pytest.raises(ValueError, match=r"the training split has 0 classes: a proxy loss needs at least 2 classes"):
        check_split(cfg, [], one, "test")
    with pytest.raises(ValueError, match=r"has 1 class \(data.val_classes holds 3 more out for validation: "
                                         r"--data.val_classes 0 keeps them\): a proxy loss"):
        check_split(cfg, one, one, "val", n_val=3)


def _fake_run(cfg, paths):
    logged = []
    return SimpleNamespace(cfg=cfg, data=SimpleNamespace(train_paths=paths), log=SimpleNamespace(write=logged.append))


def test_box_report_says_how_many_boxes_are_confident_and_what_happens_to_the_rest():
    from dva_train.train import _box_report

    cfg = load_config(None, [])  # self-localisation, opa.min_score=-1 -> 0.15
    boxes = {"a": ((0, 0, 1, 1), 0.5), "b": ((0, 0, 1, 1), 0.1)}
    n, row = _box_report(_fake_run(cfg, ["a", "b", "c"]), boxes)
    assert n == 1 and (row["confident"], row["below"], row["missing"], row["threshold"]) == (1, 1, 1, 0.15)
    assert row["note"] == ("boxes 1 of 3: 1 training images got a confident self box (score >= 0.15, the default for "
                           "opa.box_source=self; opa.min_score=-1); 1 scored below it and 1 got no box: for those "
                           "x_disc = x and no background term")
    n, row = _box_report(_fake_run(load_config(None, ["--opa.min_score", "0.05"]), ["a", "b"]), boxes)
    assert n == 2 and "score >= 0.05, opa.min_score=0.05" in row["note"]
    n, row = _box_report(_fake_run(load_config(None, ["--opa.enabled", "false"]), ["a"]), boxes)
    assert n == 0 and row["note"].startswith("OPA off")


def test_every_log_row_carries_the_run_id_and_alerts_print_when_quiet(tmp_path, capsys):
    from dva.retrieval.report import read_log

    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"kind": "train", "step": 1, "loss": 9.0}) + "\n")  # before run ids
    assert [r["step"] for r in read_log(path)[0]] == [1]  # a log without ids: every row
    a = RunLog(path, True, quiet=True)
    a.write(kind="train", step=1, loss=2.0)
    a.alert("something to see", kind="warning")
    b = RunLog(path, True, quiet=True)
    b.write(kind="train", step=1, loss=1.0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert a.run_id != b.run_id and [r.get("run") for r in rows] == [None, a.run_id, a.run_id, b.run_id]
    assert rows[2]["message"] == "something to see"
    assert "something to see" in capsys.readouterr().err
    assert [r["loss"] for r in read_log(path)[0]] == [1.0]  # the latest run only
    assert [r["loss"] for r in read_log(path, run=None)[0]] == [9.0, 2.0, 1.0]
    assert RunLog(path, True, run_id="x").run_id == "x"  # a resumed run passes its saved id
