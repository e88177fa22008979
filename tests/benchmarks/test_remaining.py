"""benchmarks/remaining.py: the states read from the result files, the order, and --run's sittings."""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

from benchmarks import remaining as M
from benchmarks.datasets.plan import TABLE
from benchmarks.defaults import plan as DP


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _states(results):
    return {(it.benchmark, it.name): it.state for it in M.items(results)}


def test_states_follow_the_result_files(tmp_path):
    s = _states(tmp_path)
    assert s[("datasets", "cars196 x mobilenetv2: select")] == "to run"
    assert s[("datasets", "cars196 x mobilenetv2: main")] == "waiting: its select profile"
    assert s[("frontier", "cars196 x mobilenetv2")] == "waiting: the cars196 x mobilenetv2 select profile"
    assert s[("defaults", "preset mobilenetv2")] == "to run"
    # An unfinished select profile is not done; a finished one lets its main and frontier run.
    sel = tmp_path / "datasets" / "cars196_mobilenetv2_select.json"
    _write(sel, {"complete": False})
    assert _states(tmp_path)[("datasets", "cars196 x mobilenetv2: main")].startswith("waiting")
    _write(sel, {"complete": True})
    s = _states(tmp_path)
    assert s[("datasets", "cars196 x mobilenetv2: select")] == "done"
    assert s[("datasets", "cars196 x mobilenetv2: main")] == "to run"
    assert s[("frontier", "cars196 x mobilenetv2")] == "to run"
    # A main result is done only with every row at the backbone's seeds, not a --quick or --rows part.
    main = tmp_path / "datasets" / "cars196_mobilenetv2_main.json"
    whole = {"rows": list(TABLE.main_rows), "seeds": [0, 1, 2], "quick": False}
    for part in ({**whole, "quick": True}, {**whole, "rows": ["frozen", "dva"]}, {**whole, "seeds": [0]}):
        _write(main, {"settings": part})
        assert not M.main_done("cars196", "mobilenetv2", tmp_path)
    _write(main, {"settings": whole})
    assert _states(tmp_path)[("datasets", "cars196 x mobilenetv2: main")] == "done"
    _write(tmp_path / "frontier" / "cars196_mobilenetv2.json", {"complete": True})
    assert _states(tmp_path)[("frontier", "cars196 x mobilenetv2")] == "done"


def test_a_preset_is_done_when_every_dataset_has_a_run_of_todays_command(tmp_path):
    runs = [{"preset": "mobilenetv2", "dataset": d, "settings_digest": DP.current_digest("mobilenetv2", d)}
            for d in DP.datasets()]
    _write(tmp_path / "defaults.json", {"runs": runs[:-1]})
    assert not M.defaults_done("mobilenetv2", tmp_path)
    _write(tmp_path / "defaults.json", {"runs": runs[:-1] + [{**runs[-1], "settings_digest": "0ld0ne00"}]})
    assert not M.defaults_done("mobilenetv2", tmp_path)  # made with an earlier preset or rule
    _write(tmp_path / "defaults.json", {"runs": runs})
    assert M.defaults_done("mobilenetv2", tmp_path) and not M.defaults_done("lite2", tmp_path)


