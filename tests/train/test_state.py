"""Save and resume (src/dva_train/state.py): one consistent unit, and no silent config changes."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from _helpers import Crash, crash_at
from safetensors.torch import load_file

import dva_train.state as S
import dva_train.train as T
from dva.config import DVAConfig, load_config


def _cfg(root, out, *extra):
    return load_config(None, [
        "--data.dataset", "synthetic", "--data.root", str(root), "--output_dir", str(out),
        "--backbone.weights", "bundled", "--backbone.img_size", "64", "--ica.rank", "8",
        "--opa.box_source", "annotations", "--train.classes_per_batch", "4", "--train.images_per_class", "2",
        "--train.cache_flips", "true", "--train.eval_frozen", "false", "--train.log_every", "1",
        "--train.batch_size_eval", "32", "--train.epochs", "1", "--train.max_steps", "6", "--train.save_every", "3",
        "--data.val_classes", "0", *extra])  # the test split chooses best.safetensors, as these runs expect


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]




@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory):
    """A straight 6-step run, and the same run killed after step 4 (state saved at step 3)."""
    base = tmp_path_factory.mktemp("state")
    T.train(_cfg(synthetic_root, base / "straight"), progress=False)
    with pytest.raises(Crash):
        T.train(_cfg(synthetic_root, base / "crashed"), progress=False, on_step=crash_at(4))
    return base


def _copy_crashed(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "crashed", out)
    return out


def _assert_same_as_straight(runs, out):
    a, b = load_file(runs / "straight/last.safetensors"), load_file(Path(out) / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_state_holds_tensors_step_and_config(runs):
    st = torch.load(runs / "crashed/train_state.pt", weights_only=True)
    assert st["format"] == S.FORMAT and (st["step"], st["epoch"], st["batch_in_epoch"]) == (3, 0, 3)
    assert st["config"]["train"]["max_steps"] == 6 and st["config"]["output_dir"].endswith("crashed")
    assert st["batch"] == [4, 2]  # the composition the run trained with (compared on resume)
    last = load_file(runs / "crashed/last.safetensors")
    assert st["trainable"].keys() == last.keys() and "proxies" in last
    for k in last:  # no crash between the writes of step 3: the two files agree
        assert torch.equal(st["trainable"][k], last[k]), k


def test_crash_between_checkpoint_and_state_resumes_at_the_state_step(runs, synthetic_root, tmp_path, monkeypatch):
    out = tmp_path / "torn"
    write = S._write_state_file

    def torn(path, state):
        if state["step"] == 6:  # last.safetensors of step 6 is on disk already
            raise Crash
        write(path, state)

    monkeypatch.setattr(S, "_write_state_file", torn)
    with pytest.raises(Crash):
        T.train(_cfg(synthetic_root, out), progress=False)
    monkeypatch.setattr(S, "_write_state_file", write)
    st = torch.load(out / "train_state.pt", weights_only=True)
    last = load_file(out / "last.safetensors")
    assert st["step"] == 3 and not torch.equal(st["trainable"]["proxies"], last["proxies"])  # a torn pair

    T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["step"] == 3 and row["last_checkpoint_step"] == 6  # says the checkpoint was ahead
    # Step-3 adapters with the step-3 optimiser: the continuation is exactly the straight run.
    _assert_same_as_straight(runs, out)


def test_a_best_checkpoint_ahead_of_the_state_is_taken_on_resume(runs, synthetic_root, tmp_path):
    # best.safetensors is written before the state that records it; a kill between the two leaves
    # the file ahead. Here: the crashed run (state at step 3, no best yet) beside the step-6 best.
    out = _copy_crashed(runs, tmp_path)
    shutil.copy(runs / "straight/best.safetensors", out / "best.safetensors")
    from safetensors import safe_open
    with safe_open(str(out / "best.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["extra"])
    assert meta["step"] == 6 and torch.load(out / "train_state.pt", weights_only=True)["best_step"] == -1
    T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["step"] == 3 and row["best_checkpoint_step"] == 6
    st = torch.load(out / "train_state.pt", weights_only=True)
    # The step-6 evaluation again: the improvement it was in the straight run (stale 0, as there),
    # the file kept; the continuation is the straight run's.
    straight = torch.load(runs / "straight/train_state.pt", weights_only=True)
    assert st["best_step"] == 6 and st["best"] == pytest.approx(meta["metrics"]["map@r"])
    assert st["stale"] == straight["stale"] == 0
    _assert_same_as_straight(runs, out)
    # A file behind the state's best (e.g. an older copy put back) is not adopted: the state stands.
    behind = tmp_path / "behind"
    shutil.copytree(runs / "crashed", behind)
    shutil.copy(runs / "straight/best.safetensors", behind / "best.safetensors")  # step 6
    state = torch.load(behind / "train_state.pt", weights_only=True)
    state["best"], state["best_step"] = 0.99, 7  # as if a later evaluation had been better
    torch.save(state, behind / "train_state.pt")
    T.train(_cfg(synthetic_root, behind), resume=True, progress=False)
    assert "best_checkpoint_step" not in [r for r in _log(behind) if r["kind"] == "resume"][-1]
    assert torch.load(behind / "train_state.pt", weights_only=True)["best_step"] == 7


def test_resume_refuses_a_changed_config(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    files = ("train_state.pt", "log.jsonl", "config.yaml", "last.safetensors")
    before = [(out / f).read_bytes() for f in files]
    with pytest.raises(ValueError) as e:
        T.train(_cfg(synthetic_root, out, "--train.lr", "2e-3", "--loss.beta", "0.5"), resume=True, progress=False)
    msg = str(e.value)
    assert "train.lr: 0.001 -> 0.002" in msg and "loss.beta: 1.0 -> 0.5" in msg and "--resume-with-changes" in msg
    assert "train.max_steps" not in msg
    assert [(out / f).read_bytes() for f in files] == before  # nothing ran, nothing was rewritten


def test_resume_refuses_another_fitted_batch(runs, synthetic_root, tmp_path):
    # The config can be unchanged while the batch is not: a split of few classes fits it to the
    # process count (dva_train.budget.fit_batch). A state trained with 3 x 3 stands for such a run.
    out = _copy_crashed(runs, tmp_path)
    st = torch.load(out / "train_state.pt", weights_only=True)
    st["batch"] = [3, 3]
    torch.save(st, out / "train_state.pt")
    files = ("train_state.pt", "log.jsonl", "config.yaml", "last.safetensors")
    before = [(out / f).read_bytes() for f in files]
    with pytest.raises(ValueError, match=r"trained with batches of 3 classes x 3 images; this resume would fit 4 x 2.*"
                                         r"process count the run started with.*--resume-with-changes"):
        T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    assert [(out / f).read_bytes() for f in files] == before
    T.train(_cfg(synthetic_root, out), resume=True, progress=False, allow_config_changes=True)
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["changes"] == {"batch": [[3, 3], [4, 2]]}
    assert torch.load(out / "train_state.pt", weights_only=True)["batch"] == [4, 2]


def test_check_resume_batch():
    assert S.check_resume_batch({"batch": [4, 2]}, (4, 2), Path("r"), False) == {}
    assert S.check_resume_batch({}, (4, 2), Path("r"), False) == {}  # an older state: nothing recorded
    with pytest.raises(ValueError, match=r"r/train_state.pt was trained with batches of 3 classes x 8"):
        S.check_resume_batch({"batch": [3, 8]}, (3, 9), Path("r"), False)
    assert S.check_resume_batch({"batch": [3, 8]}, (3, 9), Path("r"), True) == {"batch": [[3, 8], [3, 9]]}


def test_batch_not_dividing_over_processes_is_refused_before_the_run_folder(synthetic_root, tmp_path):
    from dva_train.distributed import DistInfo

    out = tmp_path / "run"
    cfg = _cfg(synthetic_root, out, "--train.classes_per_batch", "3", "--train.images_per_class", "3")
    opts = T._Options(resume=False, progress=False, allow_changes=False, overwrite=False, on_step=None, echo=False)
    with pytest.raises(ValueError, match="9 images per batch do not divide over 2 processes"):
        T._train(cfg, DistInfo(world=2), opts)  # refused in prepare_data, before any barrier or file
    assert not out.exists()


def test_resume_with_allowed_changes_logs_them(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    s = T.train(_cfg(synthetic_root, out, "--train.lr", "2e-3"), resume=True, progress=False,
                allow_config_changes=True)
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["step"] == 3 and row["changes"] == {"train.lr": [0.001, 0.002]}
    assert s["steps"] == 6
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert st["config"]["train"]["lr"] == 0.002 and st["step"] == 6  # the next resume compares with this


def test_keys_that_cannot_change_results_do_not_block_resume(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    # (train.threads is ignored too, but a different thread count may change the low bits of a
    # reduction, so it is not used here where the result is compared bit for bit.)
    T.train(_cfg(synthetic_root, out, "--train.log_every", "5", "--train.save_every", "7"), resume=True,
            progress=False)
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["step"] == 3 and "changes" not in row and "last_checkpoint_step" not in row
    assert "best_checkpoint_step" not in row
    _assert_same_as_straight(runs, out)  # and the output_dir moved too


def test_v1_state_without_tensors_still_resumes(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    st = torch.load(out / "train_state.pt", weights_only=True)
    v1 = {k: v for k, v in st.items() if k not in ("format", "trainable", "fingerprint", "config")}
    torch.save(v1, out / "train_state.pt")
    T.train(_cfg(synthetic_root, out, "--train.lr", "2e-3"), resume=True, progress=False)  # config unknown: not checked
    row = [r for r in _log(out) if r["kind"] == "resume"][-1]
    assert row["state_format"] == "v1" and row["step"] == 3
    (out / "train_state.pt").unlink()
    assert S.read_state(out) is None
    torch.save(v1, out / "train_state.pt")
    (out / "last.safetensors").unlink()
    assert S.read_state(out) is None  # a v1 state needs its checkpoint


def test_state_of_other_frozen_weights_is_refused(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    st = torch.load(out / "train_state.pt", weights_only=True)
    st["fingerprint"] = "0" * 16
    torch.save(st, out / "train_state.pt")
    with pytest.raises(ValueError, match="fingerprint 0000000000000000"):
        T.train(_cfg(synthetic_root, out), resume=True, progress=False)


def test_config_changes():
    a = DVAConfig().to_dict()
    b = DVAConfig()
    assert S.config_changes(a, b) == {}
    b.train.lr, b.opa.box_source, b.train.num_workers, b.output_dir = 0.5, "none", 4, "elsewhere"
    b.train.cache_dir, b.train.threads, b.train.log_every, b.train.save_every = "/c", 3, 1, 7
    assert S.config_changes(a, b) == {"opa.box_source": ["self", "none"], "train.lr": [0.001, 0.5]}
    b = DVAConfig()
    b.train.device = "cpu"  # other numerics (kernels, autocast dtype): a change
    assert S.config_changes(a, b) == {"train.device": ["auto", "cpu"]}
    # A key added to the config since the state was written counts as its default.
    old = DVAConfig().to_dict()
    del old["opa"]["loc_scale"]
    assert S.config_changes(old, DVAConfig()) == {}
    c = DVAConfig()
    c.opa.loc_scale = 2.0
    assert S.config_changes(old, c) == {"opa.loc_scale": [1.0, 2.0]}
    old["train"]["gone"] = 1  # a key that no longer exists
    assert S.config_changes(old, DVAConfig()) == {"train.gone": [1, "<absent>"]}


def test_check_resume_config():
    cfg = DVAConfig()
    saved = {"config": DVAConfig().to_dict()}
    assert S.check_resume_config(saved, cfg, False) == {}
    cfg.loss.tau = 5.0
    with pytest.raises(ValueError, match=r"loss.tau: 3.0 -> 5.0.*--resume-with-changes"):
        S.check_resume_config(saved, cfg, False)
    assert S.check_resume_config(saved, cfg, True) == {"loss.tau": [3.0, 5.0]}
    assert S.check_resume_config({}, cfg, False) == {}  # v1: nothing recorded to compare


# --------------------------------------------------------------------------- no silent overwrite
def _bytes(out):
    return {f.name: f.read_bytes() for f in sorted(Path(out).iterdir()) if f.is_file()}


def test_training_into_a_finished_run_is_refused_and_leaves_it_as_it_was(runs, synthetic_root, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    before = _bytes(out)
    with pytest.raises(ValueError) as e:
        T.train(_cfg(synthetic_root, out), progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{out} holds a finished run (completed, 6 steps; last.safetensors, best.safetensors, "
                          "train_state.pt, summary.json): pass --resume to continue it")
    assert "choose another --output_dir, or pass --overwrite to train again from scratch" in msg
    assert _bytes(out) == before  # not one byte written, the log included


def test_resume_without_a_state_file_refuses_to_start_afresh_over_results(runs, synthetic_root, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    (out / S.STATE_FILE).unlink()  # what the "delete it to start again" messages suggest
    before = _bytes(out)
    with pytest.raises(ValueError, match=r"but no train_state.pt to resume from: pass --overwrite"):
        T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    assert _bytes(out) == before


def test_an_unfinished_run_is_refused_too_and_resume_still_continues_it(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    before = _bytes(out)
    with pytest.raises(ValueError, match=r"holds an unfinished run \(last checkpoint at step 3\) .*pass --resume"):
        T.train(_cfg(synthetic_root, out), progress=False)
    assert _bytes(out) == before
    T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    _assert_same_as_straight(runs, out)


def test_overwrite_trains_again_from_scratch_and_says_what_it_deleted(runs, synthetic_root, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    old_ids = {r["run"] for r in _log(out)}
    s = T.train(_cfg(synthetic_root, out), progress=False, overwrite=True)
    assert s["status"] == "completed" and s["steps"] == 6
    rows = _log(out)
    row = next(r for r in rows if r["kind"] == "overwrite")
    assert row["removed"] == ["last.safetensors", "best.safetensors", "train_state.pt", "summary.json"]
    assert row["run"] not in old_ids
    assert len({r["run"] for r in rows}) == 2  # the old rows stay, under their own run id
    _assert_same_as_straight(runs, out)  # the same config from scratch: the same model


def test_run_folder_checks():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        S.check_run_folder(d / "new", resume=False, overwrite=False)  # nothing there yet
        (d / "config.yaml").write_text("x")  # a run refused before its first step leaves these
        (d / "log.jsonl").write_text("{}\n")
        S.check_run_folder(d, resume=False, overwrite=False)
        (d / "file").write_text("x")
        with pytest.raises(ValueError, match=r"output_dir .*file is a file, not a folder: choose another"):
            S.check_run_folder(d / "file", resume=False, overwrite=False)
        with pytest.raises(ValueError, match="pass one of them"):
            S.check_run_folder(d, resume=True, overwrite=True)
        for name in (*S.RESULT_FILES, "boxes.json"):
            (d / name).write_text("x")
        with pytest.raises(ValueError, match=r"holds a finished run \(finished; "):  # an unreadable summary
            S.check_run_folder(d, resume=False, overwrite=False)
        S.check_run_folder(d, resume=True, overwrite=False)
        S.check_run_folder(d, resume=False, overwrite=True)
        assert S.clear_results(d) == list(S.RESULT_FILES)
        assert sorted(p.name for p in d.iterdir()) == ["boxes.json", "config.yaml", "file", "log.jsonl"]


# --------------------------------------------------------------------------- a hostile state file
class _Hostile:
    """Pickles as a call of os.system: what a malicious train_state.pt would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_state_file_that_would_run_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "it-ran"
    torch.save({"step": 3, "trainable": {}, "x": _Hostile(marker)}, tmp_path / "train_state.pt")
    with pytest.raises(ValueError) as e:
        S.read_state(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'train_state.pt'}: refused: it refers to ")
    assert "system, which is not a tensor or a plain value" in msg
    assert "so it was not loaded and nothing in it was executed" in msg and "damaged" not in msg
    assert "Delete it to start the run again" in msg
    assert not marker.exists()


