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


def test_cli_parser_and_import_dva_skip_torch():
    """`dva --help`, an argparse error and `import dva` answer in a fraction of a second: the
    parser of every command is built without torch or timm (seconds to import on a small machine)."""
    code = ("import sys, dva; from dva_cli.cli import build_parser; p = build_parser(); "
            "p.parse_known_args(['train', '--preset', 'lite2']); p.parse_known_args(['eval', '--dataset', 'folder', "
            "'--root', 'x']); bad = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules); "
            "print(bad); assert not bad, bad; from dva import build_model, DVAModel; assert callable(build_model)")
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


# ----------------------------------------------------------------------------- inside dva
# The parts of ``dva`` from the bottom up: a part imports only parts before it. A *leaf* module
# (one that imports nothing from dva: dva.utils, dva.opa.names, dva.runtime's RUNTIMES and cache
# paths) holds shared names and may be imported from any layer; that is how config takes its
# choices from the registries without the registries' code.
LAYERS = ["utils", "ica_names", "configs", "config", "data", "transforms", "bundled", "backbone", "ica", "model", "losses", "dpt",
          "objective", "checkpoint", "runtime", "opa", "metrics", "evaluation", "retrieval"]


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return getattr(t, "id", None) == "TYPE_CHECKING" or getattr(t, "attr", None) == "TYPE_CHECKING"


def _dva_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The dva modules ``path`` imports (lazy ones included, ``if TYPE_CHECKING:`` blocks not)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(m) for n in ast.walk(tree) if isinstance(n, ast.If) and _is_type_checking(n)
                   for m in ast.walk(n)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for n in ast.walk(tree):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                base = ".".join(up + ([n.module] if n.module else []))
            # ``from pkg import mod`` is an edge to the module; ``from pkg import name`` to pkg itself.
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in n.names}
    out = {m for m in out if m in modules}
    # Importing dva.a.b from outside dva.a runs dva.a's __init__ first: an edge to it as well.
    out |= {".".join(m.split(".")[:i]) for m in out for i in range(2, len(m.split(".")))}
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
    return out - own


def dva_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the dva modules it imports, for every module of ``src/dva``."""
    files = {_module_name(p, src): p for p in sorted((src / "dva").rglob("*.py"))}
    return {m: _dva_imports(p, m, set(files)) for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v) and (c := visit(v)):
                return c
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m) and (c := visit(m)):
            return c
    return None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    def layer(m: str) -> int:
        return LAYERS.index(m.split(".")[1])

    leaves = {m for m, deps in graph.items() if not deps}
    return [f"{m} -> {d}" for m, deps in sorted(graph.items()) if m != "dva" for d in sorted(deps)
            if d not in leaves and layer(d) > layer(m)]


def test_every_part_of_dva_has_a_layer():
    parts = {m.split(".")[1] for m in dva_graph() if m != "dva"}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS (at the layer it belongs)"


def test_no_import_circle_inside_dva():
    assert _cycle(dva_graph()) is None, " -> ".join(_cycle(dva_graph()))


def test_no_arrow_back_up_inside_dva():
    assert not _upward(dva_graph()), "\n".join(_upward(dva_graph()))


def test_the_layering_checks_can_fail(tmp_path):
    pkg = tmp_path / "dva"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from dva.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from dva.data.a import x\n")  # a lazy import closes a circle
    (pkg / "config.py").write_text("from dva.data import a\n")  # config sits below data
    graph = dva_graph(tmp_path)
    assert _cycle(graph) == ["dva.data.a", "dva.data.b", "dva.data.a"]
    assert "dva.config -> dva.data.a" in _upward(graph)