def test_the_order_is_the_issues_order(tmp_path):
    its = M.items(tmp_path)
    kinds = [it.benchmark for it in its]
    # The datasets harness, then the default command, then the frontier (they build on its choices).
    assert kinds == sorted(kinds, key=("datasets", "defaults", "frontier").index)
    for bench, n in (("datasets", 5), ("frontier", 3)):  # within each, MobileNetV2, Lite2, the ViT (, Lite0, Lite1)
        names = [it.name for it in its if it.benchmark == bench]
        order = [next(i for i, b in enumerate(M.BACKBONE_ORDER) if b in n) for n in names]
        assert order == sorted(order) and len(set(order)) == n
    # Lite0 and Lite1 (their select profiles choose their presets; their main profiles, two rows, hold the
    # tuned DVA row): before those presets run.
    lite0 = [it.name for it in its if "lite0" in it.name]
    assert lite0 == [f"{d} x lite0: {p}" for d in TABLE.datasets for p in ("select", "main")] + ["preset lite0"]
    # Their main profile is done with its own rows.
    _write(tmp_path / "datasets" / "cub100_lite0_main.json", {"settings": {"rows": ["frozen", "dva"], "seeds": [0]}})
    assert M.main_done("cub100", "lite0", tmp_path)
    _write(tmp_path / "datasets" / "cub100_lite2_main.json", {"settings": {"rows": ["frozen", "dva"], "seeds": [0]}})
    assert not M.main_done("cub100", "lite2", tmp_path)
    assert M.BACKBONE_ORDER[:3] == ("mobilenetv2", "lite2", "vit_s14")  # the datasets study's backbones first
    presets = [it.name for it in its if it.benchmark == "defaults"]
    assert presets[0] == "preset mobilenetv2" and presets.index("preset lite2") < presets.index("preset lite0")
    assert M.command_text(its[0].argv) == \
        "python -m benchmarks.datasets.run --dataset cub100 --backbone mobilenetv2 --profile select"


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def fake_items(tmp_path, monkeypatch):
    """Three items: a quick one (done once its file exists), a slow one with a child process, a last one."""
    marks = tmp_path / "marks"
    marks.mkdir()
    pidfile = tmp_path / "child.pid"
    slow = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); open({str(marks / 'b.started')!r}, 'w'); time.sleep(60)")

    def items(_results=None):
        state = lambda n: "done" if (marks / n).exists() else "to run"  # noqa: E731
        return [M.Item("x", "a", state("a"), _py(f"open({str(marks / 'a')!r}, 'w')")),
                M.Item("x", "b", state("b"), _py(slow)),
                M.Item("x", "c", state("c"), _py(f"open({str(marks / 'c')!r}, 'w')"))]

    monkeypatch.setattr(M, "items", items)
    monkeypatch.setitem(M.DOCS, "x", ())
    return marks, pidfile


def test_run_goes_in_order_and_stops_at_the_time_limit(fake_items):
    marks, pidfile = fake_items
    said = []
    t0 = time.monotonic()
    assert M.run_items(0.05, log=said.append) == 0  # 3 s: "a" finishes, "b" is stopped
    assert time.monotonic() - t0 < 40
    assert (marks / "a").exists() and (marks / "b.started").exists() and not (marks / "c").exists()
    assert "stopped" in said[-1] and "resumes" in said[-1]
    child = int(pidfile.read_text())
    time.sleep(0.5)
    assert not _alive(child)  # the item's own subprocesses stopped with it


