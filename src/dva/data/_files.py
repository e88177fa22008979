"""Shared helpers of the dataset readers: locating roots, parsing annotation files with
error messages that name the file and line, checking that images exist, and listing image
folders (:func:`walk_images`, :class:`ImageRegistry`: each real file once, loops cut, the same
photo under two classes refused), the rule the gallery listing shares."""
from __future__ import annotations

import os
from collections import deque
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


class ImageRegistry:
    """Every image file of one dataset (or gallery) once, by real path.

    The one de-duplication rule of the project: a file and a symlink to it, or one photo reached
    through two folders, are one image. ``group`` is what the image belongs to, in words (e.g.
    ``"class 'Mallard'"``): the same real file in two groups is a train/test leak, kept in
    :attr:`leaks` for :meth:`raise_leaks` (readers list them all before failing).
    """

    def __init__(self) -> None:
        self._first: dict[str, tuple[str, str]] = {}  # real path -> (where it was listed, group)
        self._dirs: dict[str, str] = {}  # folder as given -> its real path (one realpath per folder)
        self.leaks: list[str] = []

    def real(self, path: str) -> str:
        """The real path of ``path``; costs one ``lstat`` unless the file itself is a symlink."""
        if os.path.islink(path):
            return os.path.realpath(path)
        head, tail = os.path.split(os.path.abspath(path))
        base = self._dirs.get(head)
        if base is None:
            base = self._dirs[head] = os.path.realpath(head)
        return os.path.join(base, tail)

    def add(self, path: str, group: str = "", where: str | None = None,
            real: str | None = None) -> tuple[str, str] | None:
        """Register one image; ``None`` when its real file is new, else the earlier ``(where, group)``.

        A repeat under another group is also appended to :attr:`leaks`.
        """
        real = real if real is not None else self.real(path)
        where = where or path
        first = self._first.get(real)
        if first is None:
            self._first[real] = (where, group)
            return None
        if first[1] != group:
            self.leaks.append(f"{real}\n    {first[1]}: {first[0]}\n    {group}: {where}")
        return first

    def raise_leaks(self, dataset: str, fix: str = "") -> None:
        """Raise ``ValueError`` listing (the first few) images found under two groups, if any."""
        if not self.leaks:
            return
        shown = "\n  ".join(self.leaks[:_MAX_LISTED])
        more = f"\n  ... and {len(self.leaks) - _MAX_LISTED} more" if len(self.leaks) > _MAX_LISTED else ""
        raise ValueError(
            f"{dataset}: {len(self.leaks)} image file(s) are listed under two classes (or on both sides of the "
            "split): a train/test leak, the same photo would be a match of two classes or be trained on and "
            f"retrieved:\n  {shown}{more}\nFix: keep each photo in one class "
            + (fix or "(delete the copy, the symlink or the symlinked folder that puts it in the second class)")
        )


def is_within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or lies inside it (compared by path components)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _entries(folder: str, notes: list[str]) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:  # unreadable folder: said, not silently empty
        notes.append(f"{folder}: cannot be read ({exc.strerror or exc}); skipped")
        return []


def _kind(entry: os.DirEntry) -> str | None:
    """``"dir"``, ``"file"`` (symlinks followed) or ``None``: dangling, looping, or neither."""
    try:
        if entry.is_dir():
            return "dir"
        return "file" if entry.is_file() else None
    except OSError:  # ELOOP: a link to itself, or a ring of links
        return None


def _link_problem(link: str, real: str, ancestors: Sequence[str], visited: dict[str, str]) -> str:
    """Why the symlinked folder ``link`` (to ``real``) must not be followed, or ``""``."""
    if real in visited:
        return f"{link}: a symlink to {real}, already listed as {visited[real]}; not followed again"
    loop = next((a for a in ancestors if is_within(a, real)), None)
    if loop is not None:  # following it would walk the folders it sits in again, forever
        return (f"{link}: a symlink to {real}, a folder that contains {loop} (a directory loop), already listed; "
                "not followed")
    return ""


