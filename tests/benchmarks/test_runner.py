"""benchmarks._runner.run_in_folder with a fake worker (a small Python script, no torch)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import _common as C
from benchmarks._rows import boxes_key
from benchmarks._runner import MEASURED, run_in_folder

FAKE_WORKER = textwrap.dedent('''
    import json, os, pathlib, sys
    spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
    out = pathlib.Path(spec["out"])
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(out.name + "\\n")
    print("worker output " + spec["name"])
    if spec.get("fail"):
        print("the last words of " + spec["name"])
        sys.exit(spec["fail"])
    if spec.get("no_result"):
        sys.exit(0)
    had_boxes = (out / "boxes.json").is_file()
    if not had_boxes:
        (out / "boxes.json").write_text('{"boxes": "' + spec["name"] + '"}')
    res = {"name": spec["name"], "metrics": {"recall@1": 0.5, "map@r": 0.25}, "had_boxes": had_boxes,
           "threads_env": [os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")],
           "offline": os.environ.get("HF_HUB_OFFLINE")}
    (out / "result.json").write_text(json.dumps(res))
''')


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Workers are the fake script; returns the run folders it ran in, in order."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    calls = tmp_path / "calls.log"
    calls.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(calls))
    monkeypatch.setattr(C, "child_command", lambda _f, flag, spec: [sys.executable, str(script), spec]
                        if flag == "--worker" else pytest.fail(f"not a worker call: {flag}"))
    return lambda: calls.read_text().split()


def _spec(tmp_path: Path, folder: str, overrides: list[str] | None = None, **more) -> dict:
    ov = ["--train.seed", "0"] if overrides is None else overrides
    return {"name": "ica", "kind": "train", "overrides": ov, "out": str(tmp_path / "work" / folder), "threads": 3,
            **more}


def _run(tmp_path: Path, spec: dict, settings=list, done_key: str = "wall_seconds", lines: list | None = None):
    log = (lambda *a, **k: lines.append(" ".join(map(str, a)))) if lines is not None else (lambda *a, **k: None)
    return run_in_folder(C.BENCHMARKS / "datasets" / "run.py", spec, tmp_path / "cache", settings, done_key, log)


def test_a_run_is_measured_then_read_back(tmp_path, fake):
    spec = _spec(tmp_path, "ica_s0")
    lines: list[str] = []
    res = _run(tmp_path, spec, lines=lines)
    out = Path(spec["out"])
    assert fake() == ["ica_s0"]
    assert json.loads((out / "spec.json").read_text()) == spec  # what the worker ran, as given
    assert "worker output ica" in (out / "stdout.log").read_text()
    # The worker's own fields, then every measured one.
    assert res["name"] == "ica" and res["metrics"] == {"recall@1": 0.5, "map@r": 0.25}
    assert list(res)[-len(MEASURED):] == list(MEASURED)
    assert res["wall_seconds"] > 0 and res["peak_rss_mb"] > 1.0
    assert len(res["loadavg_1m"]) == 2 and all(v >= 0 for v in res["loadavg_1m"])
    assert res["commit"] == C.git_commit() and isinstance(res["git_dirty"], bool)
    assert res["threads_env"] == ["3", "3"] and res["offline"] == "1"
    assert json.loads((out / "result.json").read_text()) == res
    assert lines[-1].startswith("  ica (ica_s0): R@1 50.00 MAP@R 25.00 wall ")
    # Started again: read back, the worker not run.
    assert _run(tmp_path, spec, lines=lines) == res and fake() == ["ica_s0"]
    assert lines[-1] == "  [done] ica (ica_s0)"


def test_a_result_without_the_done_key_runs_again(tmp_path, fake):
    spec = _spec(tmp_path, "ica_s0")
    out = Path(spec["out"])
    out.mkdir(parents=True)
    # The worker's own result.json, the runner killed before it added the measured fields.
    (out / "result.json").write_text(json.dumps({"name": "ica", "metrics": {}}))
    res = _run(tmp_path, spec, done_key="peak_rss_mb")
    assert fake() == ["ica_s0"] and res["metrics"]["recall@1"] == 0.5
    # Any result holding the done key is a finished run, whatever else it lacks.
    (out / "result.json").write_text(json.dumps({"name": "ica", "peak_rss_mb": 1.0}))
    assert _run(tmp_path, spec, done_key="peak_rss_mb") == {"name": "ica", "peak_rss_mb": 1.0}
    assert fake() == ["ica_s0"]


def test_a_folder_of_other_settings_is_refused(tmp_path, fake):
    out = tmp_path / "work" / "ica_s0"
    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps({"overrides": ["--ica.rank", "8", "--data.root", "/old"]}))
    (out / "result.json").write_text(json.dumps({"name": "ica", "wall_seconds": 5.0}))
    with pytest.raises(RuntimeError, match=r"ica_s0 holds a run of ica with other settings .*spec\.json.*"
                                           r"another --work-dir"):
        _run(tmp_path, _spec(tmp_path, "ica_s0", ["--ica.rank", "4", "--data.root", "/new"]))
    # Settings compared through `settings`: here the place of the data is not one.
    def no_root(ov: list[str]) -> list[str]:
        return ov[:ov.index("--data.root")] if "--data.root" in ov else ov

    with pytest.raises(RuntimeError, match="other settings"):
        _run(tmp_path, _spec(tmp_path, "ica_s0", ["--ica.rank", "4", "--data.root", "/new"]), settings=no_root)
    res = _run(tmp_path, _spec(tmp_path, "ica_s0", ["--ica.rank", "8", "--data.root", "/new"]), settings=no_root)
    assert res == {"name": "ica", "wall_seconds": 5.0} and fake() == []
    assert json.loads((out / "spec.json").read_text())["overrides"][-1] == "/old"  # not overwritten


def test_a_failed_worker_raises_with_the_log_tail(tmp_path, fake):
    spec = _spec(tmp_path, "bad_s0", fail=3)
    with pytest.raises(RuntimeError, match=r"(?s)run ica failed \(exit 3\); log .*stdout\.log:\n.*"
                                           r"the last words of ica"):
        _run(tmp_path, spec)
    assert not (Path(spec["out"]) / "result.json").exists()
    # Exit 0 without a result.json is a failure too.
    with pytest.raises(RuntimeError, match=r"run ica failed \(exit 0\)"):
        _run(tmp_path, _spec(tmp_path, "none_s0", no_result=True))
    assert fake() == ["bad_s0", "none_s0"]


def test_the_opa_boxes_are_shared_through_the_cache(tmp_path, fake):
    first, second = _spec(tmp_path, "a_s0"), _spec(tmp_path, "b_s0", ["--train.seed", "1"])
    shared = tmp_path / "cache" / boxes_key(first["overrides"])
    assert boxes_key(second["overrides"]) == shared.name  # another seed, the same boxes
    assert not _run(tmp_path, first)["had_boxes"]
    assert json.loads(shared.read_text()) == {"boxes": "ica"}  # the first run's boxes, into the cache
    assert _run(tmp_path, second)["had_boxes"]  # and out of it into the next run's folder
    assert json.loads((tmp_path / "work" / "b_s0" / "boxes.json").read_text()) == {"boxes": "ica"}
    assert not list((tmp_path / "cache").glob(".*.tmp")) and fake() == ["a_s0", "b_s0"]
