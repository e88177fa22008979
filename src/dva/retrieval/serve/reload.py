"""Seeing the commits of other processes: a served FAISS index directory changed by another
``dva index --add/--remove`` (or another server) is reloaded before the next request.

Before a request the service asks :meth:`Freshness.stale` of every FAISS domain: at most once per
:data:`CHECK_EVERY_S` it stats ``index.json`` (a commit replaces that file: a new inode, mtime and
size), and only when the stat changed does it read the pointer and compare its ``build`` with the
loaded one. A newer build is loaded beside the served one (searches go on meanwhile) and swapped in
under the service's write lock (:meth:`dva.retrieval.serve.service.Service.refresh`): a search sees
the old build or the new one, never a mix. A failed reload keeps the loaded build, with a warning;
the next commit is looked at again.

The server's own writes commit through the loaded index itself (its build is then the pointer's),
so they cause no reload. A Milvus server is shared by its clients: every writer's rows are seen
without a reload. Milvus Lite allows one process per database file: no other process can commit
to a file a server holds open, so there is nothing to reload.
"""
from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

from dva.retrieval.index.files import POINTER, read_pointer
from dva.retrieval.index.gallery_index import GalleryIndex

CHECK_EVERY_S = 1.0  # the longest a request may see a build older than one committed elsewhere (+ its load)


class Freshness:
    """When each domain's ``index.json`` was last looked at, and what it was then."""

    def __init__(self, every_s: float | None = None) -> None:
        self.every_s = CHECK_EVERY_S if every_s is None else every_s
        self._checked: dict[str, float] = {}
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def stale(self, name: str, gallery: Any) -> bool:
        """Whether ``index.json`` names another build than ``gallery`` holds (FAISS directories only).

        At most once per ``every_s`` per domain (a concurrent request does not wait: it goes on with
        the loaded build); a stat, and a read of the pointer only when the stat changed.
        """
        if not isinstance(gallery, GalleryIndex) or gallery.path is None:
            return False  # a Milvus store, or an index that is not a directory: module docstring
        now = time.monotonic()
        with self._lock:
            if now - self._checked.get(name, -math.inf) < self.every_s:
                return False
            self._checked[name] = now
        try:
            st = os.stat(gallery.path / POINTER)
        except OSError:
            return False  # gone: /healthz says so; the loaded build keeps answering
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._seen.get(name) == key:
            return False
        self._seen[name] = key
        try:
            pointer = read_pointer(gallery.path)
        except (OSError, ValueError):
            return False  # damaged or mid-replace: the next look decides
        return pointer.get("build") != gallery.meta.get("build")
