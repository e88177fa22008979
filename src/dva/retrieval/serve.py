"""HTTP search service: upload a query image, get the nearest gallery images back; add and remove
gallery images when the server holds an api key.

Endpoints of :func:`create_app`:

* ``GET /``: a self-contained HTML page (no external assets) to choose or drop a query image
  and see the retrieved gallery images;
* ``POST /search?k=10[&domain=NAME|all]``: multipart field ``file`` = the query image (``domain``
  and ``where`` may also be form fields); JSON top-k hits with ``id``, ``score``, ``path``
  (relative to the gallery root; ``uploads/NAME`` for an image added through ``POST /items``),
  ``label``, ``extra`` (the gallery's extra metadata columns), ``domain``, ``image_url``
  (``image/{id}``, or ``domains/{domain}/image/{id}`` when the server has several domains,
  relative to the service root, as the page resolves it; absolute under ``public_url`` when one
  is configured, never taken from the request's ``Host`` header). With several domains
  (:mod:`dva.retrieval.domains`) a query without ``domain`` is routed (the answer's ``route``
  names the domain and the margin), and ``domain=all`` merges every domain's hits, each tagged
  with its domain. ``where`` restricts the hits to the items a filter keeps
  (:mod:`dva.retrieval.filters`: ``label = 'Mallard' and source = 'trap3'``), inside the search;
* ``GET /image/{id}[?size=N]``: the gallery image with that id of the first domain (optionally a
  JPEG thumbnail whose longer side is N); ``GET /domains/{name}/image/{id}``: of domain ``name``.
  Only indexed files are ever served: the id selects a path from the gallery, no client-supplied
  path reaches the filesystem;
* ``GET /api/info``: gallery size, model fingerprint, index kind, limits, the filterable
  ``columns``, whether writes are enabled, and ``domains`` (each with its fingerprint), the
  router and the shared backbone;
* ``GET /healthz``: ``{"status": "ok", "items": N, "domains": [...]}``, or 503 when a store is
  unusable (an index directory whose files vanished, an unreachable Milvus);
* ``POST /items[?domain=NAME]`` (api key): multipart image files in the field ``file``
  (repeatable), an optional ``label`` and a value per extra column; each image is decoded as a
  query is, stored content-addressed in the upload folder, embedded and added to the gallery
  (committed before the answer); the answer lists the new ids. ``DELETE /items/{id}[?domain=NAME]``
  (api key) removes one.

Writes need the server's api key (``api_key``; ``dva serve`` takes it from ``DVA_API_KEY``) in
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time; a server started
without one is read-only (403 on the write routes). Writes are serialised, and a search never
runs while a write changes the gallery: it sees the gallery before or after the write.

Errors are JSON ``{"detail": "..."}``: 400 empty upload, a bad filter or an unknown metadata
column, 401 a missing or wrong api key, 403 a read-only server, 404 unknown id or domain (the
message lists the known domains), 409 an image already in the gallery, 413 upload or image too
large, 415 not a decodable image, 422 missing form field, 503 an unusable store.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import mimetypes
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from dva.data.images import to_rgb
from dva.retrieval import filters
from dva.retrieval.backend import BASE_COLUMNS, Item
from dva.retrieval.domains import ALL, DomainSet, Route, UnknownDomainError, single_domain
from dva.retrieval.index.gallery_index import GalleryIndex

if TYPE_CHECKING:
    from dva.retrieval.backend import Gallery
    from dva.runtime.protocol import EmbedderLike

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Decoded uploads held at once: a 40 MP image is ~120 MB as RGB, so 8 clients uploading at the
# same time would otherwise hold ~1 GB of pixels (and the allocator keeps it afterwards).
DEFAULT_MAX_DECODES = 2
DEFAULT_MAX_FILES = 16  # images one POST /items may carry (its body limit is this many uploads)
API_KEY_ENV = "DVA_API_KEY"
_BIG_DECODE = 4_000_000  # pixels; after such a decode, freed memory is handed back to the OS
_READ_ONLY = f"read-only server: start it with an api key ({API_KEY_ENV}) to allow writes"
_BAD_KEY = "missing or wrong api key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
_ROOT_CHUNK = 65_536  # items read at once when the gallery root is worked out


def _release_memory() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise); a no-op where unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
# Room for the multipart boundary and part headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


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
        mib = (self.limit - _MULTIPART_SLACK) / 2**20
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


def _common_root(paths: Iterator[str]) -> str:
    """The deepest folder holding every path's folder ("" when there is none, e.g. mixed drives)."""
    root: str | None = None
    try:
        for p in paths:
            d = os.path.dirname(p)
            root = d if root is None else os.path.commonpath([root, d])
    except ValueError:  # mixed drives / relative+absolute
        return ""
    return root or ""


