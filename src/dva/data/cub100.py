"""cub100: this project's real 100-species subset of CUB-200-2011 (``shared/data/cub100``).

Its own layout (comma + space separated, ids from 0; NOT the official CUB layout)::

    images.txt              <image id>, <path under images/>
    image_class_labels.txt  <image id>, <class id 0..99>
    classes.txt             <class id>, <species name>
    train_test_split.txt    <image id>, <0|1>
    images/<Species_Name>/<NNNN>.jpg

Open protocol (the project's benchmark): classes 0-49 train (2,949 images), 50-99 test
(2,953 images), leave-one-out.

Closed protocol: the subset's README says the flag means "is training?" but also that there
are 2,999 training and 2,903 test images, and the file has 2,999 zeros and 2,903 ones, so the
two statements disagree. The data settle it: flag 0 marks exactly 30 images in 99 classes
(29 in one), flag 1 between 15 and 30 per class. That is the structure of the official CUB
split, whose *training* side has 30 images for (nearly) every class and whose test side has
the remainder. So flag **0 = train** (2,999) and flag 1 = test (2,903), which also matches the
stated counts.
"""
from __future__ import annotations

from dva.data import _files as F
from dva.data._cubstyle import read_cub_style
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "cub100"
HINT = ("Point --root at the cub100 folder (shared/data/cub100), which holds images.txt, "
        "image_class_labels.txt, classes.txt, train_test_split.txt and images/.")
_REQUIRED = ("images.txt", "image_class_labels.txt", "classes.txt")
TRAIN_FLAG = "0"  # see the module docstring


def read_cub100(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read the cub100 subset.

    Args:
        root: The cub100 folder.
        protocol: ``"open"`` (classes 0-49 / 50-99) or ``"closed"`` (flag 0 = train).
        strict_counts: Raise instead of warning when counts differ from 2,949 / 2,953
            (open) or 2,999 / 2,903 (closed).
    """
    protocol = check_protocol(protocol)
    base = F.find_root(root, "images.txt", ("cub100",), NAME, HINT)
    F.require_files(base, _REQUIRED, NAME, HINT)
    t = read_cub_style(base, sep=",", train_flag=TRAIN_FLAG, boxes_file=None)
    if sorted(t.classes) != list(range(len(t.classes))):
        raise ValueError(f"{base / 'classes.txt'}: cub100 class ids must be 0..{len(t.classes) - 1} "
                         "without gaps")
    every, train, test = [], [], []
    for img_id, rel in t.paths.items():
        rec = ImageRecord(str(base / "images" / rel), t.labels[img_id][1])
        every.append(rec)
        if t.is_train is not None:
            (train if t.is_train[img_id] else test).append(rec)
    F.check_images_exist(every, NAME, HINT)
    if protocol == CLOSED:
        if t.is_train is None:
            raise FileNotFoundError(f"{NAME}: the closed protocol needs "
                                    f"{base / 'train_test_split.txt'}. {HINT}")
    else:
        train, test = split_by_class(every, PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, dict(t.classes), strict_counts)