def _alive(pid: int) -> bool:
    """Running (a zombie, killed and waiting for a reaper that never comes, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = f"/proc/{pid}/status"
    return not (os.path.exists(status) and "\nState:\tZ" in open(status).read())


def test_run_stops_at_a_failing_item(fake_items, monkeypatch):
    marks, _ = fake_items
    items = M.items

    def failing(_results=None):
        its = items()
        return [its[0], its[1]._replace(argv=_py("import sys; sys.exit(3)")), its[2]]

    monkeypatch.setattr(M, "items", failing)
    said = []
    assert M.run_items(0, log=said.append) == 3
    assert (marks / "a").exists() and not (marks / "c").exists() and "exited 3" in said[-1]


def test_the_estimate_is_the_commands_own_total(tmp_path):
    plan = ("print('x'); print('  estimated total ~39 min (within the 2 h of a profile)'); "
            "print('  then 2 more seed(s) of each method ...')")
    item = M.Item("x", "a", "to run", _py(plan + "  # --plan is appended"))
    assert M.estimate(item) == ("estimated total ~39 min (within the 2 h of a profile); "
                                "then 2 more seed(s) of each method ...")
    assert M.estimate(M.Item("x", "b", "to run", _py("import sys; sys.exit(2)"))) == "(no estimate: --plan exited 2)"


def test_a_terminated_sitting_stops_its_item(tmp_path):
    # `timeout` or a scheduler sends SIGTERM to the sitting: the item (in a session of its own) and its run
    # subprocesses stop with it instead of training on in the background.
    import signal
    import subprocess
    from pathlib import Path

    pidfile = tmp_path / "grandchild.pid"
    item = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    repo = Path(M.__file__).resolve().parents[1]  # `python -c` imports from its working folder
    sitting = f"import sys; from benchmarks import remaining as M; M._run_until([sys.executable, '-c', {item!r}], None)"
    proc = subprocess.Popen([sys.executable, "-c", sitting], stderr=subprocess.PIPE, text=True, cwd=repo)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0 and "_Terminated: SIGTERM" in proc.stderr.read()
    time.sleep(0.5)
    assert not _alive(int(pidfile.read_text()))


def test_no_item_starts_after_the_time_limit(fake_items, monkeypatch):
    marks, _ = fake_items
    items = M.items

    def slow_listing(_results=None):  # reading the result files outlasts the 0.06 ms limit
        time.sleep(0.05)
        return items()

    monkeypatch.setattr(M, "items", slow_listing)
    said = []
    assert M.run_items(1e-6, log=said.append) == 0
    assert not (marks / "a").exists() and said == [said[0]] and "stopped before x: a" in said[0]


def test_the_listing_sums_the_estimates(monkeypatch):
    assert M.minutes_of("estimated total ~39 min (within the 2 h); then 2 more seed(s) ...: at most ~119 min") == 158
    assert M.minutes_of("(no estimate: --plan exited 2)") == 0
    its = [M.Item("x", "a", "done", ["a"]), M.Item("x", "b", "to run", ["b"]), M.Item("x", "c", "waiting: b", ["c"])]
    said = {"b": "estimated total ~30 min", "c": "estimated total ~60 min"}
    monkeypatch.setattr(M, "estimate", lambda it: said[it.name])
    lines = M.listing(its, with_estimates=True)
    assert lines[-1] == "1 of 3 done; 2 to run or waiting; ~1.5 h by the estimates (2 CPU cores, as the measured runs)"
    assert "    estimated total ~60 min" in lines and not M.listing(its)[-1].endswith("runs)")
    # Runs of a backbone not measured yet: the sum is of what is known, and says so.
    said["c"] = "estimated total ~60 min (within the 2 h of a profile; 3 run(s) without a measured cost)"
    assert M.listing(its, with_estimates=True)[-1].endswith("runs), 1 item(s) not or not wholly estimated: more")


def test_frontier_variants_are_wanted_where_dva_sits_under_wise_ft(tmp_path, monkeypatch):
    """After a pair's frontier sweep, its design variants are an item of their own: to run where DVA's frontier
    is not at or above the full fine-tune's (with the tokens the pair's runs trained with: cub100 x MobileNetV2
    chose the last three stages, its deeper variant has four), done once every budget of each is in (made with
    today's settings of it), and not needed where DVA is at or above or where every variant is DVA itself."""
    from benchmarks.frontier import render as R
    from benchmarks.frontier.plan import FRONTIER

    name = ("frontier", "cub100 x mobilenetv2: variants")
    assert _states(tmp_path)[name] == "waiting: the cub100 x mobilenetv2 frontier's sweep"
    real = json.loads((M.RESULTS / "frontier" / "cub100_mobilenetv2.json").read_text())
    var = set(FRONTIER.variants)  # the committed result less its variants: the profile as its sweep left it
    real = {**real, "points": [p for p in real["points"] if p["method"] not in var],
            "runs": [r for r in real["runs"] if r.get("method") not in var],
            "settings": {**real["settings"], "methods": {k: v for k, v in real["settings"]["methods"].items()
                                                         if k not in var}}}
    _write(tmp_path / "datasets" / "cub100_mobilenetv2_select.json",
           json.loads((M.RESULTS / "datasets" / "cub100_mobilenetv2_select.json").read_text()))
    _write(tmp_path / "frontier" / "cub100_mobilenetv2.json", real)
    assert R.summary(real)["dva_vs_full"]["at_or_above"] is False  # the committed result: DVA under WiSE-FT
    item = next(it for it in M.items(tmp_path) if (it.benchmark, it.name) == name)
    assert item.state == "to run" and item.argv[-4:] == ["--methods", "dva_beta1,dva_deeper", "--seeds", "1"]
    pts = real["points"] + [{**real["points"][-1], "method": m, "budget": b}
                            for m in ("dva_beta1", "dva_deeper") for b in FRONTIER.budgets[:-1]]
    beta1 = {"label": "DVA, DPT weight 1", "row": "dva", "dial": "ica_scale", "extra": ["--loss.beta", "1"],
             "variant": True}
    deeper = {"label": "DVA, adapters in more stages", "row": "dva", "dial": "ica_scale",
              "extra": ["--ica.blocks", "'-4:'"], "variant": True}
    methods = {**real["settings"]["methods"], "dva_beta1": beta1, "dva_deeper": deeper}

    def write(points, ms=methods):
        _write(tmp_path / "frontier" / "cub100_mobilenetv2.json",
               {**real, "points": points, "settings": {**real["settings"], "methods": ms}})

    write(pts)
    assert _states(tmp_path)[name] == "to run"  # one budget missing
    pts.append({**real["points"][-1], "method": "dva_beta1", "budget": FRONTIER.budgets[-1]})
    write(pts)
    item = next(it for it in M.items(tmp_path) if (it.benchmark, it.name) == name)
    assert item.state == "to run" and item.argv[-3] == "dva_deeper"  # only what is missing
    pts.append({**real["points"][-1], "method": "dva_deeper", "budget": FRONTIER.budgets[-1]})
    write(pts)
    assert _states(tmp_path)[name] == "done"
    write(pts, {**methods, "dva_beta1": {**beta1, "extra": ["--loss.beta", "0.5"]}})
    assert _states(tmp_path)[name] == "to run"  # made with other settings of the variant: the next sitting drops them
    every = json.loads(json.dumps(real["settings"]))
    every["chosen_tokens"]["adapters"][every["chosen_tokens"]["adapters"].index("--ica.blocks") + 1] = "all"
    every["chosen_tokens"]["opa"] = ["--loss.beta", "1"]
    _write(tmp_path / "frontier" / "cub100_mobilenetv2.json", {**real, "settings": every})
    none = "(not needed: no variant differs from DVA on this pair)"  # beta 1 chosen; no stage to add to "all"
    assert _states(tmp_path)[("frontier", f"cub100 x mobilenetv2: variants {none}")] == "done"
    monkeypatch.setattr(R, "summary", lambda res: {"dva_vs_full": {"at_or_above": True}})
    s = _states(tmp_path)
    note = "(not needed: DVA's frontier at or above the full fine-tune's)"
    assert s[("frontier", f"cub100 x mobilenetv2: variants {note}")] == "done"


def test_timed_runs_are_wanted_where_a_curve_ends_before_the_minute(tmp_path):
    from benchmarks.frontier.plan import FRONTIER

    key = ("frontier", "cars196 x mobilenetv2: equal compute at 15 min")
    assert _states(tmp_path)[key[0], key[1]] == "waiting: the cars196 x mobilenetv2 frontier"
    pts = [{"method": "frozen", "frozen": True, "alpha": 0.0, "id_r1": 40.0, "train_minutes": 0.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 50.0, "train_minutes": 4.3},
           {"method": "ica", "frozen": False, "alpha": 1.0, "id_r1": 55.0, "train_minutes": 1.3},
           {"method": "full", "frozen": False, "alpha": 1.0, "id_r1": 52.0, "train_minutes": 8.7}]
    f = tmp_path / "frontier" / "cars196_mobilenetv2.json"
    _write(f, {"complete": True, "points": pts, "runs": []})
    # the full fine-tune's budgets pass 5 min, but only a validated run sized to the minute answers for it
    assert M.timed_to_run("cars196", "mobilenetv2", 5, tmp_path) == ("to run", ["dva", "ica", "full"])
    items = {it.name: it for it in M.items(tmp_path)}
    it = items["cars196 x mobilenetv2: equal compute at 15 min (dva, ica, full)"]
    assert it.state == "to run" and it.argv[-2:] == ["--timed", "15"]
    # done where a run sized to the minute reached it: one that fell short of it (the least moved) is not enough
    sel = {"eval_every": FRONTIER.timed_eval_every, "patience": FRONTIER.timed_patience}
    timed = [{"method": m, "timed": {"minutes": 5.0, "select": sel}} for m in ("dva", "ica", "full")]
    tp = [{**pts[1], "train_minutes": 5.2, "timed": 5.0, "select": sel},
          {**pts[2], "train_minutes": 4.9, "timed": 5.0, "select": sel},
          {**pts[3], "train_minutes": 5.5, "timed": 5.0, "select": sel}]
    _write(f, {"complete": True, "points": pts, "runs": timed, "timed_points": tp})
    assert M.timed_to_run("cars196", "mobilenetv2", 5, tmp_path) == ("to run", ["ica"])
    # ... unless its validation stopped it early: it holds its best model up to its minute
    _write(f, {"complete": True, "points": pts, "runs": timed,
               "timed_points": [tp[0], {**tp[1], "stopped_early": True}, tp[2]]})
    assert M.timed_to_run("cars196", "mobilenetv2", 5, tmp_path) == ("done", [])
    _write(f, {"complete": True, "points": pts, "runs": timed,
               "timed_points": [tp[0], {**tp[1], "train_minutes": 5.0}, tp[2]]})
    assert M.timed_to_run("cars196", "mobilenetv2", 5, tmp_path) == ("done", [])
    assert M.timed_to_run("cars196", "mobilenetv2", 15, tmp_path) == ("to run", list(FRONTIER.timed_methods))
    # a timed run validated otherwise than frontier.yaml's timed_select now (or not at all) counts for nothing
    _write(f, {"complete": True, "points": pts, "runs": timed,
               "timed_points": [tp[0], {**tp[1], "train_minutes": 5.0, "select": None}, tp[2]]})
    assert M.timed_to_run("cars196", "mobilenetv2", 5, tmp_path) == ("to run", ["ica"])