def _walk(top: str, roots: tuple[str, ...], notes: list[str]
          ) -> tuple[list[tuple[bool, str, str]], list[str]]:
    """``(via a link, path, real path)`` of the plain image files under ``top``, and its image symlinks."""
    top_real = os.path.realpath(top)
    visited = {top_real: top}
    # Folders reached without a symlink are walked first and symlinked ones after, so a photo
    # keeps its plain path when it has one and the notes name the links, not the real folders.
    plain: list[tuple[str, str, tuple[str, ...], bool]] = [(top, top_real, (top_real,), False)]
    linked: deque[tuple[str, tuple[str, ...]]] = deque()
    files: list[tuple[bool, str, str]] = []
    file_links: list[str] = []
    while plain or linked:
        if plain:
            folder, real, chain, via = plain.pop()
        else:
            folder, chain = linked.popleft()
            real, via = os.path.realpath(folder), True
            problem = _link_problem(folder, real, chain + roots, visited)
            if problem:
                notes.append(problem)
                continue
            visited[real] = folder
            chain = (*chain, real)
        subdirs = []
        for e in _entries(folder, notes):
            kind = _kind(e)
            if kind is None:
                if e.is_symlink():  # dangling, or a link to itself: nothing to list, but said
                    notes.append(f"{e.path}: a broken or looping symlink; skipped")
                continue
            if kind == "dir":
                if e.is_symlink():
                    linked.append((e.path, chain))
                elif os.path.join(real, e.name) in visited:  # a bind mount or hard-linked folder
                    notes.append(f"{e.path}: already listed as {visited[os.path.join(real, e.name)]}; skipped")
                else:
                    sub = os.path.join(real, e.name)
                    visited[sub] = e.path
                    subdirs.append((e.path, sub, (*chain, sub), via))
            elif is_image_file(e.name):
                if e.is_symlink():
                    file_links.append(e.path)
                else:
                    files.append((via, e.path, os.path.join(real, e.name)))
        plain.extend(reversed(subdirs))  # popped in name order
    return files, file_links


def walk_images(folder: str | os.PathLike, registry: ImageRegistry | None = None, group: str = "",
                within: Sequence[str | os.PathLike] = ()) -> tuple[list[str], list[str]]:
    """Image files under ``folder``, each real file once, following symlinks with loops cut.

    The listing rule of the gallery (``dva.retrieval.store.list_images``) and of every dataset
    reader that walks folders:

    * hidden entries and non-image files are skipped;
    * a symlinked folder is followed at most once per real path, and not at all when it leads
      back to a folder that contains it, or to one of ``within`` (e.g. the dataset root) or
      above: a directory loop;
    * a file whose real path is already listed (in this walk, or through ``registry`` in
      another folder of the same dataset) is listed once; listed before under another
      ``group`` (class), it is a leak, recorded in ``registry.leaks``. Plain paths win over
      paths through symlinks.

    Args:
        folder: The folder to walk.
        registry: Shared by the walks of one dataset (default: a fresh one for this walk).
        group: What the images under ``folder`` belong to, in words (e.g. ``"class 'Mallard'"``).
        within: Folders this walk lies in (the dataset root): links back to them are loops.

    Returns:
        ``(paths, notes)``: the image paths (as reached, not resolved; sorted) and one note per
        skipped link, folder or repeated file, saying why.
    """
    reg = registry if registry is not None else ImageRegistry()
    notes: list[str] = []
    files, file_links = _walk(os.fspath(folder), tuple(os.path.realpath(w) for w in within), notes)
    files += [(True, link, os.path.realpath(link)) for link in file_links]
    out = []
    for _via, path, real in sorted(files):
        earlier = reg.add(path, group, real=real)
        if earlier is None:
            out.append(path)
        elif earlier[1] == group:
            also = "" if earlier[0] == real else f" (real path {real})"
            notes.append(f"{path}: the same file as {earlier[0]}{also}; listed once")
    return sorted(out), notes
