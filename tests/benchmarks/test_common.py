"""The helpers shared by the benchmarks (benchmarks/_common.py) and the benchmarks package itself."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchmarks import _common as C


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
    assert [f.name for f in doc.parent.iterdir()] == ["B.md"]  # written through a temporary: none left behind


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
    assert saved["command"] == "python -m benchmarks.vit_efficiency.run --repeats 1 'a b'"
    assert saved["machine"]["cpu_count"] == os.cpu_count()
    assert "git_commit" in saved


def test_machine_info_versions():
    import torch

    m = C.machine_info(("torch", "surely_not_a_module_xyz"))
    assert m["torch"] == torch.__version__ and m["surely_not_a_module_xyz"] is None
    assert m["cpu_count"] == os.cpu_count() and m["python"].count(".") == 2
    assert m["ram_gb"] is None or m["ram_gb"] > 0
    json.dumps(m)


def test_machine_info_reads_versions_without_importing_the_packages():
    """pytorch_metric_learning patches every FAISS index's ``search`` when imported: recording its
    version must not import it (a later filtered FAISS or Milvus Lite search in the process broke)."""
    code = ("import sys, benchmarks._common as C; m = C.machine_info(('pytorch_metric_learning', 'faiss')); "
            "print(m['pytorch_metric_learning'] is not None, m['faiss'] is not None, "
            "'pytorch_metric_learning' in sys.modules, 'faiss.contrib.torch_utils' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=C.child_env(), capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False", "False"], out.stderr


def test_current_command_maps_the_old_script_paths():
    assert (C.current_command("python benchmarks/cub100.py --quick --threads 2")
            == "python -m benchmarks.cub100.run --quick --threads 2")
    assert C.current_command("python benchmarks/vit_efficiency.py") == "python -m benchmarks.vit_efficiency.run"
    assert C.current_command("python benchmarks/cub100/run.py --full") == "python -m benchmarks.cub100.run --full"
    assert (C.current_command("python benchmarks/cub100/summary.py a.json+b.json")
            == "python -m benchmarks.cub100.summary a.json+b.json")
    new = "python -m benchmarks.cub100.run --reuse benchmarks/results/cub100_full.json"
    assert C.current_command(new) == new  # already current; result paths inside the flags untouched
    # Whole tokens only: a path that merely starts like an old one stays.
    assert C.current_command("python benchmarks/cub100.pyc") == "python benchmarks/cub100.pyc"


def test_every_old_script_maps_to_a_module_that_exists():
    for old, module in C.LEGACY_SCRIPTS.items():
        assert (C.REPO / (module.replace(".", "/") + ".py")).is_file(), (old, module)
    commands = [json.loads(f.read_text()).get("command") for f in C.RESULTS.glob("*.json")]
    # The demo's reference run is a `dva` command (python -m dva_cli demo ...), not a benchmark script.
    commands = [c for c in commands if c and not c.startswith("python -m dva_cli ")]
    scripts = {c.split()[1] for c in commands if c and c.split()[1] != "-m"}
    assert scripts and scripts <= set(C.LEGACY_SCRIPTS)  # every committed result file's command is shown as a module
    assert all(C.current_command(c).startswith("python -m benchmarks.") for c in commands if c)


def test_module_name_and_command_line():
    assert C.module_name(C.BENCHMARKS / "cub100" / "run.py") == "benchmarks.cub100.run"
    shown = C.command_line(C.BENCHMARKS / "boxes" / "run.py", ["--limit", "2"])
    assert shown == "python -m benchmarks.boxes.run --limit 2"
    with pytest.raises(ValueError, match="not a module of the benchmarks package"):
        C.module_name(C.REPO / "src" / "dva" / "config.py")
    assert C.command_line(C.REPO / "tools" / "x.py", []) == "python tools/x.py"  # outside the package: a file


def test_a_child_module_runs_from_any_folder(tmp_path):
    """What the cub100 rows and metrics_speed children rely on: ``-m`` plus the repository on PYTHONPATH."""
    code = C.child_command(C.BENCHMARKS / "cub100" / "plan.py")
    assert code[1:] == ["-m", "benchmarks.cub100.plan"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ok = subprocess.run(code, cwd=tmp_path, env=C.child_env(env), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bare = subprocess.run(code, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0 and "No module named 'benchmarks'" in bare.stderr  # so the env is what does it
    assert C.child_env({"PYTHONPATH": "/x"})["PYTHONPATH"] == os.pathsep.join([str(C.REPO), "/x"])


def test_benchmarks_is_a_package_without_path_hacks():
    """Every benchmark folder is a package; no file of benchmarks/ or tests/benchmarks/ edits sys.path."""
    for run in C.BENCHMARKS.glob("*/run.py"):
        assert (run.parent / "__init__.py").is_file(), run.parent
    files = [*C.BENCHMARKS.rglob("*.py"), *(C.REPO / "tests" / "benchmarks").rglob("*.py")]
    edit = re.compile(r"sys\.path\s*(\.(insert|append|extend)\b|\[|\+?=)")  # insert, append, slice, assign
    assert edit.search("sys.path.insert(0, x)") and edit.search("sys.path[:0] = [x]") and not edit.search("sys.path)")
    hacks = [str(f) for f in files if f.resolve() != Path(__file__).resolve() and edit.search(f.read_text())]
    assert not hacks, hacks


def test_benchmarks_stay_out_of_the_wheel():
    """The wheel's packages come from src/ only: ``benchmarks`` (a package at the root now) is not one."""
    from setuptools import find_packages

    cfg = tomllib.loads((C.REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert cfg["where"] == ["src"]
    found = find_packages(where=str(C.REPO / "src"))
    assert "dva" in found and not [p for p in found if p.split(".")[0] == "benchmarks"]


def test_no_long_functions_in_benchmarks():
    """As in src/ (tests/test_layering.py): no function body over 80 lines, docstrings aside."""
    long = []
    for f in sorted(C.BENCHMARKS.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                start = first.end_lineno + 1 if has_doc and len(node.body) > 1 else first.lineno
                if node.end_lineno - start + 1 > 80:
                    long.append(f"{f.relative_to(C.REPO)}:{node.lineno} {node.name}")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("module", ["benchmarks.cub100.run"])
def test_python_m_help_from_the_repository_root(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=C.REPO, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=""))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m {module}") and "--profile" in r.stdout


def test_repo_is_this_checkout():
    assert (C.REPO / "benchmarks" / "_common.py").is_file() and C.RESULTS == C.REPO / "benchmarks" / "results"
