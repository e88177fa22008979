"""dva.runtime's layout: each module imports only those before it; one definition of each shared name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import dva.runtime

RUNTIME = Path(dva.runtime.__file__).parent
SRC = RUNTIME.parents[1]
# The order of dva/runtime/__init__.py: a module may import modules of a lower rank only.
RANK = {"protocol": 0, "sessions": 0, "cache": 0, "torch_embedder": 1, "onnx_export": 2, "onnx_embedder": 3,
        "frozen": 4, "load": 5}


def _runtime_imports(path: Path) -> set[str]:
    """The dva.runtime modules a file imports, lazy ones included, ``if TYPE_CHECKING:`` blocks not."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("dva.runtime.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "dva.runtime":
            out |= {a.name for a in node.names if a.name in RANK}  # ``from dva.runtime import sessions``
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dva.runtime."):
            out.add(node.module.split(".")[2])
    return out


def test_every_module_is_ranked():
    assert {p.stem for p in RUNTIME.glob("*.py")} - {"__init__"} == set(RANK)


@pytest.mark.parametrize("name", sorted(RANK))
def test_imports_point_to_earlier_modules_only(name):
    later = {m for m in _runtime_imports(RUNTIME / f"{name}.py") if RANK[m] >= RANK[name]}
    assert not later, f"dva/runtime/{name}.py imports {sorted(later)}, not before it in dva.runtime's order"


def test_the_rank_check_catches_a_backward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dva.runtime.load import x\n"
                   "def f():\n    from dva.runtime.frozen import y\n    import dva.runtime.cache\n"
                   "from dva.runtime import RUNTIMES, sessions\n")
    assert _runtime_imports(bad) == {"frozen", "cache", "sessions"}


def test_the_old_modules_are_gone():
    old = ("inference", "onnx_export", "onnx_embedder", "frozen")
    assert not [m for m in old if (SRC / "dva" / f"{m}.py").exists()]


@pytest.mark.parametrize("pattern,home", [
    (r"^\s*RUNTIMES\s*=", "runtime/__init__.py"),
    (r"^\s*def onnx_available\(", "runtime/sessions.py"),
    (r"^\s*def providers_for\(", "runtime/sessions.py"),
    (r"^\s*def cache_dir\(", "runtime/cache.py"),
    (r"^\s*def (onnx|frozen)_cache_path\(", "runtime/cache.py"),
])
def test_one_definition(pattern, home):
    where = [str(p.relative_to(SRC / "dva")) for p in SRC.rglob("*.py")
             if re.search(pattern, p.read_text(), re.MULTILINE)]
    assert where and set(where) == {home}, where


def test_runtimes_are_the_ones_every_user_offers():
    from dva_cli import _model

    assert dva.runtime.RUNTIMES == ("auto", "torch", "onnx")
    assert _model.RUNTIMES is dva.runtime.RUNTIMES
