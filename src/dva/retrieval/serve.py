"""HTTP search service: upload a query image, get the nearest gallery images back.

Endpoints of :func:`create_app`:

* ``GET /``: a self-contained HTML page (no external assets) to choose or drop a query image
  and see the retrieved gallery images;
* ``POST /search?k=10``: multipart field ``file`` = the query image; JSON top-k hits with
  ``id``, ``score``, ``path`` (relative to the gallery root), ``label``, ``image_url``
  (absolute URL of ``GET /image/{id}``);
* ``GET /image/{id}[?size=N]``: the gallery image with that index id (optionally a JPEG
  thumbnail whose longer side is N). Only indexed files are ever served: the id selects a
  path from the index, no client-supplied path reaches the filesystem;
* ``GET /api/info``: gallery size, model fingerprint, index kind, limits.

Errors are JSON ``{"detail": "..."}``: 400 empty upload, 404 unknown id, 413 upload or image
too large, 415 not a decodable image, 422 missing form field.
"""
from __future__ import annotations

import io
import mimetypes
import os
import threading
import warnings
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image

from dva.retrieval.index import GalleryIndex
from dva.retrieval.search import search_images

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Room for the multipart boundary and part headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


class BodySizeLimit:
    """ASGI middleware: answer 413 to POST bodies above ``limit`` bytes, before parsing them.

    A declared Content-Length above the limit is refused without reading the body; a chunked
    body is counted while it arrives. Accepted bodies are buffered and replayed to the app.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._reject(send)
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

    async def _reject(self, send: Any) -> None:
        mib = (self.limit - _MULTIPART_SLACK) / 2**20
        resp = JSONResponse(
            {"detail": f"upload too large: the limit is {mib:.1f} MiB"}, status_code=413,
            headers={"Connection": "close"},
        )
        await resp(  # type: ignore[arg-type]
            {"type": "http", "method": "POST", "headers": []}, _no_receive, send
        )


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


def _gallery_root(paths: list[str]) -> str:
    if not paths:
        return ""
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # mixed drives / relative+absolute
        return ""
    return root


def _decode_upload(data: bytes, max_pixels: int) -> Image.Image:
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
            return im.convert("RGB")
    except HTTPException:
        raise
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image too large: {exc}") from None
    except Exception as exc:
        raise HTTPException(
            415, f"unsupported media type: the upload is not a decodable image "
                 f"({type(exc).__name__}: {exc})"
        ) from None


def create_app(
    index_path: str | Path | GalleryIndex,
    embedder: Any,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    default_k: int = 10,
    max_k: int = 100,
    nprobe: int | None = None,
) -> FastAPI:
    """Build the search service for one index and one model.

    Args:
        index_path: an index directory (``dva index`` output) or a loaded index.
        embedder: the model that built the index (checked by fingerprint, here, at start).
        max_upload_bytes: largest accepted upload (413 above).
        max_pixels: largest accepted image area in pixels (413 above).
        default_k: hits returned when the request gives no ``k``.
        max_k: largest ``k`` a request may ask for.
        nprobe: IVF lists visited per query (IVF-PQ indexes only).

    Raises:
        FingerprintMismatchError: the embedder is not the index's model.
    """
    index = index_path if isinstance(index_path, GalleryIndex) else GalleryIndex.load(index_path)
    index.check_fingerprint(embedder.fingerprint)
    if nprobe is not None:
        index.set_nprobe(nprobe)
    root = _gallery_root(index.paths)
    lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant-safe
    thumbs: OrderedDict[tuple[int, int], bytes] = OrderedDict()
    thumbs_lock = threading.Lock()
    page = resources.files("dva.retrieval").joinpath("static/index.html").read_text("utf-8")

    app = FastAPI(title="dva search", version="1")
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + _MULTIPART_SLACK)
    app.state.index = index
    app.state.embedder = embedder

    def rel(path: str) -> str:
        return os.path.relpath(path, root) if root else os.path.basename(path)

    def gallery_file(image_id: str) -> Path:
        # Only a decimal id selects a file, and only from the index's own list.
        if not (image_id.isascii() and image_id.isdigit()) or int(image_id) >= len(index.paths):
            raise HTTPException(404, f"unknown image id {image_id!r}: ids are 0..{len(index) - 1}")
        p = Path(index.paths[int(image_id)])
        if not p.is_file():
            raise HTTPException(404, f"gallery image {image_id} is missing on disk")
        return p

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def info() -> dict:
        return {
            "count": len(index),
            "dim": index.dim,
            "kind": index.meta["kind"],
            "fingerprint": index.fingerprint,
            "has_labels": any(lab is not None for lab in index.labels),
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": max_pixels,
            "default_k": default_k,
            "max_k": max_k,
        }

    @app.post("/search")
    def search(
        request: Request,
        file: UploadFile = File(..., description="the query image"),
        k: int = Query(default_k, ge=1, le=max_k),
    ) -> dict:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {max_upload_bytes} bytes")
        image = _decode_upload(data, max_pixels)
        with lock:
            hits = search_images(index, embedder, [image], k)[0]
        return {
            "k": k,
            "query": {"filename": file.filename, "width": image.width, "height": image.height},
            "fingerprint": index.fingerprint,
            "results": [
                {"rank": h.rank, "id": h.id, "score": round(h.score, 6), "path": rel(h.path),
                 "label": h.label,
                 "image_url": str(request.url_for("image", image_id=str(h.id)))}
                for h in hits
            ],
        }

    @app.get("/image/{image_id}")
    def image(image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        p = gallery_file(image_id)
        if size is None:
            media = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            return FileResponse(p, media_type=media)
        key = (int(image_id), size)
        with thumbs_lock:
            cached = thumbs.get(key)
        if cached is None:
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    im.thumbnail((size, size))
                    buf = io.BytesIO()
                    im.save(buf, "JPEG", quality=85)
            except Exception as exc:
                raise HTTPException(404, f"gallery image {image_id} cannot be decoded: {exc}") \
                    from None
            cached = buf.getvalue()
            with thumbs_lock:
                thumbs[key] = cached
                if len(thumbs) > 1024:
                    thumbs.popitem(last=False)
        return Response(cached, media_type="image/jpeg")

    return app


def serve(
    index_path: str | Path,
    embedder: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    **app_kwargs: Any,
) -> None:
    """Run the search service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(index_path, embedder, **app_kwargs), host=host, port=port,
                log_level="info")
