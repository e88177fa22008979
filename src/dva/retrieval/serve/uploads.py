"""The write routes: ``POST /items`` (upload images: decoded as queries are, stored under their
content's hash, embedded and added in one commit) and ``DELETE /items/{id}``, both behind the
api key (:mod:`.auth`). Writes hold the service's write lock: searches see the gallery before or
after a write. Where uploads are kept: :func:`default_upload_dir`, or ``upload_dir``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from dva.retrieval.backend import BASE_COLUMNS
from dva.retrieval.domains import ALL, DomainSet
from dva.retrieval.serve.images import image_suffix
from dva.retrieval.serve.limits import read_upload

if TYPE_CHECKING:
    from dva.retrieval.serve.service import Service


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


def upload_dirs(domains: DomainSet, upload_dir: str | Path | None, writable: bool) -> dict[str, Path]:
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


def _quote(text: str) -> str:
    """A filter string literal (``'`` doubled inside)."""
    return "'" + text.replace("'", "''") + "'"


def write_domain(svc: Service, domain: Any) -> str:
    """The one domain a write changes (the only one, or the one named)."""
    target = svc.resolve(domain if isinstance(domain, str) else None)
    if target is None and len(svc.domains) == 1:
        return svc.first
    if target in (None, ALL):
        raise HTTPException(400, f"name the domain to change: domain= one of {', '.join(svc.domains.names)}")
    return target


def item_fields(svc: Service, form: Any, name: str) -> tuple[list[UploadFile], str | None, dict[str, str | None]]:
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
    if len(files) > svc.limits["max_files"]:
        raise HTTPException(413, f"too many files: at most {svc.limits['max_files']} images per request")
    allowed = [c for c in svc.gallery(name).columns if c not in BASE_COLUMNS]
    unknown = sorted(set(fields) - {"label", *allowed})
    if unknown:
        raise HTTPException(400, f"unknown metadata column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                                 f"this gallery takes {', '.join(['label', *allowed])} (its columns are fixed "
                                 "when the index is built, from the header of the list CSV)")
    label = (fields.pop("label", None) or "").strip() or None
    return files, label, {c: (fields.get(c) or "").strip() or None for c in allowed}


def add_items(svc: Service, form: Any, domain: str | None) -> dict:
    """Decode, embed and add every upload of ``form`` to one domain's gallery (committed on return)."""
    name = write_domain(svc, domain if domain is not None else form.get("domain"))
    files, label, extra = item_fields(svc, form, name)
    prepared = []
    for n, upload in enumerate(files, 1):
        try:
            data = read_upload(upload, svc.limits["max_upload_bytes"])
            vector = svc.embed_upload(data, name)[2][name]  # decoded first: the format is then known
            prepared.append((data, image_suffix(data), vector))
        except HTTPException as exc:
            raise HTTPException(exc.status_code, f"file {n} ({upload.filename}): {exc.detail}") from None
    svc.refresh()
    added = commit_items(svc, name, prepared, label, extra)
    return {"domain": name, "added": added, "count": len(svc.gallery(name))}


def commit_items(svc: Service, name: str, prepared: list[tuple[bytes, str, np.ndarray]], label: str | None,
                 extra: dict[str, str | None]) -> list[dict]:
    """Store each upload under its content's name, then add them all in one commit (files of a failed add go)."""
    from dva.utils import atomic_write_bytes

    g, up = svc.gallery(name), svc.upload_dirs[name]
    paths: list[str] = []
    created: list[Path] = []
    with svc.galleries_lock.exclusive():
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
            finally:
                svc.domains.domains[name].changed()
        except BaseException:
            for p in created:
                p.unlink(missing_ok=True)
            raise
    return [{"id": int(i), "path": svc.rel(name, p), "label": label, "extra": extra,
             "image_url": svc.image_url(name, int(i))} for i, p in zip(ids, paths)]


def remove_item(svc: Service, domain: str | None, image_id: str) -> dict:
    """Remove one item (committed on return); its file goes too when it was an upload."""
    name = write_domain(svc, domain)
    item = svc.item(name, image_id)  # 404 for an id that is not (or no longer) there
    g = svc.gallery(name)
    with svc.galleries_lock.exclusive():
        try:
            removed = g.remove([item.id])
        finally:
            svc.domains.domains[name].changed()
        if removed == 0:
            raise HTTPException(404, f"unknown image id {image_id}: no item of the gallery has it")
        if Path(item.path).parent == svc.upload_dirs.get(name):
            Path(item.path).unlink(missing_ok=True)
    return {"domain": name, "removed": item.id, "path": svc.rel(name, item.path), "count": len(g)}


def add_write_routes(app: FastAPI, svc: Service) -> None:
    """``POST /items`` and ``DELETE /items/{id}``, behind the api key (the package docstring)."""
    which = "the domain to change (needed when the server has several)"

    @app.post("/items")
    async def post_items(request: Request, domain: str | None = Query(None, description=which)) -> dict:
        svc.authorize(request)  # the middleware checked already; a second line costs nothing
        # One more file than allowed still parses, so that the answer is our 413, not a parser's 400.
        form = await request.form(max_files=svc.limits["max_files"] + 1, max_fields=100)
        try:
            return await run_in_threadpool(add_items, svc, form, domain)
        finally:
            await form.close()

    @app.delete("/items/{image_id}")
    def delete_item(request: Request, image_id: str, domain: str | None = Query(None, description=which)) -> dict:
        svc.authorize(request)
        return remove_item(svc, domain, image_id)
