"""A read-write lock: many readers (searches) at once, or one writer (an add, a removal, a reload)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Shared holders at once, or one exclusive holder alone.

    Args:
        prefer_writers: a waiting writer goes before readers that arrive after it, so a stream
            of searches cannot starve a write (the server's gallery lock). Off, a reader may take
            the lock while a writer waits, which lets a reader nest (``shared()`` inside
            ``shared()``) without deadlock (a :class:`~dva.retrieval.index.GalleryIndex`'s lock).
    """

    def __init__(self, prefer_writers: bool = False) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0
        self._prefer_writers = prefer_writers

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writing or (self._prefer_writers and self._waiting):
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
    def exclusive(self) -> Iterator[None]:
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
