"""HTTP search service: upload a query image, get the nearest gallery images back.

Endpoints of :func:`create_app`:

* ``GET /``: a self-contained HTML page (no external assets) to choose or drop a query image
  and see the retrieved gallery images;
* ``POST /search?k=10[&domain=NAME|all]``: multipart field ``file`` = the query image (``domain``
  may also be a form field); JSON top-k hits with ``id``, ``score``, ``path`` (relative to the
  gallery root), ``label``, ``domain``, ``image_url`` (``image/{id}``, or
  ``domains/{domain}/image/{id}`` when the server has several domains, relative to the service
  root, as the page resolves it; absolute under ``public_url`` when one is configured, never
  taken from the request's ``Host`` header). With several domains (:mod:`dva.retrieval.domains`)
  a query without ``domain`` is routed (the answer's ``route`` names the domain and the
  margin), and ``domain=all`` merges every domain's hits, each tagged with its domain;
* ``GET /image/{id}[?size=N]``: the gallery image with that index id of the first domain
  (optionally a JPEG thumbnail whose longer side is N); ``GET /domains/{name}/image/{id}``: of
  domain ``name``. Only indexed files are ever served: the id selects a path from the index, no
  client-supplied path reaches the filesystem;
* ``GET /api/info``: gallery size, model fingerprint, index kind, limits, and ``domains`` (each
  with its fingerprint), the router and the shared backbone.

Errors are JSON ``{"detail": "..."}``: 400 empty upload, 404 unknown id or domain (the message
lists the known domains), 413 upload or image too large, 415 not a decodable image, 422 missing
form field.
"""
from __future__ import annotations

import io
import mimetypes
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image

from dva.data.images import to_rgb
from dva.retrieval.domains import ALL, DomainAnswer, DomainSet, UnknownDomainError, single_domain
from dva.retrieval.index.gallery_index import GalleryIndex

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Decoded uploads held at once: a 40 MP image is ~120 MB as RGB, so 8 clients uploading at the
# same time would otherwise hold ~1 GB of pixels (and the allocator keeps it afterwards).
DEFAULT_MAX_DECODES = 2
_BIG_DECODE = 4_000_000  # pixels; after such a decode, freed memory is handed back to the OS


def _release_memory() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise); a no-op where unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
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


def _search_upload(data: bytes, max_pixels: int, domains: DomainSet, domain: str | None, k: int,
                   model_lock: threading.Lock) -> tuple[DomainAnswer, tuple[int, int]]:
    """Decode an upload and search ``domain`` (a name, ``all``, or None: routed) with it; returns the
    answer and the image size.

    Called inside a decode slot: the pixels live only here, and a large image's memory is handed
    back to the OS before the slot is released, so the server's footprint stays bounded.
    """
    image = _decode_upload(data, max_pixels)
    size = image.size
    with model_lock:
        answer = domains.search_images([image], k, domain)[0]
    del image
    if size[0] * size[1] > _BIG_DECODE:
        _release_memory()
    return answer, size