def _gallery_paths(gallery: Gallery, skip: Path | None) -> Iterator[str]:
    """Every item's path (ids ascending, read in chunks), those under ``skip`` (the uploads) left out."""
    ids = [int(i) for i in gallery.ids()]
    for lo in range(0, len(ids), _ROOT_CHUNK):
        for it in gallery.items(ids[lo:lo + _ROOT_CHUNK]):
            if skip is None or Path(it.path).parent != skip:
                yield it.path


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


def _image_suffix(data: bytes) -> str:
    """The file extension of a decoded upload's format (``.png``, ``.jpg``...): never the client's name."""
    fmt = Image.open(io.BytesIO(data)).format or ""
    known = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
    if fmt in known:
        return known[fmt]
    exts = [e for e, f in Image.registered_extensions().items() if f == fmt]
    return min(exts) if exts else ".img"


class _ReadWriteLock:
    """Searches at once, or one write alone: a search never meets a half-changed gallery.

    A waiting write goes before searches that arrive after it, so writes are not starved.
    (FAISS searches may run in parallel, but not beside an add or a removal on the same index.)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class _Thumbnails:
    """JPEG thumbnails of gallery images, the most recent ``capacity`` kept in memory."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, image_id: int, size: int, domain: str = "") -> bytes:
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


