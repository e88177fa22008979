"""The two value types every dataset reader returns: :class:`ImageRecord` and :class:`Split`."""
from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: Absolute path to the image file.
        label: Class id, 0-based and contiguous over the whole dataset (train and test
            classes share one id space, so open-set test ids start where train ids stop).
        box: Object box ``(x, y, w, h)`` in pixels of the original image, if annotated.
    """

    path: str
    label: int
    box: Box | None = None


@dataclass
class Split:
    """A train/test split of one dataset under one evaluation protocol.

    Attributes:
        name: Dataset name (``"cub200"``, ``"cars196"``, ...).
        protocol: ``"open"`` (unseen test classes) or ``"closed"`` (official split).
        train: Training images.
        test: Retrieval images, evaluated leave-one-out unless ``query``/``gallery`` are set.
        class_names: Class id -> name, for every class of ``train`` and ``test``.
        query: Query images for query-vs-gallery protocols (``None``: leave-one-out on test).
        gallery: Gallery images for query-vs-gallery protocols.
        warnings: Problems found while reading (e.g. image counts that differ from the
            published ones); readers also emit them with :func:`warnings.warn`.
        rule: How the classes were divided into train and test, in words.
    """

    name: str
    protocol: str
    train: list[ImageRecord]
    test: list[ImageRecord]
    class_names: dict[int, str]
    query: list[ImageRecord] | None = None
    gallery: list[ImageRecord] | None = None
    warnings: list[str] = field(default_factory=list)
    rule: str = ""

    @property
    def train_classes(self) -> list[int]:
        """Sorted class ids present in ``train``."""
        return sorted({r.label for r in self.train})

    @property
    def test_classes(self) -> list[int]:
        """Sorted class ids present in ``test``."""
        return sorted({r.label for r in self.test})

    def summary(self) -> dict[str, object]:
        """Counts of images and classes, as printed by ``dva data-info``."""
        out: dict[str, object] = {
            "dataset": self.name,
            "protocol": self.protocol,
            "train_images": len(self.train),
            "test_images": len(self.test),
            "train_classes": len(self.train_classes),
            "test_classes": len(self.test_classes),
            "train_boxes": sum(r.box is not None for r in self.train),
            "test_boxes": sum(r.box is not None for r in self.test),
        }
        if self.query is not None:
            out["query_images"] = len(self.query)
        if self.gallery is not None:
            out["gallery_images"] = len(self.gallery)
        out["rule"] = self.rule
        out["train_class_names"] = [self.class_names.get(c, str(c)) for c in self.train_classes]
        out["test_class_names"] = [self.class_names.get(c, str(c)) for c in self.test_classes]
        out["warnings"] = list(self.warnings)
        return out
