"""The state behind the routes: the domains, the limits, the locks, and the read paths (search,
item lookups, the paths and links answers show).

One forward pass runs at a time (``lock``); uploads are decoded in at most ``max_decodes`` slots;
searches share ``galleries_lock`` and a write holds it alone (:class:`ReadWriteLock`), so a search
sees the gallery before or after a write, never in between. The search itself is the domain set's
(:meth:`dva.retrieval.domains.DomainSet.search_vectors`): the same code as ``dva search``.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import HTTPException, Request, UploadFile

from dva.retrieval import filters
from dva.retrieval.backend import Item
from dva.retrieval.domains import ALL, DomainHit, DomainSet, Route, UnknownDomainError
from dva.retrieval.serve.auth import auth_error
from dva.retrieval.serve.images import Thumbnails, image_response
from dva.retrieval.serve.limits import BIG_DECODE, decode_upload, read_upload, release_memory
from dva.retrieval.locks import ReadWriteLock
from dva.retrieval.serve.reload import Freshness

if TYPE_CHECKING:
    from fastapi.responses import Response

    from dva.retrieval.backend import Gallery

_ROOT_CHUNK = 65_536  # items read at once when the gallery root is worked out


def gallery_root(gallery: Gallery, skip: Path | None) -> str:
    """The deepest folder holding every item's folder ("" when there is none, e.g. mixed drives).

    Items under ``skip`` (the upload folder) are left out; paths are read in chunks, ids ascending.
    """
    root: str | None = None
    ids = [int(i) for i in gallery.ids()]
    try:
        for lo in range(0, len(ids), _ROOT_CHUNK):
            for it in gallery.items(ids[lo:lo + _ROOT_CHUNK]):
                if skip is None or Path(it.path).parent != skip:
                    d = os.path.dirname(it.path)
                    root = d if root is None else os.path.commonpath([root, d])
    except ValueError:  # mixed drives / relative + absolute
        return ""
    return root or ""


@dataclass
class Service:
    """The domains behind the routes (one for the classic form), with the limits and the shared locks."""

    domains: DomainSet
    limits: dict  # max_upload_bytes, max_pixels, max_decodes, max_files, default_k, max_k
    public_url: str | None
    api_key: bytes | None = None  # None: read-only
    upload_dirs: dict[str, Path] = field(default_factory=dict)  # per domain, resolved
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time
    galleries_lock: ReadWriteLock = field(default_factory=lambda: ReadWriteLock(prefer_writers=True))  # searches vs writes
    slots: threading.BoundedSemaphore | None = None  # uploads decoded at once
    thumbs: Thumbnails = field(default_factory=Thumbnails)
    roots: dict[str, str] = field(default_factory=dict)  # gallery root per domain
    nprobe: int | None = None  # IVF lists visited, kept through reloads
    fresh: Freshness = field(default_factory=Freshness)

    def __post_init__(self) -> None:
        self.roots = {n: gallery_root(d.index, self.upload_dirs.get(n)) for n, d in self.domains.domains.items()}

    @property
    def first(self) -> str:
        """The domain of the classic ``/image/{id}`` route (the only one in the classic form)."""
        return self.domains.names[0]

    def gallery(self, domain: str) -> Gallery:
        return self.domains.domains[domain].index

    def refresh(self) -> None:
        """Reload each FAISS domain whose directory another process committed a newer build to
        (:mod:`dva.retrieval.serve.reload`); call it outside ``galleries_lock``."""
        for name, d in self.domains.domains.items():
            if self.fresh.stale(name, d.index):
                self._reload(name)

    def _reload(self, name: str) -> None:
        """Load the current build beside the served one (searches go on), then swap it in under the write lock."""
        from dva.retrieval.index.files import read_pointer
        from dva.retrieval.index.gallery_index import GalleryIndex

        d = self.domains.domains[name]
        try:
            newer = GalleryIndex.load(d.index.path)
            root = gallery_root(newer, self.upload_dirs.get(name))  # from the new build, before anyone sees it
        except (OSError, ValueError) as exc:
            warnings.warn(f"domain {name!r}: keeping the loaded build of {d.index.path}: the newer one does "
                          f"not load ({exc})", stacklevel=3)
            return
        if self.nprobe is not None:
            newer.set_nprobe(self.nprobe)
        with self.galleries_lock.exclusive():
            try:  # this server may have committed a build of its own meanwhile: only the current one goes in
                current = read_pointer(d.index.path).get("build")
            except (OSError, ValueError):
                return
            if current != newer.meta.get("build") or current == d.index.meta.get("build"):
                return
            with d.index.lock.exclusive():
                d.index.adopt(newer)  # in place: every holder of the object sees the new build
            d.changed()
            self.roots[name] = root

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
        self.refresh()
        with self.galleries_lock.shared():
            try:
                return self.gallery(domain).items([int(image_id)])[0]
            except KeyError:
                raise HTTPException(404, f"unknown image id {image_id}: no item of the gallery has it") from None

    def image(self, domain: str, image_id: str, size: int | None) -> Response:
        """The indexed file of ``image_id`` or its thumbnail (404 for an unknown id or a file gone from disk)."""
        p = Path(self.item(domain, image_id).path)
        if not p.is_file():
            raise HTTPException(404, f"gallery image {image_id} is missing on disk")
        return image_response(p, int(image_id), size, domain, self.thumbs)

    def resolve(self, domain: str | None) -> str | None:
        try:
            return self.domains.resolve(domain)
        except UnknownDomainError as exc:
            raise HTTPException(404, str(exc)) from None

    # ------------------------------------------------------------------ search
    def check_filter(self, where: str | None, target: str | None) -> str | None:
        """``where`` parsed and its columns checked against every domain it may reach (400 if bad)."""
        try:
            return self.domains.check_where(where, target)
        except filters.FilterError as exc:
            raise HTTPException(400, f"bad filter: {exc}") from None

    def embed_upload(self, data: bytes, target: str | None) -> tuple[str, Route | None, dict, tuple[int, int]]:
        """Decode an upload and embed it for ``target`` (a name, ``all``, or None: routed).

        Returns the domain answering (``all`` for every domain), the route taken, each searched
        domain's (1, D) query vector, and the image size. Runs inside a decode slot: the pixels
        live only here, and a large image's memory is handed back to the OS before the slot is
        released, so the server's footprint stays bounded.
        """
        with self.slots:
            image = decode_upload(data, self.limits["max_pixels"])
            size = image.size
            x = self.domains.images_to_tensor([image])
            del image
            if size[0] * size[1] > BIG_DECODE:
                release_memory()
            with self.lock:
                if target is None and len(self.domains) == 1:
                    target = self.first
                if target is None:
                    routes, vecs = self.domains.route(x)
                    return routes[0].domain, routes[0], {routes[0].domain: np.asarray(vecs[0])[None]}, size
                names = self.domains.names if target == ALL else [target]
                return target, None, self.domains.embed(x, names), size

    def hit(self, h: DomainHit) -> dict:
        """One hit as answers show it: the path relative to the gallery root, a link to the image."""
        return {"rank": h.rank, "id": h.id, "score": round(h.score, 6), "path": self.rel(h.domain, h.path),
                "label": h.label, "extra": dict(h.extra), "domain": h.domain,
                "image_url": self.image_url(h.domain, h.id)}

    def search(self, upload: UploadFile, k: int, domain: str | None, where: str | None = None) -> dict:
        """``POST /search``: the top-``k`` hits of one query image (module docstring of the package)."""
        target = self.resolve(domain)  # an unknown domain or a bad filter is refused before the upload is read
        where = self.check_filter(where, target)
        data = read_upload(upload, self.limits["max_upload_bytes"])
        name, route, vectors, (width, height) = self.embed_upload(data, target)
        self.refresh()
        with self.galleries_lock.shared():
            try:
                answer = self.domains.search_vectors(vectors, k, name, where)[0]
            except filters.FilterError as exc:
                raise HTTPException(400, f"bad filter: {exc}") from None
        return {
            "k": k,
            "domain": name,
            "route": route.to_dict() if route else None,
            "where": where,
            "query": {"filename": upload.filename, "width": width, "height": height},
            "fingerprint": None if name == ALL else self.gallery(name).fingerprint,
            "results": [self.hit(h) for h in answer.hits],
        }

    # ------------------------------------------------------------------ the write guard
    def auth_error(self, headers: Mapping[bytes, bytes]) -> HTTPException | None:
        """403 on a read-only server, 401 without the right key, else None (:mod:`.auth`)."""
        return auth_error(self.api_key, headers)

    def authorize(self, request: Request) -> None:
        err = self.auth_error({k.lower(): v for k, v in request.headers.raw})
        if err is not None:
            raise err
