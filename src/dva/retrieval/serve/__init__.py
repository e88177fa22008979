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
* ``GET /api/info``: gallery size, model fingerprint, index kind (None for a Milvus store), limits,
  the filterable ``columns``, whether writes are enabled, and ``domains`` (each with its
  fingerprint), the router and the shared backbone; no scan of the gallery (``has_labels`` is
  cached until a write);
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

A FAISS index directory changed by another process (``dva index --add``/``--remove``) is
reloaded before the next request (:mod:`.reload`; a Milvus store needs nothing).

The modules, one concept each:

* :mod:`.app`: :func:`create_app` (argument checks, the read routes) and :func:`serve` (uvicorn);
* :mod:`.service`: the state behind the routes (domains, limits, locks) and the search, which is
  the domain set's own (:meth:`dva.retrieval.domains.DomainSet.search_vectors`);
* :mod:`.auth`: the api key guarding the writes;
* :mod:`.limits`: body size (before parsing), image area (before decoding), decode slots;
* :mod:`.uploads`: ``POST /items``, ``DELETE /items/{id}``, where uploads are kept;
* :mod:`.images`: the gallery image routes and their thumbnails;
* :mod:`.health`: ``GET /api/info`` and ``GET /healthz``;
* :mod:`.reload`: seeing the commits of other processes.
"""
from dva.retrieval.serve.app import create_app, public_base, serve
from dva.retrieval.serve.auth import API_KEY_ENV, check_api_key
from dva.retrieval.serve.limits import (
    DEFAULT_MAX_DECODES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    BodySizeLimit,
)
from dva.retrieval.serve.uploads import default_upload_dir

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_MAX_DECODES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "BodySizeLimit",
    "check_api_key",
    "create_app",
    "default_upload_dir",
    "public_base",
    "serve",
]