class _Thumbnails:
    """JPEG thumbnails of gallery images, the most recent ``capacity`` kept in memory."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, image_id: int, size: int, domain: str = "") -> bytes:
        key = (domain, image_id, size)
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


def public_base(url: str | None) -> str | None:
    """Check a ``--public-url`` (``http(s)://host[:port][/prefix]``); returned without a trailing slash.

    Raises:
        ValueError: not an absolute http(s) URL, or one with a query or fragment.
    """
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--public-url {url!r}: give the absolute address clients reach the service at, "
                         "e.g. https://search.example.org or https://example.org/dva")
    return url.rstrip("/")


@dataclass
class _Service:
    """The domains behind the routes (one for the classic form), with the limits and the shared locks."""

    domains: DomainSet
    limits: dict  # max_upload_bytes, max_pixels, max_decodes, default_k, max_k
    public_url: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time
    slots: threading.BoundedSemaphore | None = None  # uploads decoded at once
    thumbs: _Thumbnails = field(default_factory=_Thumbnails)
    roots: dict[str, str] = field(default_factory=dict)  # gallery root per domain

    def __post_init__(self) -> None:
        self.roots = {n: _gallery_root(d.index.paths) for n, d in self.domains.domains.items()}

    @property
    def first(self) -> str:
        """The domain of the classic ``/image/{id}`` route (the only one in the classic form)."""
        return self.domains.names[0]

    def rel(self, domain: str, path: str) -> str:
        """A gallery path relative to its domain's gallery root (no server directories in answers)."""
        root = self.roots[domain]
        return os.path.relpath(path, root) if root else os.path.basename(path)

    def image_url(self, domain: str, image_id: int) -> str:
        """Where the image is served: relative to the service root, or under ``--public-url``.

        Never built from the request's ``Host`` header: a forged one would make the answers
        link to another site.
        """
        path = f"image/{image_id}" if len(self.domains) == 1 else f"domains/{domain}/image/{image_id}"
        return f"{self.public_url}/{path}" if self.public_url else path

    def gallery_file(self, domain: str, image_id: str) -> Path:
        """The indexed file of ``image_id``; only a decimal id selects one, from the index's own list."""
        index = self.domains.domains[domain].index
        if not (image_id.isascii() and image_id.isdigit()) or int(image_id) >= len(index.paths):
            raise HTTPException(404, f"unknown image id {image_id!r}: ids are 0..{len(index) - 1}")
        p = Path(index.paths[int(image_id)])
        if not p.is_file():
            raise HTTPException(404, f"gallery image {image_id} is missing on disk")
        return p

    def info(self) -> dict:
        """One domain: its index as before; several: the total, per-domain details under ``domains``."""
        idx = [d.index for d in self.domains.domains.values()]
        one = len(idx) == 1
        return {"count": sum(len(i) for i in idx), "dim": idx[0].dim,
                "kind": idx[0].meta["kind"] if one else None, "fingerprint": idx[0].fingerprint if one else None,
                "has_labels": any(lab is not None for i in idx for lab in i.labels),
                **self.limits, **self.domains.info()}

    def resolve(self, domain: str | None) -> str | None:
        try:
            return self.domains.resolve(domain)
        except UnknownDomainError as exc:
            raise HTTPException(404, str(exc)) from None

    def search(self, upload: UploadFile, k: int, domain: str | None) -> dict:
        target = self.resolve(domain)  # an unknown domain is refused before the upload is read
        limit = self.limits["max_upload_bytes"]
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload too large: the limit is {limit} bytes")
        with self.slots:
            ans, (width, height) = _search_upload(data, self.limits["max_pixels"], self.domains, target, k, self.lock)
        return {
            "k": k,
            "domain": ans.domain,
            "route": ans.route.to_dict() if ans.route else None,
            "query": {"filename": upload.filename, "width": width, "height": height},
            "fingerprint": None if ans.domain == ALL else self.domains.domains[ans.domain].index.fingerprint,
            "results": [{"rank": h.rank, "id": h.id, "score": round(h.score, 6), "path": self.rel(h.domain, h.path),
                         "label": h.label, "domain": h.domain, "image_url": self.image_url(h.domain, h.id)}
                        for h in ans.hits],
        }

    def image(self, domain: str, image_id: str, size: int | None) -> Response:
        p = self.gallery_file(domain, image_id)
        if size is None:
            media = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            return FileResponse(p, media_type=media)
        return Response(self.thumbs.get(p, int(image_id), size, domain), media_type="image/jpeg")


def create_app(
    index_path: str | Path | GalleryIndex | None = None,
    embedder: EmbedderLike | None = None,
    *,
    domains: DomainSet | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    default_k: int = 10,
    max_k: int = 100,
    nprobe: int | None = None,
    public_url: str | None = None,
) -> FastAPI:
    """Build the search service for one index and one model, or for several domains.

    Args:
        index_path: an index directory (``dva index`` output) or a loaded index (one domain,
            named ``default``).
        embedder: the model that built the index (checked by fingerprint, here, at start).
        domains: instead of ``index_path`` and ``embedder``: several domains on one frozen
            backbone (:func:`dva.retrieval.domains.load_domains`).
        max_upload_bytes: largest accepted upload (413 above).
        max_pixels: largest accepted image area in pixels (413 above), read from the header
            before any pixel is decoded.
        max_decodes: uploads decoded and embedded at once; more requests wait their turn, so
            memory stays bounded whatever the number of clients.
        default_k: hits returned when the request gives no ``k``.
        max_k: largest ``k`` a request may ask for.
        nprobe: IVF lists visited per query (IVF-PQ indexes only; every domain's).
        public_url: the address clients reach the service at (behind a proxy); ``image_url``
            in answers is then absolute under it. Default: relative (``image/{id}``).

    Raises:
        FingerprintMismatchError: the embedder is not the index's model.
        ValueError: both or neither of (``index_path``, ``embedder``) and ``domains``;
            ``max_decodes`` < 1, ``default_k`` outside 1..``max_k``, or a malformed ``public_url``.
    """
    single = index_path is not None or embedder is not None
    if single == (domains is not None) or (single and (index_path is None or embedder is None)):
        raise ValueError("create_app serves either one index with its embedder, or domains=: give one of the two")
    if domains is None:
        index = index_path if isinstance(index_path, GalleryIndex) else GalleryIndex.load(index_path)
        domains = single_domain(index, embedder)
    if nprobe is not None:
        for d in domains.domains.values():
            d.index.set_nprobe(nprobe)
    if max_decodes < 1:
        raise ValueError(f"max_decodes must be >= 1, got {max_decodes}")
    if not 1 <= default_k <= max_k:
        raise ValueError(f"the default k must be between 1 and {max_k}, got {default_k}")
    limits = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_decodes": max_decodes,
              "default_k": default_k, "max_k": max_k}
    svc = _Service(domains, limits, public_base(public_url), slots=threading.BoundedSemaphore(max_decodes))
    app = FastAPI(title="dva search", version="1")
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + _MULTIPART_SLACK)
    first = domains.domains[svc.first]
    app.state.index, app.state.embedder, app.state.domains = first.index, first.embedder, domains
    _add_routes(app, svc)
    return app