def check_api_key(key: str | None) -> bytes | None:
    """The api key as bytes (None: read-only); refuses one no HTTP header can carry.

    Raises:
        ValueError: an empty key, or one with spaces or control characters.
    """
    if key is None:
        return None
    if not key or not key.isprintable() or not key.isascii() or any(c.isspace() for c in key):
        raise ValueError(f"the api key ({API_KEY_ENV} or --api-key) must be non-empty printable ASCII without "
                         "spaces, e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key.encode()


def _presented_key(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (raw ASGI headers)."""
    auth = headers.get(b"authorization", b"")
    scheme, _, token = auth.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    key = headers.get(b"x-api-key", b"").strip()
    return key or None


def default_upload_dir(gallery: Any) -> Path | None:
    """Where uploads go by default: ``INDEX/uploads`` for an index directory, ``NAME-uploads``
    beside a Milvus Lite file; None for a remote store (``upload_dir`` must then be given)."""
    path = getattr(gallery, "path", None)
    if path is not None and Path(path).is_dir():
        return Path(path) / "uploads"
    uri = str((getattr(gallery, "meta", None) or {}).get("uri") or "")
    if uri and "://" not in uri:
        p = Path(uri)
        return p.parent / f"{p.stem}-uploads"
    return None


def _quote(text: str) -> str:
    """A filter string literal (``'`` doubled inside)."""
    return "'" + text.replace("'", "''") + "'"


def _store_problem(gallery: Any) -> str | None:
    """What makes a store unusable, found cheaply (no scan): None when it looks fine."""
    check = getattr(gallery, "health", None)
    if callable(check):  # a store may say itself what is wrong
        return check()
    path = getattr(gallery, "path", None)
    if path is not None:
        from dva.retrieval.index.files import POINTER

        if not (Path(path) / POINTER).is_file():
            return f"its index directory lost {POINTER}: the index files vanished"
    return None


@dataclass
class _Service:
    """The domains behind the routes (one for the classic form), with the limits and the shared locks."""

    domains: DomainSet
    limits: dict  # max_upload_bytes, max_pixels, max_decodes, max_files, default_k, max_k
    public_url: str | None
    api_key: bytes | None = None  # None: read-only
    upload_dirs: dict[str, Path] = field(default_factory=dict)  # per domain, resolved
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time
    galleries_lock: _ReadWriteLock = field(default_factory=_ReadWriteLock)  # searches vs writes
    slots: threading.BoundedSemaphore | None = None  # uploads decoded at once
    thumbs: _Thumbnails = field(default_factory=_Thumbnails)
    roots: dict[str, str] = field(default_factory=dict)  # gallery root per domain

    def __post_init__(self) -> None:
        self.roots = {n: _common_root(_gallery_paths(d.index, self.upload_dirs.get(n)))
                      for n, d in self.domains.domains.items()}

    @property
    def first(self) -> str:
        """The domain of the classic ``/image/{id}`` route (the only one in the classic form)."""
        return self.domains.names[0]

    def gallery(self, domain: str) -> Gallery:
        return self.domains.domains[domain].index

    def rel(self, domain: str, path: str) -> str:
        """A gallery path relative to its domain's gallery root (no server directories in answers)."""
        up = self.upload_dirs.get(domain)
        if up is not None and Path(path).parent == up:
            return f"uploads/{Path(path).name}"
        root = self.roots[domain]
        return os.path.relpath(path, root) if root else os.path.basename(path)

    def image_url(self, domain: str, image_id: int) -> str:
        """Where the image is served: relative to the service root, or under ``--public-url``.

        Never built from the request's ``Host`` header: a forged one would make the answers
        link to another site.
        """
        path = f"image/{image_id}" if len(self.domains) == 1 else f"domains/{domain}/image/{image_id}"
        return f"{self.public_url}/{path}" if self.public_url else path

    def item(self, domain: str, image_id: str) -> Item:
        """The gallery item of ``image_id``; only a decimal id selects one, from the store itself."""
        if not (image_id.isascii() and image_id.isdigit()) or int(image_id) >= 2**63:
            raise HTTPException(404, f"unknown image id {image_id!r}: ids are the decimal ids of search hits")
        with self.galleries_lock.read():
            try:
                return self.gallery(domain).items([int(image_id)])[0]
            except KeyError:
                raise HTTPException(404, f"unknown image id {image_id}: no item of the gallery has it") from None

    def gallery_file(self, domain: str, image_id: str) -> Path:
        """The indexed file of ``image_id`` (404 for an unknown id or a file gone from disk)."""
        p = Path(self.item(domain, image_id).path)
        if not p.is_file():
            raise HTTPException(404, f"gallery image {image_id} is missing on disk")
        return p

    def info(self) -> dict:
        """One domain: its index as before; several: the total, per-domain details under ``domains``."""
        gs = [d.index for d in self.domains.domains.values()]
        one = len(gs) == 1
        per = self.domains.info()
        cols = [list(g.columns) for g in gs]
        return {"count": sum(len(g) for g in gs), "dim": gs[0].dim,
                "kind": gs[0].meta.get("kind") if one else None, "fingerprint": gs[0].fingerprint if one else None,
                "has_labels": any(d["has_labels"] for d in per["domains"]),
                "columns": [c for c in cols[0] if all(c in other for other in cols)],  # filterable everywhere
                "writable": self.api_key is not None, **self.limits, **per}

    def health(self) -> tuple[int, dict]:
        """``(200, ok)`` or ``(503, ...)`` naming the domains whose store is unusable; no scan."""
        total, problems = 0, {}
        for name, d in self.domains.domains.items():
            try:
                total += len(d.index)
                problem = _store_problem(d.index)
            except Exception as exc:  # noqa: BLE001 - any failure of the store is the answer
                # The type only: the text may name server paths or addresses, and /healthz is public.
                problem = f"the store does not answer ({type(exc).__name__})"
            if problem:
                problems[name] = problem
        body: dict[str, Any] = {"status": "unavailable" if problems else "ok", "items": total,
                                "domains": self.domains.names}
        if problems:
            body["problems"] = problems
        return (503 if problems else 200), body

    def resolve(self, domain: str | None) -> str | None:
        try:
            return self.domains.resolve(domain)
        except UnknownDomainError as exc:
            raise HTTPException(404, str(exc)) from None

    # ------------------------------------------------------------------ search
    def check_filter(self, where: str | None, target: str | None) -> str | None:
        """``where`` parsed and its columns checked against every domain it may reach (400 if bad)."""
        if where is None or not where.strip():
            return None
        names = self.domains.names if target in (None, ALL) else [target]
        try:
            f = filters.parse(where)
            for n in names:
                filters.check_columns(f, self.gallery(n).columns, where)
        except filters.FilterError as exc:
            raise HTTPException(400, f"bad filter: {exc}") from None
        return where

    def read_upload(self, upload: UploadFile) -> bytes:
        limit = self.limits["max_upload_bytes"]
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload too large: the limit is {limit} bytes")
        return data

    def embed_upload(self, data: bytes, target: str | None) -> tuple[str, Route | None, dict, tuple[int, int]]:
        """Decode an upload and embed it for ``target`` (a name, ``all``, or None: routed).

        Returns the domain answering (``all`` for every domain), the route taken, each searched
        domain's (1, D) query vector, and the image size. Runs inside a decode slot: the pixels
        live only here, and a large image's memory is handed back to the OS before the slot is
        released, so the server's footprint stays bounded.
        """
        with self.slots:
            image = _decode_upload(data, self.limits["max_pixels"])
            size = image.size
            x = self.domains.images_to_tensor([image])
            del image
            if size[0] * size[1] > _BIG_DECODE:
                _release_memory()
            with self.lock:
                if target is None and len(self.domains) == 1:
                    target = self.first
                if target is None:
                    routes, vecs = self.domains.route(x)
                    return routes[0].domain, routes[0], {routes[0].domain: np.asarray(vecs[0])[None]}, size
                names = self.domains.names if target == ALL else [target]
                return target, None, self.domains.embed(x, names), size

    def hits(self, vectors: dict[str, np.ndarray], k: int, where: str | None) -> list[dict]:
        """The top-``k`` items for each domain's query vector, merged by cosine (several domains)."""
        found: list[tuple[float, str, Item]] = []
        with self.galleries_lock.read():
            for name, v in vectors.items():
                g = self.gallery(name)
                q = np.asarray(v, np.float32).reshape(1, -1)
                try:
                    scores, ids = g.search(q, k) if where is None else g.search(q, k, where)
                except filters.FilterError as exc:
                    raise HTTPException(400, f"bad filter: {exc}") from None
                keep = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
                found += [(s, name, it) for (s, _), it in zip(keep, g.items([i for _, i in keep]))]
        found.sort(key=lambda t: -t[0])  # stable: one domain's order is kept as the store gave it
        return [{"rank": r, "id": it.id, "score": round(s, 6), "path": self.rel(name, it.path), "label": it.label,
                 "extra": dict(it.extra), "domain": name, "image_url": self.image_url(name, it.id)}
                for r, (s, name, it) in enumerate(found[:k], 1)]

    def search(self, upload: UploadFile, k: int, domain: str | None, where: str | None = None) -> dict:
        target = self.resolve(domain)  # an unknown domain or a bad filter is refused before the upload is read
        where = self.check_filter(where, target)
        data = self.read_upload(upload)
        name, route, vectors, (width, height) = self.embed_upload(data, target)
        return {
            "k": k,
            "domain": name,
            "route": route.to_dict() if route else None,
            "where": where,
            "query": {"filename": upload.filename, "width": width, "height": height},
            "fingerprint": None if name == ALL else self.gallery(name).fingerprint,
            "results": self.hits(vectors, k, where),
        }

    def image(self, domain: str, image_id: str, size: int | None) -> Response:
        p = self.gallery_file(domain, image_id)
        if size is None:
            media = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            return FileResponse(p, media_type=media)
        return Response(self.thumbs.get(p, int(image_id), size, domain), media_type="image/jpeg")

    # ------------------------------------------------------------------ writes
    def auth_error(self, headers: Mapping[bytes, bytes]) -> HTTPException | None:
        """403 on a read-only server, 401 without the right key (which of the two is not said), else None.

        Both sides are hashed first, so the constant-time comparison does not even leak the key's length.
        """
        if self.api_key is None:
            return HTTPException(403, _READ_ONLY)
        given = _presented_key(headers)
        if given is None or not hmac.compare_digest(hashlib.sha256(given).digest(),
                                                    hashlib.sha256(self.api_key).digest()):
            return HTTPException(401, _BAD_KEY, headers={"WWW-Authenticate": "Bearer"})
        return None

    def authorize(self, request: Request) -> None:
        err = self.auth_error({k.lower(): v for k, v in request.headers.raw})
        if err is not None:
            raise err

    def write_domain(self, domain: Any) -> str:
        """The one domain a write changes (the only one, or the one named)."""
        target = self.resolve(domain if isinstance(domain, str) else None)
        if target is None and len(self.domains) == 1:
            return self.first
        if target in (None, ALL):
            raise HTTPException(400, f"name the domain to change: domain= one of {', '.join(self.domains.names)}")
        return target

    def item_fields(self, form: Any, name: str) -> tuple[list[UploadFile], str | None, dict[str, str | None]]:
        """The uploads, label and extra columns of a ``POST /items`` form (400/413 when they do not fit)."""
        files, fields = [], {}
        for key, value in form.multi_items():
            if isinstance(value, StarletteUpload):
                if key != "file":
                    raise HTTPException(400, f"file field {key!r}: send images in the form field 'file' "
                                             "(repeat it for several)")
                files.append(value)
            elif key in fields:
                raise HTTPException(400, f"form field {key!r} is given twice")
            else:
                fields[key] = value
        fields.pop("domain", None)
        if not files:
            raise HTTPException(400, "no image: send one or more image files in the form field 'file'")
        if len(files) > self.limits["max_files"]:
            raise HTTPException(413, f"too many files: at most {self.limits['max_files']} images per request")
        allowed = [c for c in self.gallery(name).columns if c not in BASE_COLUMNS]
        unknown = sorted(set(fields) - {"label", *allowed})
        if unknown:
            raise HTTPException(400, f"unknown metadata column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                                     f"this gallery takes {', '.join(['label', *allowed])} (its columns are fixed "
                                     "when the index is built, from the header of the list CSV)")
        label = (fields.pop("label", None) or "").strip() or None
        return files, label, {c: (fields.get(c) or "").strip() or None for c in allowed}

    def add_items(self, form: Any, domain: str | None) -> dict:
        """Decode, embed and add every upload of ``form`` to one domain's gallery (committed on return)."""
        name = self.write_domain(domain if domain is not None else form.get("domain"))
        files, label, extra = self.item_fields(form, name)
        prepared = []
        for n, upload in enumerate(files, 1):
            try:
                data = self.read_upload(upload)
                vector = self.embed_upload(data, name)[2][name]  # decoded first: the format is then known
                prepared.append((data, _image_suffix(data), vector))
            except HTTPException as exc:
                raise HTTPException(exc.status_code, f"file {n} ({upload.filename}): {exc.detail}") from None
        added = self.commit_items(name, prepared, label, extra)
        return {"domain": name, "added": added, "count": len(self.gallery(name))}

    def commit_items(self, name: str, prepared: list[tuple[bytes, str, np.ndarray]], label: str | None,
                     extra: dict[str, str | None]) -> list[dict]:
        """Store each upload under its content's name, then add them all in one commit (files of a failed add go)."""
        from dva.utils import atomic_write_bytes

        g, up = self.gallery(name), self.upload_dirs[name]
        paths: list[str] = []
        created: list[Path] = []
        with self.galleries_lock.write():
            try:
                for n, (data, suffix, vec) in enumerate(prepared, 1):
                    path = up / f"{hashlib.sha256(data).hexdigest()}{suffix}"
                    if str(path) in paths:
                        raise HTTPException(409, f"file {n} is the same image as an earlier file of this request")
                    found = g.search(np.asarray(vec, np.float32).reshape(1, -1), 1, f"path = {_quote(str(path))}")[1]
                    if found.size and found[0, 0] >= 0:
                        raise HTTPException(409, f"file {n} is already in the gallery as id {int(found[0, 0])} "
                                                 "(uploads are named by their content)")
                    if not path.is_file():
                        atomic_write_bytes(path, data)
                        created.append(path)
                    paths.append(str(path))
                vectors = np.concatenate([np.asarray(v, np.float32).reshape(1, -1) for *_, v in prepared])
                try:
                    ids = g.add(vectors, paths, [label] * len(paths), [dict(extra) for _ in paths])
                except ValueError as exc:  # e.g. another process added one of these files meanwhile
                    raise HTTPException(409, f"the gallery refused the images: {exc}") from None
            except BaseException:
                for p in created:
                    p.unlink(missing_ok=True)
                raise
        return [{"id": int(i), "path": self.rel(name, p), "label": label, "extra": extra,
                 "image_url": self.image_url(name, int(i))} for i, p in zip(ids, paths)]

    def remove_item(self, domain: str | None, image_id: str) -> dict:
        """Remove one item (committed on return); its file goes too when it was an upload."""
        name = self.write_domain(domain)
        item = self.item(name, image_id)  # 404 for an id that is not (or no longer) there
        g = self.gallery(name)
        with self.galleries_lock.write():
            if g.remove([item.id]) == 0:
                raise HTTPException(404, f"unknown image id {image_id}: no item of the gallery has it")
            if Path(item.path).parent == self.upload_dirs.get(name):
                Path(item.path).unlink(missing_ok=True)
        return {"domain": name, "removed": item.id, "path": self.rel(name, item.path), "count": len(g)}


def _upload_dirs(domains: DomainSet, upload_dir: str | Path | None, writable: bool) -> dict[str, Path]:
    """Each domain's upload folder (``upload_dir``, one subfolder per domain when there are several;
    default beside the store); made and checked for writing when the server takes writes.

    Raises:
        ValueError: a writable server whose store has no folder (give ``upload_dir``), or an
            upload folder that cannot be written.
    """
    out = {}
    for name, d in domains.domains.items():
        if upload_dir is not None:
            base: Path | None = Path(upload_dir) / name if len(domains) > 1 else Path(upload_dir)
        else:
            base = default_upload_dir(d.index)
        if base is None:
            if writable:
                raise ValueError(f"domain {name!r}: its store has no folder to keep uploaded images beside it; "
                                 "give one with --upload-dir DIR (upload_dir=)")
            continue
        out[name] = base.expanduser().resolve()
        if writable:
            out[name].mkdir(parents=True, exist_ok=True)
            if not os.access(out[name], os.W_OK):
                raise ValueError(f"the upload folder {out[name]} is not writable: choose another with --upload-dir")
    return out


def create_app(
    index_path: str | Path | Gallery | None = None,
    embedder: EmbedderLike | None = None,
    *,
    domains: DomainSet | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    max_files: int = DEFAULT_MAX_FILES,
    default_k: int = 10,
    max_k: int = 100,
    nprobe: int | None = None,
    public_url: str | None = None,
    api_key: str | None = None,
    upload_dir: str | Path | None = None,
) -> FastAPI:
    """Build the search service for one gallery and one model, or for several domains.

    Args:
        index_path: an index directory (``dva index`` output) or an opened gallery store (a
            :class:`GalleryIndex`, a Milvus gallery; one domain, named ``default``).
        embedder: the model that built the gallery (checked by fingerprint, here, at start).
        domains: instead of ``index_path`` and ``embedder``: several domains on one frozen
            backbone (:func:`dva.retrieval.domains.load_domains`).
        max_upload_bytes: largest accepted upload, per file (413 above).
        max_pixels: largest accepted image area in pixels (413 above), read from the header
            before any pixel is decoded; every file of a ``POST /items`` is held to it.
        max_decodes: uploads decoded and embedded at once; more requests wait their turn, so
            memory stays bounded whatever the number of clients.
        max_files: images one ``POST /items`` may carry (its body may be this many uploads).
        default_k: hits returned when the request gives no ``k``.
        max_k: largest ``k`` a request may ask for.
        nprobe: IVF lists visited per query (IVF-PQ indexes only; every domain's).
        public_url: the address clients reach the service at (behind a proxy); ``image_url``
            in answers is then absolute under it. Default: relative (``image/{id}``).
        api_key: the key ``POST /items`` and ``DELETE /items/{id}`` require (None: read-only).
        upload_dir: where uploaded images are kept (default: ``INDEX/uploads``; with several
            domains, one subfolder per domain).

    Raises:
        FingerprintMismatchError: the embedder is not the gallery's model.
        ValueError: both or neither of (``index_path``, ``embedder``) and ``domains``;
            ``max_decodes`` or ``max_files`` < 1, ``default_k`` outside 1..``max_k``, a
            malformed ``public_url`` or ``api_key``, or no writable upload folder for a writable server.
    """
    single = index_path is not None or embedder is not None
    if single == (domains is not None) or (single and (index_path is None or embedder is None)):
        raise ValueError("create_app serves either one index with its embedder, or domains=: give one of the two")
    if domains is None:
        index = GalleryIndex.load(index_path) if isinstance(index_path, (str, Path)) else index_path
        domains = single_domain(index, embedder)  # type: ignore[arg-type]
    if nprobe is not None:
        for d in domains.domains.values():
            if hasattr(d.index, "set_nprobe"):  # FAISS only; Milvus tunes its own search
                d.index.set_nprobe(nprobe)
    if max_decodes < 1 or max_files < 1:
        raise ValueError(f"max_decodes and max_files must be >= 1, got {max_decodes} and {max_files}")
    if not 1 <= default_k <= max_k:
        raise ValueError(f"the default k must be between 1 and {max_k}, got {default_k}")
    key = check_api_key(api_key)
    limits = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_decodes": max_decodes,
              "max_files": max_files, "default_k": default_k, "max_k": max_k}
    svc = _Service(domains, limits, public_base(public_url), key, _upload_dirs(domains, upload_dir, key is not None),
                   slots=threading.BoundedSemaphore(max_decodes))
    app = FastAPI(title="dva search", version="1")
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + _MULTIPART_SLACK, max_files=max_files,
                       guard=svc.auth_error)
    first = domains.domains[svc.first]
    app.state.index, app.state.embedder, app.state.domains = first.index, first.embedder, domains
    _add_read_routes(app, svc)
    _add_write_routes(app, svc)
    return app


_DOMAIN_HELP = "a domain name, 'all' (every domain, merged), or none (routed to the likeliest domain)"
_WHERE_HELP = "a filter on the gallery's columns, e.g. label = 'Mallard' and source in ('trap3', 'trap4')"


def _add_read_routes(app: FastAPI, svc: _Service) -> None:
    """``GET /``, ``GET /api/info``, ``GET /healthz``, ``POST /search``, the image routes (module docstring)."""
    page = resources.files("dva.retrieval").joinpath("static/index.html").read_text("utf-8")
    default_k, max_k = svc.limits["default_k"], svc.limits["max_k"]

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def info() -> dict:
        return svc.info()

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        status, body = svc.health()
        return JSONResponse(body, status_code=status)

    @app.post("/search")
    def search(file: UploadFile = File(..., description="the query image"),
               k: int = Query(default_k, ge=1, le=max_k),
               domain: str | None = Query(None, description=_DOMAIN_HELP),
               domain_field: str | None = Form(None, alias="domain", description=_DOMAIN_HELP),
               where: str | None = Query(None, description=_WHERE_HELP),
               where_field: str | None = Form(None, alias="where", description=_WHERE_HELP)) -> dict:
        return svc.search(file, k, domain if domain is not None else domain_field,
                          where if where is not None else where_field)

    @app.get("/image/{image_id}")
    def image(image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        return svc.image(svc.first, image_id, size)

    @app.get("/domains/{domain}/image/{image_id}")
    def domain_image(domain: str, image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        name = svc.resolve(domain)
        if name in (None, ALL):
            raise HTTPException(404, f"images belong to one domain: one of {', '.join(svc.domains.names)}")
        return svc.image(name, image_id, size)


def _add_write_routes(app: FastAPI, svc: _Service) -> None:
    """``POST /items`` and ``DELETE /items/{id}``, behind the api key (module docstring)."""
    which = "the domain to change (needed when the server has several)"

    @app.post("/items")
    async def add_items(request: Request, domain: str | None = Query(None, description=which)) -> dict:
        svc.authorize(request)  # the middleware checked already; a second line costs nothing
        # One more file than allowed still parses, so that the answer is our 413, not a parser's 400.
        form = await request.form(max_files=svc.limits["max_files"] + 1, max_fields=100)
        try:
            return await run_in_threadpool(svc.add_items, form, domain)
        finally:
            await form.close()

    @app.delete("/items/{image_id}")
    def remove_item(request: Request, image_id: str, domain: str | None = Query(None, description=which)) -> dict:
        svc.authorize(request)
        return svc.remove_item(domain, image_id)


def serve(
    index_path: str | Path | Gallery | None = None,
    embedder: EmbedderLike | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    **app_kwargs: Any,
) -> None:
    """Run the search service with uvicorn until interrupted (``domains=`` for several domains)."""
    import uvicorn

    uvicorn.run(create_app(index_path, embedder, **app_kwargs), host=host, port=port,
                log_level="info")
