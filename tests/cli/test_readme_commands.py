"""Every `dva COMMAND --flag` the README shows exists: the docs cannot drift from the command line."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

from dva_cli.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _readme_commands() -> list[tuple[int, str, list[str]]]:
    """``(line, command, tokens)`` of every ``dva COMMAND ...`` line inside the README's code blocks."""
    out, in_code, lines = [], False, README.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"\s*dva\s+([a-z][a-z-]*)\b(.*)", line)
        if in_code and m:
            body = m.group(2).split(" #")[0]  # a trailing comment
            while body.rstrip().endswith("\\") and n < len(lines):  # continued lines
                body, n = body.rstrip()[:-1] + " " + lines[n].split(" #")[0], n + 1
            body = re.sub(r"\[[^\]]*\]", " ", body)  # [optional parts] are read below, on their own
            opt = re.findall(r"\[([^\]]*)\]", m.group(2).split(" #")[0])
            out.append((n, m.group(1), shlex.split(body, comments=False) + [t for o in opt for t in o.split()]))
    return out


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _config_keys() -> set[str]:
    """``--KEY`` of the config's top-level scalar keys (``--output_dir``): overrides, not argparse options."""
    from dataclasses import fields

    from dva.config import DVAConfig

    return {f"--{f.name}" for f in fields(DVAConfig)}


def test_the_readme_shows_commands():
    cmds = {c for _n, c, _t in _readme_commands()}
    assert {"train", "embed", "index", "search", "serve", "dedup"} <= cmds


@pytest.mark.parametrize("line,command,tokens", _readme_commands(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_every_readme_flag_exists(line, command, tokens):
    subs = _subparsers()
    assert command in subs, f"README.md:{line}: `dva {command}` is not a command ({sorted(subs)})"
    flags = _flags(subs[command])
    used = {t.split("=")[0] for t in tokens if t.startswith("--") and not t.startswith("---")}
    dotted = {f for f in used if "." in f}  # config overrides (--train.steps): checked by the config tests
    unknown = sorted(used - dotted - flags - _config_keys())
    assert not unknown, f"README.md:{line}: `dva {command}` has no option {', '.join(unknown)}"


def test_a_wrong_flag_would_be_caught(tmp_path, monkeypatch):
    fake = tmp_path / "README.md"
    fake.write_text("```bash\ndva index --embeddings e --out i --no-such-flag\n```\n")
    monkeypatch.setattr(__import__(__name__), "README", fake)
    [(line, cmd, toks)] = _readme_commands()
    with pytest.raises(AssertionError, match="no option --no-such-flag"):
        test_every_readme_flag_exists(line, cmd, toks)


def test_the_store_choices_are_the_librarys():
    from dva.retrieval.backend import STORES
    from dva_cli._store import STORES as CLI_STORES

    assert CLI_STORES == STORES
    for command in ("index", "search", "serve", "dedup"):
        store = next(a for a in _subparsers()[command]._actions if "--store" in a.option_strings)
        assert tuple(store.choices) == STORES, command
