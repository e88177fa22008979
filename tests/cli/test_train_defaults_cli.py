"""Good defaults on your own photos: `dva train --preset`, batch fitting, validation by default
(the test split never selects or stops), early stopping, and `dva eval --split all`."""
import json
from pathlib import Path

import pytest

from dva.config import load_config, presets
from dva_cli.cli import main


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory) -> Path:
    """A generated class-per-folder tree of 5 classes (the open protocol trains on 2, tests on 3)."""
    from dva.data import make_synthetic

    root = tmp_path_factory.mktemp("five")
    make_synthetic(str(root), num_classes=5, per_class=8, size=64, seed=1)
    return root / "images"


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> Path:
    """24 classes: 12 train classes, enough for data.val_classes=auto to hold 2 out."""
    from dva.data import make_synthetic

    root = tmp_path_factory.mktemp("many")
    make_synthetic(str(root), num_classes=24, per_class=6, size=64, seed=2)
    return root


def test_presets_are_packaged_with_one_line_each_and_the_benchmark_values():
    names = presets()
    assert sorted(names) == ["lite0", "lite1", "lite2", "mobilenetv2", "vit_s14"]
    assert all(line and "\n" not in line for line in names.values())
    lite2, vit = load_config("lite2"), load_config("vit_s14")
    assert (lite2.backbone.name, lite2.backbone.img_size, lite2.ica.rank, lite2.ica.blocks) == \
        ("tf_efficientnet_lite2", 260, 4, "-3:")
    assert (vit.backbone.name, vit.backbone.img_size, vit.ica.target, vit.ica.rank, vit.ica.blocks) == \
        ("vit_small_patch14_dinov2", 126, "qk", 8, "-8:")
    for name in names:  # made for your own photos: a folder, the data-scaled budget, validation by default
        cfg = load_config(name)
        assert (cfg.data.dataset, cfg.train.steps, cfg.train.epochs, cfg.data.val_classes) == ("folder", 0, 0, -1)
        assert cfg.backbone.weights == "bundled"
    assert "not validated" in names["lite0"] and "not validated" in names["lite1"]


def test_train_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name, line in presets().items():
        assert f"  {name:<12} {line}" in out  # one line each, from the preset file's first line
    assert "--preset" in out


def test_train_help_shows_each_presets_measured_figures(capsys, monkeypatch, tmp_path):
    """The figures come from the packaged file the defaults benchmark writes (runs of the packaged
    preset only); a preset without runs shows none."""
    import dva.config as dc

    figs = tmp_path / "preset_figures.json"
    figs.write_text(json.dumps({"mobilenetv2": {"cub100": [79.1, 85.8], "pets37": [92.6, 92.6]}}))
    monkeypatch.setattr(dc, "PRESET_FIGURES", figs)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    after = out.split(f"  mobilenetv2  {presets()['mobilenetv2']}\n", 1)[1].split("\n", 1)[0]
    assert after.strip() == "test R@1 frozen -> default command: cub100 79.1 -> 85.8, pets37 92.6 -> 92.6"
    assert out.count("test R@1 frozen -> default command") == 1  # lite2 etc.: no runs, no figures
    monkeypatch.setattr(dc, "PRESET_FIGURES", tmp_path / "absent.json")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "test R@1 frozen" not in capsys.readouterr().out


def test_preset_trains_a_5_class_folder_end_to_end_with_no_other_flag(five_classes, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "mobilenetv2", "--data.root", str(five_classes), "--output_dir", str(out),
               "--backbone.img_size", "64", "--no-progress"])  # the size: for speed only
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    # 2 training classes (< 8 per batch, < 10 for validation): the batch fits, the budget is the floor.
    assert summary["batch"] == {"classes_per_batch": 2, "images_per_class": 8}
    assert summary["steps"] == 240 and summary["budget"]["rule"].startswith("train.steps=auto")
    assert summary["eval_split"] == "test" and summary["checkpoints"]["best"] is None  # nothing chosen on test
    setup = next(r for r in _log(out) if r.get("kind") == "setup")
    assert (setup["classes_per_batch"], setup["images_per_class"], setup["early_stopping"]) == (2, 8, 0)
    notes = " ".join(r.get("message", r.get("note", "")) for r in _log(out) if r.get("kind") == "validation")
    assert "too few to hold some out" in notes
    evals = [r for r in _log(out) if r.get("kind") == "eval" and not r.get("frozen")]
    assert len(evals) == 1  # the test split: scored once, at the end
    assert "test split" in capsys.readouterr().out


def _spy(monkeypatch):
    """Record, in order, every best.safetensors selection (with its split) and every test-split embedding."""
    import dva_train.train as tr
    from dva_train.state import TrainState

    events = []
    save_best, embed = TrainState.save_best, tr.embed_paths

    def spy_best(self, out, metrics, epoch, split):
        events.append(("select", split, self.pos.step))
        return save_best(self, out, metrics, epoch, split)

    def spy_embed(model, paths, *a, **k):
        events.append(("embed", len(paths), None))
        return embed(model, paths, *a, **k)

    monkeypatch.setattr(TrainState, "save_best", spy_best)
    monkeypatch.setattr(tr, "embed_paths", spy_embed)
    return events


