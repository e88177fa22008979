"""Stanford Cars (Krause et al. 2013), 196 classes, in one of five common layouts.

1. ``cars_annos.mat`` + ``car_ims/`` (the all-in-one release): struct array ``annotations``
   with ``relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test`` and
   ``class_names``.
2. The devkit release (as used by torchvision)::

       devkit/cars_meta.mat               class_names
       devkit/cars_train_annos.mat        annotations: bbox_x1..bbox_y2, class, fname
       cars_test_annos_withlabels.mat     same, for the test images (here or in devkit/;
                                          the devkit's cars_test_annos.mat has no labels)
       cars_train/<fname>, cars_test/<fname>

3. The Kaggle "Stanford Car Dataset by classes folder" conversion::

       anno_train.csv, anno_test.csv      <fname>,<x1>,<y1>,<x2>,<y2>,<class 1..196>
       names.csv                          one class name per line
       car_data/car_data/{train,test}/<class name>/<fname>   (any depth below root)

Two class-folder copies, without boxes (listed by :func:`dva.data.folder.scan_classes`, the
shared listing rule: each real file once, symlink loops cut, a photo in two classes refused):

4. Numbered class folders, ``[images/]<NNN>_<Make_Model_Body_Year>/<file>.jpg``: the class id
   is the ``NNN`` prefix (1-196), the name the rest with ``_`` read as a space. No official
   train/test split, so the open protocol only.
5. The Kaggle folders without the CSVs, ``[car_data/[car_data/]]{train,test}/<class name>/``:
   the folder names carry no ids, so they are matched (``/`` written ``-``, case and ``_``
   ignored) to the official class-name order of ``names.csv`` or ``[devkit/]cars_meta.mat``;
   without either the reader refuses (sorted names are not the official order, so the open
   split would differ from everyone else's). ``train``/``test`` give the closed split.

Boxes are 1-based inclusive corners in layouts 1-3 and become 0-based ``x, y, w, h``.
Class ids become 0-based; open protocol: classes 1-98 (8,054 images) train, 99-196 (8,131)
test, by official id in every layout; closed: the official 8,144 / 8,041. (8,154 open test
images, as sometimes quoted, is a typo: see :mod:`dva.data.protocols`.)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dva.data import _files as F
from dva.data import _matfile as M
from dva.data.folder import scan_classes
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "cars196"
HINT = ("Point --root at a folder holding either cars_annos.mat + car_ims/, or the devkit layout "
        "(devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
        "cars_train/, cars_test/), or the Kaggle CSV layout (anno_train.csv, anno_test.csv, "
        "names.csv and the image folders), or class folders: [images/]<NNN>_<Name>/ (NNN = the "
        "official class id) or [car_data/]{train,test}/<Class Name>/ with names.csv or cars_meta.mat.")
_BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
_NUM_CLASSES = 196
_NUMBERED = re.compile(r"^(\d{1,3})_(.+)$")  # 001_AM_General_Hummer_SUV_2000
# Where the Kaggle download puts its train/ and test/ folders (it nests car_data in itself).
_SPLIT_PARENTS = (".", "car_data", "car_data/car_data")


@dataclass
class _Entry:
    path: str
    cls: int  # 1-based, as in the files
    box: tuple[float, float, float, float] | None
    is_test: bool | None  # None: the layout has no official train/test split
    where: str  # file and row, for errors


def read_cars(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read Stanford Cars from any of the supported layouts.

    Args:
        root: Dataset folder (or its parent ``stanford_cars``).
        protocol: ``"open"`` (classes 1-98 / 99-196) or ``"closed"`` (official split).
        strict_counts: Raise instead of warning when counts differ from the published ones.
    """
    protocol = check_protocol(protocol)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{NAME}: root folder {base} does not exist. {HINT}")
    notes: list[str] = []
    for cand in (base, base / "stanford_cars"):
        found = _read_layout(cand.resolve(), notes) if cand.is_dir() else None
        if found is not None:
            entries, names = found
            break
    else:
        raise FileNotFoundError(f"{NAME}: no known layout under {base}. {HINT}")

    for e in entries:
        if not 1 <= e.cls <= len(names):
            raise ValueError(f"{e.where}: class {e.cls} outside 1..{len(names)} (the number of "
                             "class names)")
    # A numbered-folder copy knows only the names of the classes it holds ("" for the others).
    class_names = {i: n for i, n in enumerate(names) if n}
    records = [(ImageRecord(e.path, e.cls - 1, e.box), e.is_test) for e in entries]
    F.check_images_exist([r for r, _t in records], NAME, HINT)
    rule = ""
    if protocol == CLOSED:
        if any(t is None for _r, t in records):
            raise ValueError(f"{NAME}: the closed protocol needs the official train/test split, and the "
                             f"numbered class folders under {base} do not record it. Use --protocol open "
                             "(classes 1-98 / 99-196), or a layout with the split (the devkit, "
                             "cars_annos.mat, or car_data/{train,test}/).")
        train = [r for r, t in records if not t]
        test = [r for r, t in records if t]
    else:
        n_train = PUBLISHED[NAME].open_train_classes
        train, test = split_by_class([r for r, _t in records], n_train)
        rule = (f"open: the classes with official ids 1-{n_train} train, "
                f"{n_train + 1}-{_NUM_CLASSES} test")
    return finish_split(NAME, protocol, train, test, class_names, strict_counts, notes, rule=rule)


