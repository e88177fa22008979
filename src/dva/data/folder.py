"""A generic class-per-folder image tree (ImageNet / torchvision ``ImageFolder`` style).

Accepted layouts (``root`` is the folder given on the command line)::

    root/<class>/<any depth>/<image>           open protocol only
    root/images/<class>/...                    same, when ``images`` is root's only folder
    root/{train,test}/<class>/...              both protocols (a ``val`` folder joins train)

Class ids are given in case-insensitive sorted order of the class-folder names (over train
and test together). Open protocol: the first ``C // 2`` classes train, the rest test. Closed
protocol: the ``train``/``test`` folders. Hidden files and non-image files are ignored;
empty class folders are skipped with a warning.

Symlinks (:func:`dva.data._files.walk_images`, the gallery listing's rule): each image is listed
once by real path over the whole tree; a class folder that links to another class folder is that
class; a folder link back to the root (or any folder containing it) is a loop, not followed; each
case is a :class:`~dva.data.protocols.DatasetWarning`. A photo under two class folders (or in
both ``train/`` and ``test/``) is a train/test leak: ``ValueError`` naming both.
"""
from __future__ import annotations

import os
from pathlib import Path

from dva.data import _files as F
from dva.data.protocols import CLOSED, check_protocol, finish_split, half_of, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "folder"
HINT = ("Expected root/<class>/<image> (or root/train/<class>/... and root/test/<class>/... for "
        "the closed protocol).")


def _subdirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_roots(root: str | os.PathLike) -> list[Path]:
    """The folders whose sub-folders are the classes, by the reader's rule: ``root/train``,
    ``root/val`` and ``root/test`` when ``root`` holds ``train/`` and ``test/``; ``root/images`` when
    that is ``root``'s only folder and ``root`` holds no image; else ``root`` itself."""
    base = Path(root)
    subs = _subdirs(base)
    if "train" in subs and "test" in subs:
        return [base / s for s in ("train", "val", "test") if s in subs]
    if subs in (["images"], ["Images"]) and not any(F.is_image_file(f) for f in os.listdir(base)):
        return [base / subs[0]]
    return [base]


def _group(name: str, part: str) -> str:
    """How a class folder is named in leak errors; ``val`` joins ``train``, so they are one side."""
    side = {"val": "train"}.get(part, part)
    return f"class {name!r}" + (f" ({side})" if side in ("train", "test") else "")


def scan_classes(folder: Path, registry: F.ImageRegistry | None = None, part: str = "",
                 within: tuple[Path, ...] = ()) -> tuple[dict[str, list[str]], list[str]]:
    """Map class-folder name -> sorted image paths; also return warnings.

    Every image is listed once by real path across all classes (``registry``, shared by the
    parts of one dataset); a class folder that is a symlink to another class folder is that
    class, listed once; one leading back to the dataset root (``within``) is a loop, skipped.
    """
    reg = registry if registry is not None else F.ImageRegistry()
    roots = tuple(os.path.realpath(p) for p in (*within, folder))
    notes = []
    classes: dict[str, list[str]] = {}
    by_real: dict[str, str] = {}
    # Real folders before symlinks, so an alias never displaces the class it points to.
    for name in sorted(_subdirs(folder), key=lambda n: ((folder / n).is_symlink(), n.casefold(), n)):
        real = os.path.realpath(folder / name)
        if real in by_real:
            notes.append(f"{NAME}: class folder {folder / name} is a symlink to {real}, the folder of class "
                         f"{by_real[real]!r}: one class, listed once as {by_real[real]!r}; remove the link "
                         "if that is not meant")
            continue
        loop = next((r for r in roots if F.is_within(r, real)), None)
        if loop is not None:
            notes.append(f"{NAME}: class folder {folder / name} is a symlink to {real}, which contains the "
                         f"dataset folder {loop} (a directory loop); skipped")
            continue
        by_real[real] = name
        files, skipped = F.walk_images(folder / name, reg, _group(name, part), roots)
        notes += [f"{NAME}: {n}" for n in skipped]
        if files:
            classes[name] = files
        else:
            notes.append(f"{NAME}: class folder {folder / name} holds no images; skipped")
    stray = [f for f in os.listdir(folder) if F.is_image_file(f) and (folder / f).is_file()]
    if stray:
        notes.append(f"{NAME}: {len(stray)} image(s) directly in {folder} (outside any class "
                     "folder) are ignored")
    return classes, notes


def read_folder(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read a class-per-folder tree.

    Args:
        root: The tree's root folder.
        protocol: ``"open"`` (first half of the classes / second half) or ``"closed"``
            (needs ``train/`` and ``test/`` folders).
        strict_counts: Unused (no published counts); kept for the common reader signature.
    """
    protocol = check_protocol(protocol)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{NAME}: root folder {base} does not exist. {HINT}")
    base = base.resolve()
    roots = class_roots(base)
    reg = F.ImageRegistry()
    if len(roots) > 1:  # train/ (val/) test/
        parts = {r.name: scan_classes(r, reg, r.name, (base,)) for r in roots}
    else:
        if protocol == CLOSED:
            raise ValueError(f"{NAME}: the closed protocol needs {base / 'train'} and "
                             f"{base / 'test'} folders (each with one sub-folder per class); "
                             f"{base} has none. Use --protocol open, or arrange the tree so.")
        base = roots[0]
        parts = {"all": scan_classes(base, reg)}
    reg.raise_leaks(NAME, "folder: delete the copy, the symlink or the symlinked folder that puts it in the "
                    "second class folder, or in both train/ and test/")
    # Case-insensitive: a plain sort puts every capitalised folder first (e.g. Oxford Pets: all cat
    # breeds, then all dog breeds), and the open split would train on one kind and test on the other.
    names = sorted({c for classes, _n in parts.values() for c in classes}, key=lambda n: (n.casefold(), n))
    if len(names) < 2:
        raise ValueError(f"{NAME}: found {len(names)} class folder(s) with images under {base}; "
                         f"retrieval needs at least 2. {HINT}")
    ids = {n: i for i, n in enumerate(names)}
    notes = [n for _c, ns in parts.values() for n in ns]
    recs = {k: [ImageRecord(p, ids[c]) for c, files in classes.items() for p in files]
            for k, (classes, _n) in parts.items()}
    class_names = {i: n for n, i in ids.items()}
    if protocol == CLOSED:
        train = recs["train"] + recs.get("val", [])
        test = recs["test"]
    else:
        every = [r for rs in recs.values() for r in rs]
        train, test = split_by_class(every, half_of(len(names)))
    rule = (f"open: the first {half_of(len(names))} of the {len(names)} class folders in case-insensitive name "
            "order train, the rest test" if protocol != CLOSED else "closed: the train/ and test/ folders")
    return finish_split(NAME, protocol, train, test, class_names, strict_counts, notes, rule=rule)
