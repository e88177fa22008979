"""The package walls: ``dva`` (library) <- ``dva_train`` (trainer) <- ``dva_cli`` (command line)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Which packages each one may import (besides itself and third-party code).
ALLOWED = {"dva": set(), "dva_train": {"dva"}, "dva_cli": {"dva", "dva_train"}}


def _imports(path: Path) -> set[str]:
    """Top-level package names of every import in a file, lazy ones inside functions included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_imports_point_down_only(pkg):
    bad = []
    for f in sorted((SRC / pkg).rglob("*.py")):
        wrong = (_imports(f) & set(ALLOWED)) - ALLOWED[pkg] - {pkg}
        if wrong:
            bad.append(f"{f.relative_to(SRC)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


def test_import_dva_stays_light():
    code = ("import sys, dva, dva.evaluation, dva.retrieval, dva.data, dva.opa.sources; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dva_train', 'dva_cli', 'fastapi', 'matplotlib')); print(bad); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_long_functions():
    """No function body in src/ longer than 80 lines (docstrings aside): long ones hide stages."""
    long = []
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                start = first.end_lineno + 1 if has_doc and len(node.body) > 1 else first.lineno
                n = node.end_lineno - start + 1  # the code, not the docstring
                if n > 80:
                    long.append(f"{f.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)


def test_no_benchmark_in_the_wheel():
    names = [p.name for p in SRC.rglob("*.py")]
    assert not [n for n in names if "bench" in n]
