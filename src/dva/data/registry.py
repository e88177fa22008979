"""Dataset name -> reader, and :func:`load_split`, the one entry point to all readers."""
from __future__ import annotations

from collections.abc import Callable

from dva.data.aircraft import read_aircraft
from dva.data.cars import read_cars
from dva.data.csvlist import read_csv_split
from dva.data.cub import read_cub
from dva.data.cub100 import read_cub100
from dva.data.dogs import read_dogs
from dva.data.folder import read_folder
from dva.data.nabirds import read_nabirds
from dva.data.records import Split
from dva.data.synthetic import read_synthetic

Reader = Callable[[str, str, bool], Split]

READERS: dict[str, Reader] = {
    "cub200": read_cub,
    "cars196": read_cars,
    "aircraft": read_aircraft,
    "nabirds": read_nabirds,
    "dogs": read_dogs,
    "folder": read_folder,
    "csv": read_csv_split,
    "cub100": read_cub100,
    "synthetic": read_synthetic,
}
DATASETS: tuple[str, ...] = tuple(READERS)

# Other spellings people use on the command line.
ALIASES = {"cub": "cub200", "cub-200-2011": "cub200", "cub_200_2011": "cub200", "cars": "cars196",
           "stanford_cars": "cars196", "fgvc-aircraft": "aircraft", "fgvc_aircraft": "aircraft",
           "stanford_dogs": "dogs", "imagefolder": "folder"}


def canonical_name(name: str) -> str:
    """The ``DATASETS`` name of ``name`` (itself, or what an alias such as ``stanford_cars`` means)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")
    return key


def get_reader(name: str) -> Reader:
    """The reader of dataset ``name`` (a name of ``DATASETS`` or an alias)."""
    return READERS[canonical_name(name)]


def load_split(name: str, root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read dataset ``name`` from ``root`` under ``protocol``.

    Args:
        name: One of ``DATASETS`` (``"cub200"``, ``"cars196"``, ``"aircraft"``, ``"nabirds"``,
            ``"dogs"``, ``"folder"``, ``"csv"``, ``"cub100"``, ``"synthetic"``).
        root: Dataset folder (for ``"csv"``: the CSV file or its folder).
        protocol: ``"open"`` (unseen test classes, the standard FGIR protocol) or
            ``"closed"`` (the official train/test split).
        strict_counts: Raise ``ValueError`` when image or class counts differ from the
            published ones instead of warning.

    Returns:
        The split, with every problem found listed in ``split.warnings``.

    Raises:
        FileNotFoundError: Missing annotation or image files (all named).
        ValueError: Malformed annotations (file and line named), unknown names, an empty
            ``root``, or count mismatches with ``strict_counts``.
    """
    reader = get_reader(name)
    if not str(root).strip():
        # Path("") is the working directory: an unset root would read whatever folders stand there.
        raise ValueError(f"dataset {canonical_name(name)!r}: no root folder given (data.root is empty): "
                         "set --data.root PATH to the dataset's folder")
    return reader(str(root), protocol, strict_counts)
