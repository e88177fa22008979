"""The application: :func:`create_app` (checks the arguments, builds the service, adds the routes)
and :func:`serve` (runs it with uvicorn). The endpoints are listed in the package docstring."""
from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dva.retrieval.domains import ALL, DomainSet, single_domain
from dva.retrieval.index.gallery_index import GalleryIndex
from dva.retrieval.serve import health as health_
from dva.retrieval.serve.auth import check_api_key
from dva.retrieval.serve.limits import (
    DEFAULT_MAX_DECODES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    MULTIPART_SLACK,
    BodySizeLimit,
)
from dva.retrieval.serve.service import Service
from dva.retrieval.serve.uploads import add_write_routes, upload_dirs

if TYPE_CHECKING:
    from dva.retrieval.backend import Gallery
    from dva.runtime.protocol import EmbedderLike

_DOMAIN_HELP = "a domain name, 'all' (every domain, merged), or none (routed to the likeliest domain)"
_WHERE_HELP = "a filter on the gallery's columns, e.g. label = 'Mallard' and source in ('trap3', 'trap4')"


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
        nprobe: IVF lists visited per query (IVF-PQ indexes only; every domain's, kept through reloads).
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
    svc = Service(domains, limits, public_base(public_url), key, upload_dirs(domains, upload_dir, key is not None),
                  slots=threading.BoundedSemaphore(max_decodes), nprobe=nprobe)
    app = FastAPI(title="dva search", version="1")
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + MULTIPART_SLACK, max_files=max_files,
                       guard=svc.auth_error)
    first = domains.domains[svc.first]
    app.state.index, app.state.embedder, app.state.domains = first.index, first.embedder, domains
    _add_read_routes(app, svc)
    add_write_routes(app, svc)
    return app


def _add_read_routes(app: FastAPI, svc: Service) -> None:
    """``GET /``, ``GET /api/info``, ``GET /healthz``, ``POST /search``, the image routes (package docstring)."""
    page = resources.files("dva.retrieval").joinpath("static/index.html").read_text("utf-8")
    default_k, max_k = svc.limits["default_k"], svc.limits["max_k"]

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def info() -> dict:
        return health_.info(svc)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        status, body = health_.health(svc)
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
