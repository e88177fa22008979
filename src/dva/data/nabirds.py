"""NABirds (Van Horn et al. 2015) in its official layout.

Expected files (``root`` is ``nabirds/`` or the folder that contains it)::

    images.txt              <image uuid> <path under images/>
    image_class_labels.txt  <image uuid> <class id>
    classes.txt             <class id> <name>      (all 1,011 hierarchy nodes)
    train_test_split.txt    <image uuid> <1 = train | 0 = test>
    bounding_boxes.txt      <image uuid> <x> <y> <width> <height>   (optional)
    images/<NNNN>/<file>.jpg

Only the 555 leaf classes carry images and their ids are not contiguous: the classes that
occur in ``image_class_labels.txt`` are numbered 0..554 in ascending NABirds id. Open
protocol: the first 255 of them train, the remaining 300 test.
"""
from __future__ import annotations

from dva.data import _files as F
from dva.data._cubstyle import read_cub_style
from dva.data.protocols import CLOSED, PUBLISHED, check_protocol, finish_split, split_by_class
from dva.data.records import ImageRecord, Split

NAME = "nabirds"
HINT = ("Point --root at the extracted nabirds folder, which holds images.txt, "
        "image_class_labels.txt, classes.txt, train_test_split.txt and images/.")
_REQUIRED = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt")


def read_nabirds(root: str, protocol: str = "open", strict_counts: bool = False) -> Split:
    """Read NABirds.

    Args:
        root: The ``nabirds`` folder or its parent.
        protocol: ``"open"`` (first 255 / remaining 300 leaf classes) or ``"closed"``.
        strict_counts: Raise instead of warning when counts differ from the published ones.
    """
    protocol = check_protocol(protocol)
    base = F.find_root(root, "images.txt", ("nabirds",), NAME, HINT)
    F.require_files(base, _REQUIRED, NAME, HINT)
    t = read_cub_style(base)
    used = sorted({c for _n, c in t.labels.values()})
    new_id = {c: i for i, c in enumerate(used)}
    class_names = {new_id[c]: t.classes[c] for c in used}
    is_train = t.is_train or {}  # never empty: train_test_split.txt is required above
    every, train, test = [], [], []
    for img_id, rel in t.paths.items():
        rec = ImageRecord(str(base / "images" / rel), new_id[t.labels[img_id][1]],
                          t.boxes.get(img_id))
        every.append(rec)
        (train if is_train[img_id] else test).append(rec)
    F.check_images_exist(every, NAME, HINT)
    if protocol != CLOSED:
        train, test = split_by_class(every, PUBLISHED[NAME].open_train_classes)
    return finish_split(NAME, protocol, train, test, class_names, strict_counts)
