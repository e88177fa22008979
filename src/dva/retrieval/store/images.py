"""Strict image decoding for the gallery: a file that cannot be used fully is an error, never grey.

:func:`load_image_strict` is what ``dva embed`` and ``dva search`` decode with: a truncated file,
a decompression bomb, a folder or a missing file becomes an :class:`ImageLoadError` whose
``reason`` goes into ``skipped.jsonl`` (embedding) or into the one-line error (search).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

from PIL import Image, ImageFile


class ImageLoadError(Exception):
    """An input image that cannot be used; ``reason`` is what goes in skipped.jsonl."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _draft(img: Image.Image, min_side: int) -> None:
    """Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while the short side stays >= ``min_side``."""
    if getattr(img, "format", None) != "JPEG" or min(img.size) < 2 * min_side:
        return
    f = min_side / min(img.size)
    img.draft(None, (math.ceil(img.width * f), math.ceil(img.height * f)))


def _decode(path: str, draft_min_side: int | None) -> Image.Image:
    from dva.data import ImageReadError, load_rgb
    from dva.data.images import to_rgb

    if Path(path).is_dir():
        raise IsADirectoryError(path)
    if not draft_min_side:
        return load_rgb(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            _draft(img, draft_min_side)
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def load_image_strict(path: str | Path, draft_min_side: int | None = None) -> Image.Image:
    """Decode an image fully and convert it to RGB; truncated files are errors.

    Args:
        path: the image file.
        draft_min_side: JPEG only: decode at 1/2, 1/4 or 1/8 scale (PIL draft mode) while the
            short side stays >= this. Faster for photos much larger than the model input, but
            not the same pixels: at 2x the resize target, cosine to the full decode was 0.9996
            (docs/BENCHMARKS.md, Embedding speed), so it is off unless asked for.

    Raises:
        ImageLoadError: missing, unreadable, truncated or undecodable file, or a folder.
    """
    # A truncated JPEG decodes "successfully" to grey pixels when this global is on:
    # that would be a silently wrong row, so refuse to run in that mode.
    if getattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False):
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images "
            "would be embedded as grey. Leave it False when embedding a gallery."
        )
    from dva.data import ImageReadError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(str(path), draft_min_side)
    except IsADirectoryError:
        raise ImageLoadError(str(path), "is a folder, not an image file") from None
    except FileNotFoundError:
        raise ImageLoadError(str(path), "file not found") from None
    except Image.DecompressionBombWarning as exc:
        raise ImageLoadError(str(path), f"too many pixels ({exc})") from None
    except ImageReadError as exc:
        cause = exc.__cause__ or exc
        raise ImageLoadError(str(path), f"{type(cause).__name__}: {cause}") from None
    except Exception as exc:  # PIL raises many types (DecompressionBombError, MemoryError, ...)
        raise ImageLoadError(str(path), f"{type(exc).__name__}: {exc}") from None
