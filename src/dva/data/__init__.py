"""Datasets and evaluation protocols for fine-grained image retrieval.

``load_split(name, root, protocol)`` reads any supported dataset into a :class:`Split` of
:class:`ImageRecord` lists; ``ImageListDataset`` turns records into a PyTorch dataset.
"""
from dva.data._files import IMAGE_EXTENSIONS, is_image_file
from dva.data.locate import find_dataset
from dva.data.protocols import PROTOCOLS, PUBLISHED, DatasetWarning
from dva.data.records import ImageRecord, Split
from dva.data.registry import DATASETS, get_reader, load_split
from dva.data.synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "PUBLISHED",
    "IMAGE_EXTENSIONS",
    "DatasetWarning",
    "ImageListDataset",
    "ImageReadError",
    "ImageRecord",
    "Split",
    "UnreadableImagesError",
    "find_dataset",
    "find_unreadable",
    "get_reader",
    "is_image_file",
    "load_rgb",
    "load_split",
    "make_synthetic",
]

_LAZY = {"ImageListDataset", "ImageReadError", "UnreadableImagesError", "find_unreadable", "load_rgb"}


def __getattr__(name: str) -> object:
    # torch is imported only when the PyTorch dataset is used, so that reading annotations
    # (e.g. ``dva data-info``) stays fast.
    if name in _LAZY:
        from dva.data import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'dva.data' has no attribute {name!r}")