def test_a_damaged_state_file_is_called_damaged(tmp_path):
    torch.save({"step": 3}, tmp_path / "train_state.pt")
    blob = (tmp_path / "train_state.pt").read_bytes()
    (tmp_path / "train_state.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"unreadable training state \(RuntimeError\); .* damaged afterwards"):
        S.read_state(tmp_path)
    torch.save([1, 2], tmp_path / "train_state.pt")  # loads, but is no state
    with pytest.raises(ValueError, match="not a training state written by dva train \\(it holds a list"):
        S.read_state(tmp_path)


def test_resuming_a_finished_run_keeps_the_whole_runs_training_time_and_images(runs, synthetic_root, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    before = json.loads((out / "summary.json").read_text())
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert before["train_seconds"] > 0 and st["train_seconds"] == pytest.approx(before["train_seconds"])
    assert st["images"] == 6 * 4 * 2  # six steps of 4 classes x 2 images
    after = T.train(_cfg(synthetic_root, out), resume=True, progress=False)  # nothing left to train
    assert after["steps"] == 6 and after["train_seconds"] == pytest.approx(before["train_seconds"])
    assert after["train_img_per_s"] == pytest.approx(before["train_img_per_s"])


def test_a_resumed_run_adds_its_sessions_training_time(runs, synthetic_root, tmp_path):
    out = _copy_crashed(runs, tmp_path)
    first = torch.load(out / "train_state.pt", weights_only=True)
    assert first["images"] == 3 * 8 and first["train_seconds"] > 0  # the state of step 3
    s = T.train(_cfg(synthetic_root, out), resume=True, progress=False)
    assert s["train_seconds"] > first["train_seconds"]
    assert s["train_img_per_s"] == pytest.approx(6 * 8 / s["train_seconds"])
