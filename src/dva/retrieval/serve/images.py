"""Serving gallery images: ``GET /image/{id}`` and ``GET /domains/{name}/image/{id}``, whole or
as a JPEG thumbnail (``?size=N``, the longer side), the most recent thumbnails kept in memory.

Only indexed files are ever served: the id selects a path from the gallery (the service's
``gallery_file``), no client-supplied path reaches the filesystem.
"""
from __future__ import annotations

import io
import mimetypes
import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse, Response
from PIL import Image


class Thumbnails:
    """JPEG thumbnails of gallery images, the most recent ``capacity`` kept in memory."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, image_id: int, size: int, domain: str = "") -> bytes:
        """The thumbnail of gallery image ``image_id`` (404 when its file cannot be decoded)."""
        key = (domain, image_id, size)  # ids are never reused, so an entry never goes stale
        with self._lock:
            cached = self._items.get(key)
        if cached is not None:
            return cached
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((size, size))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
        except Exception as exc:
            raise HTTPException(404, f"gallery image {image_id} cannot be decoded: {exc}") from None
        with self._lock:
            self._items[key] = buf.getvalue()
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return buf.getvalue()


def image_response(path: Path, image_id: int, size: int | None, domain: str, thumbs: Thumbnails) -> Response:
    """The file itself (its media type guessed from the name), or its ``size`` px JPEG thumbnail."""
    if size is None:
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media)
    return Response(thumbs.get(path, image_id, size, domain), media_type="image/jpeg")


def image_suffix(data: bytes) -> str:
    """The file extension of a decoded upload's format (``.png``, ``.jpg``...): never the client's name."""
    fmt = Image.open(io.BytesIO(data)).format or ""
    known = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
    if fmt in known:
        return known[fmt]
    exts = [e for e, f in Image.registered_extensions().items() if f == fmt]
    return min(exts) if exts else ".img"
