"""Any image list given as a CSV file: ``path,label[,x,y,w,h]``.

* ``root`` is the CSV file, or a folder holding ``labels.csv`` (or exactly one ``.csv``).
* Relative paths are relative to the CSV file's folder.
* An optional header row names the columns: ``path`` and ``label`` are required, ``x, y,
  w, h`` (box, pixels) and ``split`` (``train``/``test``/``query``/``gallery``) optional,
  in any order; other columns are ignored. Without a header the columns are positional:
  ``path,label`` or ``path,label,x,y,w,h``.
* Labels may be integers or names. If every label is an integer they are ordered
  numerically, otherwise as strings; ids are the positions in that order (0..C-1) and the
  original labels become the class names.
* Open protocol: the first ``C // 2`` classes train, the rest test (``split`` is ignored).
  Closed protocol: needs the ``split`` column; rows marked ``query``/``gallery`` form a
  query-vs-gallery test (``Split.query``/``Split.gallery``).
"""
from __future__ import annotations

import csv
from pathlib import Path

from dva.data import _files as F
from dva.data.protocols import CLOSED, check_protocol, finish_split, half_of, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "csv"
HINT = "Expected CSV rows path,label[,x,y,w,h], optionally with a header row naming the columns."
SPLIT_VALUES = ("train", "test", "query", "gallery")


def find_csv(root: str) -> Path:
    """The CSV file designated by ``root`` (a file, or a folder with ``labels.csv``)."""
    p = Path(root).expanduser()
    if p.is_file():
        return p.resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"{NAME}: {p} does not exist. {HINT}")
    if (p / "labels.csv").is_file():
        return (p / "labels.csv").resolve()
    found = sorted(p.glob("*.csv"))
    if len(found) == 1:
        return found[0].resolve()
    raise FileNotFoundError(f"{NAME}: {p} is a folder without labels.csv and with "
                            f"{len(found)} other .csv files; pass the CSV file itself as root")


def read_rows(path: Path) -> list[dict[str, object]]:
    """Parse the CSV into ``{"line", "path", "label", "box", "split"}`` dicts, validated."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(i, r) for i, r in enumerate(csv.reader(fh), 1) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: the CSV is empty. {HINT}")
    head = [c.strip().lower() for c in rows[0][1]]
    if "path" in head and "label" in head:
        col = {name: head.index(name) for name in ("path", "label", "x", "y", "w", "h", "split")
               if name in head}
        box_cols = [n for n in ("x", "y", "w", "h") if n in col]
        if box_cols and len(box_cols) != 4:
            raise ValueError(f"{path}:1: the header has box column(s) {box_cols} but a box needs "
                             "all of x, y, w, h")
        width = len(head)
        rows = rows[1:]
    else:
        width = len(rows[0][1])
        if width not in (2, 6):
            raise ValueError(f"{path}:{rows[0][0]}: expected 2 (path,label) or 6 "
                             f"(path,label,x,y,w,h) columns, got {width}. {HINT}")
        col = dict(zip(("path", "label", "x", "y", "w", "h"), range(width)))
    out = []
    for lineno, r in rows:
        if len(r) != width:
            raise ValueError(f"{path}:{lineno}: expected {width} columns, got {len(r)}")
        cell = {k: r[i].strip() for k, i in col.items()}
        if not cell["path"] or not cell["label"]:
            raise ValueError(f"{path}:{lineno}: empty path or label")
        box = None
        if "x" in cell:
            vals = [cell[k] for k in ("x", "y", "w", "h")]
            if any(vals):
                if not all(vals):
                    raise ValueError(f"{path}:{lineno}: give all of x, y, w, h or none of them")
                box = F.to_box(vals, path, lineno)
        split = cell.get("split", "").lower() or None
        if split is not None and split not in SPLIT_VALUES:
            raise ValueError(f"{path}:{lineno}: split must be one of {', '.join(SPLIT_VALUES)}, "
                             f"got {cell['split']!r}")
        img = Path(cell["path"]).expanduser()
        img = img if img.is_absolute() else path.parent / img
        out.append({"line": lineno, "path": str(img), "label": cell["label"], "box": box,
                    "split": split})
    if not out:
        raise ValueError(f"{path}: the CSV has a header but no rows. {HINT}")
    return out


def check_rows_unique(path: Path, rows: list[dict[str, object]]) -> None:
    """Refuse two rows naming one image file (compared by real path: ``a.jpg``, ``./a.jpg`` and a
    symlink to it are one file), with both lines; under two labels it is also a train/test leak."""
    reg = F.ImageRegistry()
    for r in rows:
        earlier = reg.add(str(r["path"]), str(r["label"]), where=str(r["line"]))
        if earlier is None:
            continue
        line, label = earlier
        if label == r["label"]:
            raise ValueError(f"{path}:{r['line']}: image {r['path']} already listed on line {line}; "
                             "a duplicate counts twice in every metric: delete one of the two rows")
        raise ValueError(f"{path}:{r['line']}: image {r['path']} is labelled {r['label']!r} here and "
                         f"{label!r} on line {line} (the same file): the same photo in two classes is a "
                         "train/test leak; keep the row with the right label and delete the other")


def label_ids(labels: list[str]) -> dict[str, int]:
    """Class ids of the label strings: numeric order if all are integers, else string order."""
    uniq = set(labels)
    try:
        as_int = {u: int(u) for u in uniq}
    except ValueError:
        return {u: i for i, u in enumerate(sorted(uniq))}
    if len(set(as_int.values())) != len(uniq):  # "1" and "01": ambiguous, compare as strings
        return {u: i for i, u in enumerate(sorted(uniq))}
    return {u: i for i, u in enumerate(sorted(uniq, key=as_int.__getitem__))}


def read_csv_split(root: str, protocol: str = "open", strict_counts: bool = False,
                   name: str = NAME) -> Split:
    """Read an image-list CSV.

    Args:
        root: The CSV file or a folder holding ``labels.csv``.
        protocol: ``"open"`` (class halves) or ``"closed"`` (needs a ``split`` column).
        strict_counts: Unused (no published counts); kept for the common reader signature.
        name: Dataset name recorded in the split.
    """
    protocol = check_protocol(protocol)
    path = find_csv(root)
    rows = read_rows(path)
    check_rows_unique(path, rows)
    ids = label_ids([str(r["label"]) for r in rows])
    if len(ids) < 2:
        raise ValueError(f"{path}: only {len(ids)} distinct label(s); retrieval needs at least 2")
    recs = [(ImageRecord(str(r["path"]), ids[str(r["label"])], r["box"]), r["split"])  # type: ignore[arg-type]
            for r in rows]
    F.check_images_exist([rec for rec, _s in recs], name, f"Paths are relative to {path.parent}.")
    class_names = {i: u for u, i in ids.items()}
    query = gallery = None
    if protocol == CLOSED:
        if any(s is None for _r, s in recs):
            raise ValueError(f"{path}: the closed protocol needs a 'split' column (train/test/"
                             "query/gallery) filled on every row; use --protocol open otherwise")
        train = [r for r, s in recs if s == "train"]
        test = [r for r, s in recs if s in ("test", "query", "gallery")]
        if any(s in ("query", "gallery") for _r, s in recs):
            query = [r for r, s in recs if s == "query"]
            gallery = [r for r, s in recs if s == "gallery"]
            if not query or not gallery:
                raise ValueError(f"{path}: rows marked query need rows marked gallery and "
                                 "vice versa")
    else:
        train, test = split_by_class([r for r, _s in recs], half_of(len(ids)))
    return finish_split(name, protocol, train, test, class_names, strict_counts,
                        query=query, gallery=gallery)
