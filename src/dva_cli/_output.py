"""``--out`` files of the commands that write one: never replaced without ``--overwrite``.

A command checks its output paths before any work (:func:`refuse_existing`), so a refusal costs a
second, not the minutes of an evaluation or an export. Commands whose output is a resumable
folder (``dva train``, ``dva embed``) decide themselves what in it is theirs to continue.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_overwrite_argument(p: argparse.ArgumentParser, what: str) -> None:
    """Add ``--overwrite``: replace ``what`` when it exists (default: refuse)."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists (default: refuse)")


def refuse_existing(path: str | Path | None, overwrite: bool, option: str = "--out") -> None:
    """Refuse an output file that exists (unless ``overwrite``) or that is a folder.

    Args:
        path: the file a command will write; None or "" = the option was not given.
        overwrite: ``--overwrite`` was given: an existing file may be replaced.
        option: the option that named ``path``, for the message.

    Raises:
        ValueError: naming the path and the way on.
    """
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {p} is a folder: name the file to write")
    if p.exists() and not overwrite:
        raise ValueError(f"{option} {p} exists: pass --overwrite to replace it, or choose another {option}")


def refuse_file_for_folder(path: str | Path | None, option: str = "--out") -> None:
    """Refuse a folder output (``dva embed``, ``dva index``) that names an existing file.

    Raises:
        ValueError: naming the file and the way on.
    """
    if path and Path(path).is_file():
        raise ValueError(f"{option} {path} is a file, but this command writes a folder there: "
                         f"name a new or existing folder (e.g. {Path(path).with_suffix('')}_out/)")
