"""CUB-200-2011 (Wah et al. 2011) in its official layout.

Expected files (``root`` is ``CUB_200_2011/`` or the folder that contains it)::

    images.txt              <image id> <path under images/>
    image_class_labels.txt  <image id> <class id 1..200>
    classes.txt             <class id> <NNN.Name>
    train_test_split.txt    <image id> <1 = train | 0 = test>
    bounding_boxes.txt      <image id> <x> <y> <width> <height>   (optional, pixels)
    images/<NNN.Name>/<file>.jpg

Class ids become 0-based (``id - 1``); open protocol: classes 1-100 train, 101-200 test.
"""
from __future__ import annotations

import re

from dva.data import _files as F
from dva.data._cubstyle import read_cub_style
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "cub200"
HINT = ("Point --root at the extracted CUB_200_2011 folder (from CUB_200_2011.tgz), which holds "
        "images.txt, image_class_labels.txt, classes.txt, train_test_split.txt and images/.")
_REQUIRED = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")


def clean_class_name(name: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black_footed_Albatross"``."""
    return re.sub(r"^\d+\.", "", name.strip())


def read_cub(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read CUB-200-2011.

    Args:
        root: The ``CUB_200_2011`` folder or its parent.
        protocol: ``"open"`` (classes 1-100 / 101-200) or ``"closed"`` (official split).
        strict_counts: Raise instead of warning when counts differ from the published ones.

    Returns:
        The split; records carry the ``bounding_boxes.txt`` boxes when that file exists.
    """
    protocol = check_protocol(protocol)
    base = F.find_root(root, "images.txt", ("CUB_200_2011",), NAME, HINT)
    F.require_files(base, _REQUIRED, NAME, HINT)
    t = read_cub_style(base)
    if sorted(t.classes) != list(range(1, len(t.classes) + 1)):
        raise ValueError(f"{base / 'classes.txt'}: CUB class ids must be 1..{len(t.classes)} "
                         "without gaps")
    class_names = {c - 1: clean_class_name(n) for c, n in t.classes.items()}
    is_train = t.is_train or {}  # never empty: train_test_split.txt is required above
    every, train, test = [], [], []
    for img_id, rel in t.paths.items():
        rec = ImageRecord(str(base / "images" / rel), t.labels[img_id][1] - 1, t.boxes.get(img_id))
        every.append(rec)
        (train if is_train[img_id] else test).append(rec)
    F.check_images_exist(every, NAME, HINT)
    if protocol != CLOSED:
        train, test = split_by_class(every, PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, class_names, strict_counts)
