"""What bounds a request's cost: body size (before parsing), image area (before decoding), and
the number of uploads decoded at once (the caller's decode slots, ``max_decodes``).

:class:`BodySizeLimit` refuses an oversized POST body with 413 before it is parsed;
:func:`decode_upload` reads the image header first and refuses a pixel area above the limit
before any pixel is decoded; a large decode hands its freed memory back to the OS
(:func:`release_memory`), so the server's footprint stays bounded however many clients upload.
"""
from __future__ import annotations

import io
import warnings
from typing import Any

from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

from dva.data.images import to_rgb

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Decoded uploads held at once: a 40 MP image is ~120 MB as RGB, so 8 clients uploading at the
# same time would otherwise hold ~1 GB of pixels (and the allocator keeps it afterwards).
DEFAULT_MAX_DECODES = 2
DEFAULT_MAX_FILES = 16  # images one POST /items may carry (its body limit is this many uploads)
BIG_DECODE = 4_000_000  # pixels; after such a decode, freed memory is handed back to the OS
MULTIPART_SLACK = 64 * 1024  # room for the multipart boundary and part headers around the file itself


def release_memory() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise); a no-op where unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _is_items_path(scope: dict) -> bool:
    return scope.get("path", "").rstrip("/").endswith("/items")


class BodySizeLimit:
    """ASGI middleware: answer 413 to POST bodies above ``limit`` bytes, before parsing them.

    A declared Content-Length above the limit is refused without reading the body; a chunked
    body is counted while it arrives. Accepted bodies are buffered and replayed to the app.
    ``POST /items`` may carry ``max_files`` uploads (its limit is that many times ``limit``), and
    its ``guard`` (the api-key check) runs first: a client without the key never gets a body buffered.
    """

    def __init__(self, app: Any, limit: int, max_files: int = 1, guard: Any = None) -> None:
        self.app = app
        self.limit = limit
        self.max_files = max_files
        self.guard = guard  # headers -> HTTPException | None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        items = _is_items_path(scope)
        limit = self.limit * (self.max_files if items else 1)
        refused = self.guard(headers) if items and self.guard else None
        if refused is not None:
            await _send_json(send, refused.status_code, refused.detail, dict(refused.headers or {}))
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, items)
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > limit:
                await self._reject(send, items)
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Any, items: bool) -> None:
        mib = (self.limit - MULTIPART_SLACK) / 2**20
        each = f" per image, {self.max_files} images per request" if items else ""
        await _send_json(send, 413, f"upload too large: the limit is {mib:.1f} MiB{each}")


async def _send_json(send: Any, status: int, detail: str, headers: dict | None = None) -> None:
    """Answer ``{"detail": ...}`` from the middleware, closing the connection (the body is unread)."""
    resp = JSONResponse({"detail": detail}, status_code=status, headers={**(headers or {}), "Connection": "close"})
    await resp(  # type: ignore[arg-type]
        {"type": "http", "method": "POST", "headers": []}, _no_receive, send
    )


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The bytes of one uploaded file (413 above ``limit``; read no further than one byte past it)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload too large: the limit is {limit} bytes")
    return data


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """An upload decoded to RGB; 400 empty, 413 above ``max_pixels`` (read from the header), 415 not an image."""
    if not data:
        raise HTTPException(400, "empty upload: send an image file in the form field 'file'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise HTTPException(413, f"image too large: {w}x{h} pixels, the limit is "
                                         f"{max_pixels} pixels")
            im.load()
            return to_rgb(im)
    except HTTPException:
        raise
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image too large: {exc}") from None
    except Exception as exc:
        raise HTTPException(
            415, f"unsupported media type: the upload is not a decodable image "
                 f"({type(exc).__name__}: {exc})"
        ) from None
