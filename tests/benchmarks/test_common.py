"""The helpers shared by the benchmarks (benchmarks/_common.py)."""
from __future__ import annotations

import json
import os

import _common as C
import pytest


def test_mean_std():
    assert C.mean_std([1.0]) == (1.0, 0.0)
    m, s = C.mean_std([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and s == pytest.approx(1.0)
    with pytest.raises(ValueError):
        C.mean_std([])


def test_replace_section_keeps_other_sections():
    section, other = "## cub100: DVA vs baselines", "## ViT efficiency"
    doc = ("# Benchmarks\n\n## Other engineer\n\ntheir text\n\n" + section
           + "\n\nold\n\n### sub\n\nold too\n\n## Later\n\nkeep\n")
    new = C.replace_section(doc, section, "new body\n\n### sub\n\nnew too")
    assert "their text" in new and "keep" in new and "## Later" in new
    assert "old" not in new and "new body" in new and "new too" in new
    assert new.index("## Other engineer") < new.index(section) < new.index("## Later")
    created = C.replace_section("", section, "body")
    assert created.startswith("# Benchmarks\n") and section in created
    appended = C.replace_section("# Benchmarks\n\n## A\n\na\n", other, "v")
    assert appended.index("## A") < appended.index(other) and appended.endswith(other + "\n\nv\n")


def test_update_doc_creates_and_replaces(tmp_path):
    doc = tmp_path / "sub" / "B.md"
    C.update_doc(doc, "## X", "one")
    C.update_doc(doc, "## Y", "two")
    C.update_doc(doc, "## X", "three")
    assert doc.read_text() == "# Benchmarks\n\n## X\n\nthree\n\n## Y\n\ntwo\n"


def test_md_table():
    t = C.md_table(["N", "name", "s"], [[1000, "a", ""], ["2,000", "b", 1.5]], "rlr").splitlines()
    assert t == ["| N | name | s |", "|---:|---|---:|", "| 1000 | a | |", "| 2,000 | b | 1.5 |"]
    assert C.md_table(["a", "b"], []) == "| a | b |\n|---|---|"
    with pytest.raises(ValueError, match="align"):
        C.md_table(["a", "b"], [], "r")


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "deep" / "r.json"
    C.write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        C.write_json(path, {"bad": object()})  # fails while serialising: the old file stays whole
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]  # no temporary left behind


def test_write_result_records_provenance(tmp_path):
    script = C.BENCHMARKS / "vit_efficiency" / "run.py"
    res = C.write_result(tmp_path / "r.json", {"x": 1, "date": "kept"}, script, ["--repeats", "1", "a b"])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == res
    assert saved["x"] == 1 and saved["date"] == "kept"
    assert saved["command"] == "python benchmarks/vit_efficiency/run.py --repeats 1 'a b'"
    assert saved["machine"]["cpu_count"] == os.cpu_count()
    assert "git_commit" in saved


def test_machine_info_versions():
    import torch

    m = C.machine_info(("torch", "surely_not_a_module_xyz"))
    assert m["torch"] == torch.__version__ and m["surely_not_a_module_xyz"] is None
    assert m["cpu_count"] == os.cpu_count() and m["python"].count(".") == 2
    assert m["ram_gb"] is None or m["ram_gb"] > 0
    json.dumps(m)


def test_current_command_maps_the_old_script_paths():
    assert (C.current_command("python benchmarks/cub100.py --quick --threads 2")
            == "python benchmarks/cub100/run.py --quick --threads 2")
    assert C.current_command("python benchmarks/vit_efficiency.py") == "python benchmarks/vit_efficiency/run.py"
    assert C.current_command("python benchmarks/cub100/run.py --full") == "python benchmarks/cub100/run.py --full"


def test_repo_is_this_checkout():
    assert (C.REPO / "benchmarks" / "_common.py").is_file() and C.RESULTS == C.REPO / "benchmarks" / "results"