def _add_routes(app: FastAPI, svc: _Service) -> None:
    """``GET /``, ``GET /api/info``, ``POST /search``, the image routes (see the module docstring)."""
    page = resources.files("dva.retrieval").joinpath("static/index.html").read_text("utf-8")
    default_k, max_k = svc.limits["default_k"], svc.limits["max_k"]
    domain_help = "a domain name, 'all' (every domain, merged), or none (routed to the likeliest domain)"

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def info() -> dict:
        return svc.info()

    @app.post("/search")
    def search(file: UploadFile = File(..., description="the query image"),
               k: int = Query(default_k, ge=1, le=max_k),
               domain: str | None = Query(None, description=domain_help),
               domain_field: str | None = Form(None, alias="domain", description=domain_help)) -> dict:
        return svc.search(file, k, domain if domain is not None else domain_field)

    @app.get("/image/{image_id}")
    def image(image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        return svc.image(svc.first, image_id, size)

    @app.get("/domains/{domain}/image/{image_id}")
    def domain_image(domain: str, image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        name = svc.resolve(domain)
        if name in (None, ALL):
            raise HTTPException(404, f"images belong to one domain: one of {', '.join(svc.domains.names)}")
        return svc.image(name, image_id, size)


def serve(
    index_path: str | Path | None = None,
    embedder: EmbedderLike | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    **app_kwargs: Any,
) -> None:
    """Run the search service with uvicorn until interrupted (``domains=`` for several domains)."""
    import uvicorn

    uvicorn.run(create_app(index_path, embedder, **app_kwargs), host=host, port=port,
                log_level="info")
