"""Helpers shared by the benchmarks: provenance (machine, commit, command), JSON, markdown, statistics.

Every benchmark lives in its own folder of the ``benchmarks`` package and runs as a module from the
repository root (``python -m benchmarks.<name>.run``); it imports this one as
``from benchmarks import _common as C``. The repository root is found from this file, not from an
installed package (``benchmarks`` is not in the wheel).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
DOC = REPO / "docs" / "BENCHMARKS.md"

# The script paths that result files recorded (same flags) -> the module that runs that benchmark
# now. The docs show a recorded command in its current form, ``python -m <module> <flags>``.
LEGACY_SCRIPTS = {
    # before each benchmark had its own folder
    "benchmarks/cub100.py": "benchmarks.cub100.run",
    "benchmarks/vit_efficiency.py": "benchmarks.vit_efficiency.run",
    "benchmarks/metrics_speed.py": "benchmarks.metrics_speed.run",
    "benchmarks/search_speed.py": "benchmarks.search_speed.run",
    # before benchmarks/ was a package (each script run as a file, the path hack at its top)
    **{f"benchmarks/{name}/run.py": f"benchmarks.{name}.run"
       for name in ("activation_maps", "boxes", "cub100", "embed_speed", "metrics_speed", "search_speed",
                    "serve_load", "vit_efficiency")},
    "benchmarks/cub100/summary.py": "benchmarks.cub100.summary",
    "benchmarks/cub100/beta_figure.py": "benchmarks.cub100.beta_figure",
}


# ----------------------------------------------------------------------------- provenance
def package_version(module: str) -> str | None:
    """The installed version of the distribution that provides ``module`` (None when absent).

    Read from the package metadata, not by importing the module: importing some (e.g.
    pytorch_metric_learning, which patches every FAISS index's ``search`` for torch tensors) changes
    the process for whatever runs after.
    """
    import sys
    from importlib import metadata

    if module in sys.modules:  # already imported: its own version string (torch's carries its build, +cu...)
        return getattr(sys.modules[module], "__version__", None)
    for dist in metadata.packages_distributions().get(module, []) or [module]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info(packages: Sequence[str] = ("torch", "timm")) -> dict[str, Any]:
    """CPU, memory, platform and the versions of ``packages`` (None where one is not importable).

    Args:
        packages: module names whose ``__version__`` is recorded, each under its own key.

    Returns:
        A JSON-serialisable dict (``torch_threads`` only when torch is importable).
    """
    model = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "cpu_model": model, "processor": platform.processor() or platform.machine(),
        "ram_gb": round(mem / 2**30, 1) if mem else None, "memory_total_bytes": mem,
        "platform": platform.platform(), "python": platform.python_version(),
    }
    for name in packages:
        info[name] = package_version(name)
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def git_commit(repo: Path = REPO) -> str | None:
    """The checked-out commit of ``repo``, or None (no git, not a checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def module_name(script: str | Path) -> str:
    """The module of a benchmark file, e.g. ``benchmarks/cub100/run.py`` -> ``benchmarks.cub100.run``.

    Raises:
        ValueError: ``script`` is not a ``.py`` file inside the ``benchmarks`` package.
    """
    path = Path(script).resolve()
    if path.suffix != ".py" or not path.is_relative_to(BENCHMARKS):
        raise ValueError(f"{script} is not a module of the benchmarks package ({BENCHMARKS})")
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def command_line(script: str | Path, argv: Sequence[str]) -> str:
    """``python -m <the benchmark's module> <argv>``, shell-quoted (a file outside the package: ``python <file>``)."""
    try:
        shown = ["-m", module_name(script)]
    except ValueError:
        shown = [repo_relative(Path(script))]
    return " ".join(["python", *shown, *(shlex.quote(a) for a in argv)])


def current_command(command: str) -> str:
    """A recorded command in its current form: an old script path becomes ``-m <module>`` (flags kept)."""
    for old, new in LEGACY_SCRIPTS.items():
        # Whole tokens only: "benchmarks/cub100.py" must not match inside a longer path.
        command = re.sub(rf"(?<!\S)python {re.escape(old)}(?=\s|$)", f"python -m {new}", command)
    return command


def child_command(script: str | Path, *args: str) -> list[str]:
    """The argv that runs a benchmark module in a child process (this interpreter, ``-m``)."""
    return [sys.executable, "-m", module_name(script), *args]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the repository first on ``PYTHONPATH``.

    ``python -m benchmarks...`` finds the package through the working folder; a child started from
    another folder (or by a parent run from one) finds it through this.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def git_dirty(repo: Path = REPO) -> bool | None:
    """Whether tracked files differ from the checked-out commit (the code that runs is then no
    commit); None without git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def run_measured(cmd: Sequence[str], log: str | Path, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a child process, its stdout and stderr to the file ``log``, and measure it.

    What a benchmark records beside a run's own numbers (the way ``benchmarks.datasets.run.run_one``
    measures its workers, for any command): ``exit_code``; ``wall_seconds``; ``peak_rss_mb``, the
    child's own peak resident memory from ``wait4`` (a grandchild's is not counted: run the work in
    the child itself); ``loadavg_1m`` at start and end (other load on the machine slows a run);
    ``commit`` and ``git_dirty`` at the start.

    Args:
        cmd: the argv (not through a shell).
        log: the file that receives the child's output (created or truncated; its folder is made).
        env: the child's environment (default: this process's).
        cwd: the child's working folder (default: this process's).
    """
    import time

    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    load0, commit, dirty, t0 = os.getloadavg()[0], git_commit(), git_dirty(), time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return {"exit_code": proc.returncode, "wall_seconds": time.time() - t0, "peak_rss_mb": ru.ru_maxrss / 1024.0,
            "loadavg_1m": [load0, os.getloadavg()[0]], "commit": commit, "git_dirty": dirty}


def provenance(script: str | Path, argv: Sequence[str], packages: Sequence[str] = ("torch", "timm")) -> dict[str, Any]:
    """What every result file records: ``command``, ``date``, ``git_commit`` and ``machine``."""
    return {"command": command_line(script, argv), "date": now_utc(), "git_commit": git_commit(),
            "machine": machine_info(packages)}


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it, else as given."""
    p = Path(path).resolve()
    return p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else str(path)


# ----------------------------------------------------------------------------- files
def write_json(path: str | Path, data: Any, indent: int = 1) -> Path:
    """Write ``data`` as JSON atomically (a temporary file beside it, then ``os.replace``).

    Args:
        path: the destination; its folder is created.
        data: JSON-serialisable data.
        indent: JSON indentation.

    Returns:
        The destination path.
    """
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (a temporary file beside ``path``, then ``os.replace``); creates the folder.

    A reader (or a crash) never sees half a file: the old one stays whole until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_result(path: str | Path, result: dict[str, Any], script: str | Path, argv: Sequence[str],
                 packages: Sequence[str] = ("torch", "timm")) -> dict[str, Any]:
    """Add the provenance (command, date, commit, machine) missing from ``result`` and write it atomically.

    Args:
        path: the JSON file.
        result: the benchmark's numbers; keys it already has are kept.
        script: the benchmark script (for the recorded command).
        argv: its arguments.
        packages: module versions recorded in ``machine``.

    Returns:
        The result as written.
    """
    missing = {k: v for k, v in provenance(script, argv, packages).items() if k not in result}
    result.update(missing)
    write_json(path, result)
    return result


# ----------------------------------------------------------------------------- markdown
def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] | None = None) -> str:
    """A markdown table.

    Args:
        header: the column titles.
        rows: the cells, one sequence per row (``str()`` of each; empty cells stay blank).
        align: per column ``l`` (``---``) or ``r`` (``---:``), as a string or a sequence; default all ``l``.

    Returns:
        The table, one line per row, no trailing newline.
    """
    align = list(align or "l" * len(header))
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} columns, header {len(header)}")

    def line(cells: Sequence[Any]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    sep = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def replace_section(doc: str, section: str, body: str) -> str:
    """Replace ``section`` (a ``## `` heading up to the next ``## `` heading) in ``doc``, or append it."""
    if not doc.strip():
        doc = "# Benchmarks\n"
    lines = doc.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == section), None)
    new = [section, ""] + body.strip("\n").splitlines() + [""]
    if start is None:
        out = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        out = lines[:start] + new + lines[end:]
    return "\n".join(out).rstrip("\n") + "\n"


def update_doc(doc: str | Path, section: str, body: str) -> None:
    """Replace (or append) ``section`` of the markdown file ``doc`` with ``body``; other sections are kept."""
    doc = Path(doc)
    text = doc.read_text() if doc.is_file() else ""
    write_text(doc, replace_section(text, section, body))


def put_region(doc: str, region: str, body: str, heading: str | None = None) -> str:
    """``doc`` with the body of ``<!-- rendered: region -->`` ... ``<!-- /rendered: region -->`` replaced.

    Without the markers: with ``heading``, the section (``## heading``) is replaced or appended with
    the markers around ``body``; without, a ValueError (the region has to be placed by hand first).
    """
    begin, end = f"<!-- rendered: {region} -->", f"<!-- /rendered: {region} -->"
    if begin not in doc:
        if heading is None:
            raise ValueError(f"no region `{region}` to fill")
        return replace_section(doc, heading, f"{begin}\n{body.strip()}\n{end}")
    i, j = doc.index(begin) + len(begin), doc.index(end)
    return doc[:i] + f"\n{body.strip()}\n" + doc[j:]


def get_region(doc: str, region: str) -> str | None:
    """The body of ``region`` in ``doc``; None when the doc has no such region."""
    begin, end = f"<!-- rendered: {region} -->", f"<!-- /rendered: {region} -->"
    i, j = doc.find(begin), doc.find(end)
    return None if i < 0 or j < i else doc[i + len(begin):j]


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically (a reader never sees half a file) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


Region = tuple  # (doc path, region name, heading or None, body or None): see check_regions


def check_regions(regions: Iterable[Region], compare: Callable[[str, str, str], list[str]], command: str) -> list[str]:
    """Differences between docs regions and their renderings.

    Args:
        regions: ``(doc, region, heading, body)``; ``body`` None = no result yet: the region must be absent.
        compare: ``(doc text, rendering, where) -> problems`` (benchmarks.cub100.quantities.compare).
        command: what rewrites them, for the message of a missing region.
    """
    out = []
    for doc, region, _heading, body in regions:
        where = f"{repo_relative(Path(doc))} [{region}]"
        have = get_region(Path(doc).read_text(), region)
        if body is None:
            if have is not None:
                out.append(f"{where}: the region is there but its result is not")
        elif have is None:
            out.append(f"{where}: no such region; run `{command}`")
        else:
            out += compare(have, body, where)
    return out


def write_regions(regions: Iterable[Region]) -> list[str]:
    """Write every region that has a body (a region with a heading is placed as that section); the written names."""
    done = []
    for doc, region, heading, body in regions:
        if body is not None:
            write_text(doc, put_region(Path(doc).read_text(), region, body, heading))
            done.append(f"{repo_relative(Path(doc))} [{region}]")
    return done


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        raise ValueError("mean_std of no values")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