def _read_layout(cand: Path, notes: list[str]) -> tuple[list[_Entry], list[str]] | None:
    """Entries and class names of the first layout found in ``cand``, or ``None``."""
    if (cand / "cars_annos.mat").exists():
        return _read_annos_mat(cand)
    if (cand / "devkit" / "cars_train_annos.mat").exists():
        return _read_devkit(cand)
    if (cand / "anno_train.csv").exists():
        return _read_kaggle_csv(cand, notes)
    numbered = _numbered_dir(cand)
    if numbered is not None:
        return _read_numbered(numbered, notes)
    parent = next((cand / p for p in _SPLIT_PARENTS
                   if (cand / p / "train").is_dir() and (cand / p / "test").is_dir()), None)
    if parent is not None:
        return _read_named_folders(cand, parent.resolve(), notes)
    return None


def _box(row: dict, where: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(row[k]) for k in _BOX)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box fields must be numbers, got "
                         f"{[row[k] for k in _BOX]}") from None
    return F.corners_to_box(x1, y1, x2, y2, where)


def _cls(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{where}: class must be an integer, got {value!r}")
    return value


def _read_annos_mat(base: Path) -> tuple[list[_Entry], list[str]]:
    path = base / "cars_annos.mat"
    mat = M.load_mat(path, ("annotations", "class_names"))
    fields = ("relative_im_path", *_BOX, "class", "test")
    rows = M.struct_rows(mat["annotations"], path, "annotations", fields)
    names = M.string_list(mat["class_names"], path, "class_names")
    entries = []
    for i, row in enumerate(rows, 1):
        where = f"{path}: annotations({i})"
        rel = row["relative_im_path"]
        if not isinstance(rel, str) or not rel:
            raise ValueError(f"{where}: relative_im_path must be a non-empty string")
        test = row["test"]
        if test not in (0, 1):
            raise ValueError(f"{where}: test must be 0 or 1, got {test!r}")
        entries.append(_Entry(str(base / rel), _cls(row["class"], where), _box(row, where),
                              bool(test), where))
    return entries, names


def _image_dir(base: Path, name: str) -> Path:
    # Some unpackers nest the folder in itself (cars_train/cars_train/...).
    d = base / name
    return d / name if (d / name).is_dir() else d


def _read_devkit(base: Path) -> tuple[list[_Entry], list[str]]:
    meta = base / "devkit" / "cars_meta.mat"
    train_p = base / "devkit" / "cars_train_annos.mat"
    test_p = next((p for p in (base / "cars_test_annos_withlabels.mat",
                               base / "devkit" / "cars_test_annos_withlabels.mat") if p.exists()),
                  None)
    if test_p is None or not meta.exists():
        raise FileNotFoundError(
            f"{NAME}: devkit layout under {base} needs devkit/cars_meta.mat and "
            "cars_test_annos_withlabels.mat (the devkit's cars_test_annos.mat has no class "
            "labels; get the file with labels released with the devkit). " + HINT)
    names = M.string_list(M.load_mat(meta, ("class_names",))["class_names"], meta, "class_names")
    entries = []
    for path, folder, is_test in ((train_p, "cars_train", False), (test_p, "cars_test", True)):
        rows = M.struct_rows(M.load_mat(path, ("annotations",))["annotations"], path,
                             "annotations", (*_BOX, "class", "fname"))
        img_dir = _image_dir(base, folder)
        for i, row in enumerate(rows, 1):
            where = f"{path}: annotations({i})"
            entries.append(_Entry(str(img_dir / str(row["fname"])), _cls(row["class"], where),
                                  _box(row, where), is_test, where))
    return entries, names


def _find_split_dir(base: Path, split: str) -> Path:
    """The folder named ``split`` (train/test) closest to ``base`` (Kaggle layout)."""
    for dirpath, dirnames, _files in sorted(os.walk(base), key=lambda t: t[0].count(os.sep)):
        for d in sorted(dirnames):
            if d.lower() == split:
                return Path(dirpath) / d
    raise FileNotFoundError(f"{NAME}: no '{split}' image folder under {base} (expected e.g. "
                            f"car_data/car_data/{split}/<class name>/<file>.jpg). {HINT}")


def _index_files(folder: Path, notes: list[str]) -> dict[str, str]:
    """File name -> path of the images under ``folder`` (the shared listing: symlinks followed once)."""
    paths, skipped = F.walk_images(folder)
    notes += [f"{NAME}: {n}" for n in skipped]
    out: dict[str, str] = {}
    for p in paths:
        f = os.path.basename(p)
        if f in out:
            raise ValueError(f"{NAME}: file name {f} appears twice under {folder} "
                             f"({out[f]} and {p}); cannot match CSV rows to images")
        out[f] = p
    return out


def _read_kaggle_csv(base: Path, notes: list[str]) -> tuple[list[_Entry], list[str]]:
    F.require_files(base, ("anno_train.csv", "anno_test.csv", "names.csv"), NAME, HINT)
    names = _read_names_csv(base / "names.csv")
    entries = []
    for split, is_test in (("train", False), ("test", True)):
        path = base / f"anno_{split}.csv"
        files = _index_files(_find_split_dir(base, split), notes)
        for lineno, parts in F.read_table(path, 6, ",", "<fname>,<x1>,<y1>,<x2>,<y2>,<class>"):
            if lineno == 1 and not parts[5].strip().lstrip("-").isdigit():
                continue  # a header row
            where = f"{path}:{lineno}"
            if "," in parts[5]:
                raise ValueError(f"{where}: expected 6 comma-separated fields "
                                 "<fname>,<x1>,<y1>,<x2>,<y2>,<class>")
            fname = os.path.basename(parts[0])
            if fname not in files:
                raise FileNotFoundError(f"{where}: image {fname} not found under the {split} "
                                        f"image folder of {base}. {HINT}")
            x1, y1, x2, y2 = (F.to_float(v, path, lineno, n)
                              for v, n in zip(parts[1:5], ("x1", "y1", "x2", "y2")))
            entries.append(_Entry(files[fname], F.to_int(parts[5], path, lineno, "class"),
                                  F.corners_to_box(x1, y1, x2, y2, where), is_test, where))
    return entries, names


def _read_names_csv(path: Path) -> list[str]:
    """The class names of the Kaggle ``names.csv``, one a line, in official id order."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _class_dirs(folder: Path) -> list[str]:
    return [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]


def _numbered_dir(cand: Path) -> Path | None:
    """``cand`` or ``cand/images`` when most of its folders are ``NNN_Name`` class folders."""
    for folder in (cand, cand / "images"):
        subs = _class_dirs(folder) if folder.is_dir() else []
        # Most, not all: a stray folder is skipped with a warning rather than hiding the layout.
        if subs and 2 * sum(bool(_NUMBERED.match(d)) for d in subs) > len(subs):
            return folder
    return None


def _scan(folder: Path, registry: F.ImageRegistry, part: str, base: Path,
          notes: list[str]) -> dict[str, list[str]]:
    """Class folder -> image paths, by the shared listing rule; notes said as this dataset's."""
    classes, found = scan_classes(folder, registry, part, (base,))
    notes += [f"{NAME}: {n.removeprefix('folder: ')}" for n in found]
    return classes


def _read_numbered(folder: Path, notes: list[str]) -> tuple[list[_Entry], list[str]]:
    """``<NNN>_<Name>/`` class folders: the id is the prefix; no official train/test split."""
    reg = F.ImageRegistry()
    classes = _scan(folder, reg, "", folder, notes)
    reg.raise_leaks(NAME)
    names = [""] * _NUM_CLASSES
    folder_of: dict[int, str] = {}
    entries = []
    for d, files in sorted(classes.items()):
        m = _NUMBERED.match(d)
        if m is None:
            notes.append(f"{NAME}: folder {folder / d} is not named <NNN>_<Name> (NNN = the official "
                         "class id 001-196); its images are ignored. Rename it or move it out")
            continue
        cls = int(m.group(1))
        if not 1 <= cls <= _NUM_CLASSES:
            raise ValueError(f"{NAME}: class folder {folder / d}: id {cls} outside 1..{_NUM_CLASSES} "
                             "(Stanford Cars has 196 classes); rename it with its official id")
        if cls in folder_of:
            raise ValueError(f"{NAME}: class folders {folder / folder_of[cls]} and {folder / d} both "
                             f"have id {cls:03d}; each official id names one class folder: merge or "
                             "renumber them")
        folder_of[cls] = d
        names[cls - 1] = " ".join(m.group(2).replace("_", " ").split())
        entries += [_Entry(p, cls, None, None, f"{folder / d}") for p in files]
    _note_missing(set(folder_of), folder, notes)
    return entries, names


def _note_missing(present: set[int], folder: Path, notes: list[str]) -> None:
    missing = [f"{i:03d}" for i in range(1, _NUM_CLASSES + 1) if i not in present]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
        notes.append(f"{NAME}: {len(missing)} of the {_NUM_CLASSES} classes have no class folder (or no "
                     f"image) under {folder}: ids {shown}")


def _official_names(cand: Path) -> tuple[list[str], Path] | None:
    """The 196 class names in official id order, from ``names.csv`` or ``cars_meta.mat``."""
    for path in (cand / "names.csv", cand / "devkit" / "cars_meta.mat", cand / "cars_meta.mat"):
        if path.is_file():
            if path.suffix == ".csv":
                return _read_names_csv(path), path
            return M.string_list(M.load_mat(path, ("class_names",))["class_names"], path, "class_names"), path
    return None


def _name_key(name: str) -> str:
    # Kaggle writes the "/" of "Ram C/V Cargo Van Minivan 2012" as "-"; other copies use "_" for spaces.
    return " ".join(name.replace("/", "-").replace("_", " ").split()).casefold()


def _read_named_folders(cand: Path, parent: Path, notes: list[str]) -> tuple[list[_Entry], list[str]]:
    """``{train,test}/<Class Name>/`` (the Kaggle folders): ids from the official name order."""
    official = _official_names(cand)
    if official is None:
        raise FileNotFoundError(
            f"{NAME}: {parent / 'train'} and {parent / 'test'} hold class folders named by class, which give "
            f"no official class ids (the open split is ids 1-98 / 99-196, and sorted names are not that "
            f"order). Put the 196 class names in official order next to them: names.csv (one name a line, "
            f"from the Kaggle download) or cars_meta.mat (the devkit's) in {cand} (or {cand / 'devkit'}/), "
            "or name the folders <NNN>_<Name> with the official id.")
    names, names_path = official
    ids: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if _name_key(n) in ids:
            raise ValueError(f"{names_path}: class name {n!r} (class {i}) repeats class "
                             f"{ids[_name_key(n)]}; each of the 196 names must appear once")
        ids[_name_key(n)] = i
    reg = F.ImageRegistry()
    parts = {s: _scan(parent / s, reg, s, cand, notes) for s in ("train", "test")}
    reg.raise_leaks(NAME, "(delete the copy, or the symlink that puts it in a second class folder or in "
                    "both train/ and test/)")
    unknown = sorted({f"{s}/{d}" for s, classes in parts.items() for d in classes if _name_key(d) not in ids})
    if unknown:
        raise ValueError(f"{NAME}: {len(unknown)} class folder(s) under {parent} match no class name of "
                         f"{names_path}: {', '.join(unknown[:10])}. Rename them to the names in that file "
                         "(or fix the file)")
    entries = [_Entry(p, ids[_name_key(d)], None, s == "test", f"{parent / s / d}")
               for s, classes in parts.items() for d, files in classes.items() for p in files]
    _note_missing({e.cls for e in entries}, parent, notes)
    return entries, names