def _args(root, out, *extra):
    return ["train", "--config", "demo", "--data.dataset", "synthetic", "--data.root", str(root),
            "--output_dir", str(out), "--backbone.img_size", "64", "--opa.box_source", "annotations",
            "--train.batch_size_eval", "64", "--train.threads", "1", "--no-progress", *extra]


def test_by_default_selection_and_stopping_see_only_the_validation_split(many_classes, tmp_path, monkeypatch, capsys):
    events = _spy(monkeypatch)
    out = tmp_path / "run"
    assert main(_args(many_classes, out, "--train.steps", "6")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_split"] == "val"
    selections = [e for e in events if e[0] == "select"]
    assert selections and all(split == "val" for _, split, _ in selections)
    # The test split (12 classes x 6 images) is embedded only after the last selection: trained + frozen.
    first_test = next(i for i, e in enumerate(events) if e[0] == "embed")
    assert all(e[0] == "embed" for e in events[first_test:]) and [e[1] for e in events[first_test:]] == [72, 72]
    assert summary["test_model"]["step"] == summary["checkpoints"]["best"]["step"]
    assert set(summary["test_metrics"]) >= {"recall@1", "map@r"} and summary["test_frozen_metrics"]
    tests = [r for r in _log(out) if r.get("kind") == "eval" and r.get("split") == "test"]
    assert len(tests) == 1
    printed = capsys.readouterr().out
    assert "val split" in printed and "test split" in printed and "frozen" in printed


def test_early_stopping_acts_on_the_validation_split_only(many_classes, tmp_path):
    # proxy_lr 0 and a negligible lr: no evaluation beats the frozen one, so patience runs out.
    frozen_like = ("--train.lr", "1e-12", "--train.proxy_lr", "0", "--train.epochs", "6", "--train.patience", "2",
                   "--train.classes_per_batch", "4", "--train.images_per_class", "2")
    out = tmp_path / "val"
    assert main(_args(many_classes, out, *frozen_like)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["early_stop"] and s["early_stop"].startswith("early stop at step")
    assert s["steps"] < 6 * (60 // 8)  # 10 classes x 6 images in batches of 8: 7 per epoch
    last = (out / "last.safetensors").read_bytes()
    assert main([*_args(many_classes, out, *frozen_like), "--resume"]) == 0  # it stays stopped
    again = json.loads((out / "summary.json").read_text())
    assert again["steps"] == s["steps"] and again["early_stop"] == s["early_stop"]
    assert (out / "last.safetensors").read_bytes() == last
    out = tmp_path / "test"  # the same run evaluating on the test split never stops early
    assert main(_args(many_classes, out, *frozen_like, "--data.val_classes", "0")) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["early_stop"] is None and s["steps"] == 6 * (72 // 8)


def test_eval_split_all_scores_every_image_of_the_folder(five_classes, capsys):
    assert main(["eval", "--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size", "64",
                 "--dataset", "folder", "--root", str(five_classes), "--split", "all", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["split"], res["queries"], res["classes"]) == ("all", 40, 5)
    assert main(["eval", "--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size", "64",
                 "--dataset", "folder", "--root", str(five_classes), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] < 40  # the test split alone: fewer


def test_the_closing_tables_say_which_model_each_scores():
    """A validated run scores two models: the last on validation, the chosen one on test; the columns
    say which (a run whose chosen model is the last keeps one word, "trained")."""
    from dva_cli.commands.train import report

    m = {"recall@1": 0.5, "recall@2": 0.6, "recall@4": 0.7, "recall@8": 0.8, "map@r": 0.3}
    summary = {"eval_split": "val", "steps": 240, "metrics": m, "frozen_metrics": m, "test_metrics": m,
               "test_frozen_metrics": m, "test_model": {"step": 96, "chosen_on": "val"},
               "checkpoints": {"best": {"path": "b", "step": 96, "map@r": 0.3125, "split": "val", "what": "w"}}}
    lines = report(summary).splitlines()
    val = next(ln for ln in lines if ln.startswith("val split"))
    test = next(ln for ln in lines if ln.startswith("test split"))
    assert val.split() == ["val", "split", "frozen", "last@240", "change"]
    assert test.split() == ["test", "split", "frozen", "best@96", "change"]
    assert "(test: the model validation chose, step 96, validation MAP@R 31.25; scored once" in report(summary)
    # Percent, as `dva eval` prints: frozen, trained and the change in points.
    assert next(ln for ln in lines if ln.startswith("R@1")).split() == ["R@1", "50.00", "50.00", "+0.00"]
    same = {**summary, "test_model": {"step": 240}, "checkpoints": {}}
    assert [ln.split()[3] for ln in report(same).splitlines() if "split" in ln[:10]] == ["trained", "trained"]
