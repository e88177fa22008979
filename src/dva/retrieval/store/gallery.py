"""The gallery's inputs: image files listed from a folder or from a list file.

Both listings follow the project's one rule (:mod:`dva.data._files`): each real file once, a
file and a symlink to it are one image. A folder is walked by :func:`dva.data._files.walk_images`
(symlinked folders followed once, directory loops cut, every skip said as a warning); a list
file that names one image twice is refused, naming both lines.

A list CSV with a header line may carry metadata columns after ``path,label``
(``path,label,source,date``): each item's :attr:`GalleryItem.extra` maps every such column to
its cell (a string; an empty or missing cell is None). The names must be usable in a ``where``
filter and as a database column: ``[A-Za-z_][A-Za-z0-9_]*``, none of ``id``/``path``/``label``/
``vector`` or the filter keywords, each once (letter case ignored: SQLite's column names ignore it).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dva.data import IMAGE_EXTENSIONS
from dva.data._files import ImageRegistry, walk_images
from dva.data.folder import class_roots
from dva.retrieval.filters import COLUMN_RE, KEYWORDS

Label = str | int | None
_HEADERS = ("path", "image", "file", "filename")
RESERVED_COLUMNS = ("id", "path", "label", "vector")


@dataclass(frozen=True)
class GalleryItem:
    """One input image: its path, optional class label and extra metadata columns (CSV order)."""

    path: str
    label: Label = None
    extra: dict[str, str | None] = field(default_factory=dict, hash=False)


def list_images(source: str | Path, label_from_parent: bool = False) -> list[GalleryItem]:
    """List the images of a directory (recursive, sorted) or of a list file.

    Args:
        source: a directory, a text file of paths (one per line) or a CSV ``path[,label]``
            (an optional header line starting with ``path`` names the columns; with one, more
            columns may follow the label: see the module docstring). Relative paths in a list
            are relative to the list file's directory.
        label_from_parent: for a directory, label each image by the folder right under ``source``
            that holds it (as the folder dataset reader does; images in ``source`` itself: no label).

    Returns:
        The items with absolute real paths, in a deterministic order.
    """
    src = Path(source)
    if src.is_dir():
        return _list_folder(src, label_from_parent)
    if src.is_file():
        return read_image_list(src)
    raise FileNotFoundError(f"{src}: no such directory or list file")


def _list_folder(src: Path, label_from_parent: bool) -> list[GalleryItem]:
    registry = ImageRegistry()
    found, notes = walk_images(src, registry)  # each real file once: the dataset readers' rule
    for note in notes:  # said, not silent: a skipped folder or file changes what the gallery holds
        warnings.warn(note, stacklevel=3)
    if not found:
        raise ValueError(f"{src}: no image files found (extensions {sorted(IMAGE_EXTENSIONS)})")
    roots = class_roots(src) if label_from_parent else []
    return [GalleryItem(registry.real(p), _class_folder(roots, p) if label_from_parent else None)
            for p in sorted(found, key=Path)]  # Path order, as before: ids stay those of earlier runs


def _class_folder(roots: list[Path], path: str) -> str | None:
    """The class of ``path`` as the folder dataset reader names it: the folder right under the class
    root that holds it (``dva.data.folder.class_roots``: an image in ``root/Mallard/2024-05/x.jpg``,
    or in ``root/train/Mallard/x.jpg``, is a Mallard); ``None`` for an image in no class folder."""
    for root in roots:
        parts = Path(os.path.relpath(path, root)).parts
        if parts and parts[0] != os.pardir:
            return parts[0] if len(parts) > 1 else None
    return None


def read_image_list(list_path: str | Path) -> list[GalleryItem]:
    """Read a text/CSV list of ``path[,label[,extra...]]`` lines (see :func:`list_images`).

    Raises:
        ValueError: naming the file (and line) for text that is not UTF-8, an unterminated
            quote, a line with more fields than the header names (more than two without a
            header), a bad column name, a path that is a symlink loop, or the same image listed
            twice.
    """
    list_path = Path(list_path)
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{list_path}: not UTF-8 text (byte {exc.start}); save the list as UTF-8") from None
    items: list[GalleryItem] = []
    registry = ImageRegistry()
    extra_cols: tuple[str, ...] = ()
    width, header = 2, False
    for lineno, row in _rows(list_path, text):
        if not items and not header and row[0].lower() in _HEADERS:
            extra_cols, width, header = extra_columns(list_path, lineno, row), max(2, len(row)), True
            continue
        if len(row) > width:
            raise ValueError(_too_wide(list_path, lineno, len(row), width, extra_cols))
        real = _real_path(list_path, lineno, row[0])
        earlier = registry.add(real, where=str(lineno), real=real)
        if earlier is not None:
            raise ValueError(f"{list_path}:{lineno}: {row[0]} is already listed on line {earlier[0]}; "
                             "list each image once")
        cells = row[1:] + [""] * (width - len(row))
        items.append(GalleryItem(real, cells[0] or None, {c: v or None for c, v in zip(extra_cols, cells[1:])}))
    if not items:
        raise ValueError(f"{list_path}: the list holds no image paths")
    return items


def _too_wide(list_path: Path, lineno: int, n: int, width: int, extra_cols: Sequence[str]) -> str:
    if not extra_cols and width == 2:
        return (f"{list_path}:{lineno}: expected 'path' or 'path,label', got {n} fields; to keep more "
                "columns, give the list a header line naming them (path,label,source,...)")
    return f"{list_path}:{lineno}: {n} fields, but the header names {width}; add the missing names to the header"


def extra_columns(list_path: Path, lineno: int, header: Sequence[str]) -> tuple[str, ...]:
    """The extra column names of a header line (after ``path,label``), checked by :func:`check_column_names`."""
    return check_column_names(header[2:], f"{list_path}:{lineno}", first=3, fix="rename it in the header")


def check_column_names(names: Sequence[str], where: str, *, first: int = 1,
                       fix: str = "rename the column") -> tuple[str, ...]:
    """``names`` as extra metadata columns, checked (see the module docstring).

    Args:
        names: the column names, in order.
        where: what the error names first (a file and line).
        first: the number of the first name's column, for the error.
        fix: what the error tells the user to do.

    Raises:
        ValueError: naming ``where`` and the column for a name that is not an identifier, is
            reserved or a filter keyword, or is given twice (letter case ignored).
    """
    names = tuple(names)
    seen: dict[str, int] = {}
    for k, name in enumerate(names, start=first):
        at = f"{where}: column {k} {name!r}"
        if not isinstance(name, str) or not COLUMN_RE.match(name):
            raise ValueError(f"{at}: a column name is letters, digits and '_', not starting with a digit; {fix}")
        if name.lower() in RESERVED_COLUMNS + KEYWORDS:
            raise ValueError(f"{at}: the name is reserved ({', '.join(RESERVED_COLUMNS + KEYWORDS)}); {fix}")
        if name.lower() in seen:
            raise ValueError(f"{at}: named already as column {seen[name.lower()]}; "
                             "give each column its own name")
        seen[name.lower()] = k
    return names


def _rows(list_path: Path, text: str) -> list[tuple[int, list[str]]]:
    """``(line number, stripped fields)`` of every non-blank, non-comment CSV row."""
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    next_start = 1
    for row in reader:
        lineno, next_start = next_start, reader.line_num + 1  # a row starts where the previous one ended
        if any("\n" in c or "\r" in c for c in row):  # csv swallows the rest of the file into one field
            raise ValueError(f"{list_path}:{lineno}: unterminated quote (a field runs over several lines)")
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        out.append((lineno, row))
    return out


def _real_path(list_path: Path, lineno: int, entry: str) -> str:
    """The real path of a list entry (relative to the list's folder); a symlink loop names the line."""
    p = Path(entry).expanduser()
    p = p if p.is_absolute() else list_path.resolve().parent / p
    try:
        return str(p.resolve(strict=False))
    except (RuntimeError, OSError) as exc:  # Python raises RuntimeError on a symlink loop
        raise ValueError(f"{list_path}:{lineno}: {p}: {exc}") from None


def pairs_digest(paths: Sequence[str], labels: Sequence[Any]) -> str:
    """SHA-256 of the ordered ``(path, label)`` pairs: what identifies a gallery (an embedding run's
    inputs, an index's items)."""
    h = hashlib.sha256()
    for p, lab in zip(paths, labels):
        h.update(json.dumps([p, lab]).encode())
        h.update(b"\n")
    return h.hexdigest()
