"""Shared helpers of the dataset readers: locating roots, parsing annotation files with
error messages that name the file and line, and checking that images exist."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dva.data.records import ImageRecord

# The one list of image file extensions: dataset readers and gallery listing (dva.retrieval.store) use it.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_MAX_LISTED = 10


def find_root(root: str | os.PathLike, marker: str, subdirs: Sequence[str], dataset: str,
              hint: str) -> Path:
    """Return the folder that holds ``marker``: ``root`` itself or one of ``root/<subdir>``.

    Lets users pass either the dataset folder or the folder they extracted the archive into.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise FileNotFoundError(f"{dataset}: root folder {base} does not exist. {hint}")
    for cand in [base, *(base / s for s in subdirs)]:
        if (cand / marker).exists():
            return cand.resolve()
    tried = ", ".join(str(c / marker) for c in [base, *(base / s for s in subdirs)])
    raise FileNotFoundError(f"{dataset}: cannot find {marker} (looked for {tried}). {hint}")


def require_files(folder: Path, names: Iterable[str], dataset: str, hint: str) -> None:
    """Raise ``FileNotFoundError`` listing every missing annotation file at once."""
    missing = [str(folder / n) for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{dataset}: missing file(s) {', '.join(missing)}. {hint}")


def read_table(path: Path, columns: int, sep: str | None = None,
               layout: str = "") -> list[tuple[int, list[str]]]:
    """Read a text table; the last of ``columns`` fields takes the rest of the line.

    Args:
        path: The file.
        columns: Number of fields per line (the last one may contain spaces).
        sep: Field separator; ``None`` splits on runs of whitespace.
        layout: Human description of a line (e.g. ``"<image id> <path>"``) for errors.

    Returns:
        ``(line number, fields)`` for every non-blank line, fields stripped.
    """
    rows: list[tuple[int, list[str]]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc}); expected lines {layout}") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(sep, columns - 1) if sep else line.split(None, columns - 1)
        parts = [p.strip() for p in parts]
        if len(parts) != columns or any(p == "" for p in parts):
            raise ValueError(
                f"{path}:{lineno}: malformed line {line.strip()!r}: expected {columns} fields "
                f"{layout}".rstrip() + "; fix or remove this line"
            )
        rows.append((lineno, parts))
    if not rows:
        raise ValueError(f"{path}: file is empty; expected lines {layout}")
    return rows


def to_int(value: str, path: Path, lineno: int, what: str) -> int:
    """Parse an integer field or raise ``ValueError`` naming file, line and field."""
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            f = float("nan")
        if f == f and f.is_integer():  # "12.0" from some converters is fine
            return int(f)
        raise ValueError(f"{path}:{lineno}: {what} must be an integer, got {value!r}") from None


def to_float(value: str, path: Path, lineno: int, what: str) -> float:
    """Parse a float field or raise ``ValueError`` naming file, line and field."""
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be a number, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"{path}:{lineno}: {what} must be finite, got {value!r}")
    return out


def to_box(values: Sequence[str], path: Path, lineno: int) -> tuple[float, float, float, float]:
    """Parse ``x, y, w, h`` and check that width and height are positive."""
    x, y, w, h = (to_float(v, path, lineno, n) for v, n in zip(values, ("x", "y", "w", "h")))
    if w <= 0 or h <= 0:
        raise ValueError(f"{path}:{lineno}: box width and height must be > 0, got w={w}, h={h}")
    return (x, y, w, h)


def corners_to_box(x1: float, y1: float, x2: float, y2: float, where: str
                   ) -> tuple[float, float, float, float]:
    """Convert 1-based inclusive MATLAB corners (Cars, Aircraft, Dogs) to 0-based ``x, y, w, h``."""
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{where}: box corners out of order: x1={x1}, y1={y1}, x2={x2}, y2={y2}")
    return (float(x1) - 1.0, float(y1) - 1.0, float(x2 - x1 + 1), float(y2 - y1 + 1))


def unique_ids(rows: list[tuple[int, list[str]]], path: Path) -> dict[str, tuple[int, list[str]]]:
    """Map the first field of each row to ``(line number, remaining fields)``.

    A repeated id is an error (it would silently drop or double an image).
    """
    out: dict[str, tuple[int, list[str]]] = {}
    for lineno, parts in rows:
        if parts[0] in out:
            raise ValueError(f"{path}:{lineno}: duplicate id {parts[0]!r} (first on line "
                             f"{out[parts[0]][0]}); each id must appear once")
        out[parts[0]] = (lineno, parts[1:])
    return out


def check_same_ids(reference: dict[str, object], other: dict[str, object], ref_path: Path,
                   other_path: Path) -> None:
    """Require two annotation files to describe exactly the same image ids."""
    missing = [k for k in reference if k not in other]
    extra = [k for k in other if k not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) of {ref_path.name} absent from {other_path}"
                         f" (e.g. {', '.join(missing[:5])})")
        if extra:
            parts.append(f"{len(extra)} id(s) in {other_path} unknown to {ref_path.name}"
                         f" (e.g. {', '.join(extra[:5])})")
        raise ValueError("; ".join(parts) + "; the annotation files must list the same images")


def check_images_exist(records: Iterable[ImageRecord], dataset: str, hint: str = "") -> None:
    """Raise ``FileNotFoundError`` listing (the first few) image files that do not exist."""
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    if missing:
        shown = "\n  ".join(missing[:_MAX_LISTED])
        more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} image file(s) listed in the annotations do not exist:\n"
            f"  {shown}{more}\n{hint}".rstrip()
        )


def is_image_file(name: str) -> bool:
    """Whether a file name has a known image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def walk_images(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Image files under ``folder``, sorted per folder, following symlinks to files and folders once.

    A folder reached again through a symlink (a loop, or two links to one place) is not walked
    twice: its images would be listed again, under another class. Hidden entries are skipped.

    Returns:
        ``(paths, notes)``: the image paths (as reached, not resolved) and one note per folder
        or link that was skipped, saying why.
    """
    out: list[str] = []
    notes: list[str] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, files in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            notes.append(f"{dirpath}: already listed through another path (a symlink loop or a second "
                         "link to the same folder); skipped")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            if not is_image_file(f):
                continue
            if not os.path.exists(p):  # a dangling or looping link to a file
                notes.append(f"{p}: a broken or looping symlink; skipped")
                continue
            out.append(p)
    return out, notes
