"""The items table of an index build: ``id``, ``path``, ``label`` and the extra metadata columns.

A build's items live in a SQLite file, ``index-<build>.items.sqlite``, one table::

    items(id INTEGER PRIMARY KEY, path, label, <extra columns>)

Every column but ``id`` is declared *without a type*: SQLite then gives it no affinity and
stores each value as given (an int label stays an int, a str stays a str), so ``label = 3``
and ``label = '3'`` select different rows, as :func:`dva.retrieval.filters.matches` says.

Reading is lazy: the file is opened once (``immutable=1``: a build file never changes; no lock,
no journal) and rows are fetched per query, never loaded into Python lists. One connection
serves every thread, behind a lock (sqlite3 connections are not thread-safe to share, and a
per-thread connection would have to reopen a file that a later commit may already have
retired and deleted; the open descriptor outlives the deletion on POSIX). A primary-key
lookup takes microseconds, so the lock costs the searching threads nothing measurable.

Index formats 1 and 2 kept paths and labels in JSON; they are loaded into an in-memory table
of the same shape (ids = rows), so the rest of the code knows one kind of table.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.store.gallery import check_column_names

BASE = ("id", "path", "label")
_CHUNK = 900  # ids per IN (...) query: under SQLite's default 999 host-parameter limit


class UnknownId(KeyError, IndexError):
    """An id that is not (or no longer) in the gallery; both a KeyError and an IndexError."""


def check_columns(columns: Iterable[str], where: str = "the extra columns") -> tuple[str, ...]:
    """The extra column names, checked by the one rule of every store and list CSV
    (:func:`dva.retrieval.store.gallery.check_column_names`: the filter grammar's names, none
    reserved or a filter keyword, none repeated, letter case ignored).

    Raises:
        ValueError: naming ``where`` and the bad column.
    """
    return check_column_names(tuple(columns), where, fix="rename it in the list CSV's header")


def _create(con: sqlite3.Connection, columns: Sequence[str]) -> None:
    extra = "".join(f', "{c}"' for c in columns)  # names checked by check_columns: safe to quote
    con.execute(f'CREATE TABLE items (id INTEGER PRIMARY KEY, path, label{extra})')
    con.execute("CREATE INDEX items_path ON items (path)")  # duplicate checks on add: no table scan


def _rows(ids: Sequence[int], paths: Sequence[str], labels: Sequence[Any],
          extras: Sequence[Mapping[str, Any]] | None, columns: Sequence[str]) -> Iterator[tuple]:
    for j, i in enumerate(ids):
        ex = extras[j] if extras is not None else {}
        yield (int(i), str(paths[j]), labels[j], *(ex.get(c) for c in columns))


def _fill(con: sqlite3.Connection, rows: Iterable[tuple], width: int) -> None:
    marks = ",".join("?" * width)
    con.executemany(f"INSERT INTO items VALUES ({marks})", rows)


def write_table(path: Path, ids: Sequence[int], paths: Sequence[str], labels: Sequence[Any],
                extras: Sequence[Mapping[str, Any]] | None, columns: Sequence[str],
                base: Path | ItemTable | None = None, base_columns: Sequence[str] = (),
                delete: Sequence[int] = ()) -> None:
    """Write the items table to ``path`` (a fresh temporary name; the caller renames it).

    With ``base`` (the previous build's table file, or an in-memory table) its rows are copied first and the new rows
    appended; columns of ``columns`` that ``base`` lacks are added (its rows get NULL there);
    the rows of ids ``delete`` are deleted.
    The file is fsynced before returning: the caller's rename must publish complete data.
    """
    path.unlink(missing_ok=True)
    if isinstance(base, ItemTable):
        base.write_copy(path)
    elif base is not None:
        with open(base, "rb") as src, open(path, "wb") as dst:  # byte copy: no row goes through Python
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # A temporary file: a crash discards it anyway, so no journal (nothing beside it to clean).
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        if base is None:
            _create(con, columns)
        else:
            for c in columns:
                if c not in base_columns:
                    con.execute(f'ALTER TABLE items ADD COLUMN "{c}"')
        con.execute("BEGIN")
        _fill(con, _rows(ids, paths, labels, extras, columns), 3 + len(columns))
        dead = [int(i) for i in delete]
        for lo in range(0, len(dead), _CHUNK):
            part = dead[lo:lo + _CHUNK]
            con.execute(f"DELETE FROM items WHERE id IN ({','.join('?' * len(part))})", part)
        con.execute("COMMIT")
    finally:
        con.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ItemTable:
    """Read access to one build's items (see the module docstring); safe to share between threads."""

    def __init__(self, con: sqlite3.Connection, columns: Sequence[str]):
        self._con = con
        self._lock = threading.Lock()
        self.extra_columns = tuple(columns)

    @classmethod
    def open(cls, path: Path, columns: Sequence[str]) -> ItemTable:
        """Open a build's table file read-only (raises FileNotFoundError when it is gone)."""
        if not path.exists():
            raise FileNotFoundError(path)
        uri = f"{path.resolve().as_uri()}?immutable=1"
        try:
            con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.OperationalError:  # deleted since the check: a newer build retired it
            raise FileNotFoundError(path) from None
        try:
            con.execute("SELECT id FROM items LIMIT 1").fetchall()  # opens the file now, not at first use
        except sqlite3.DatabaseError as exc:
            con.close()
            if not path.exists():
                raise FileNotFoundError(path) from None
            raise ValueError(f"{path}: not an items table ({exc})") from None
        return cls(con, columns)

    @classmethod
    def in_memory(cls, paths: Sequence[str], labels: Sequence[Any]) -> ItemTable:
        """A table for an index of format 1 or 2 (ids = rows, no extra columns)."""
        con = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        _create(con, ())
        con.execute("BEGIN")
        _fill(con, _rows(range(len(paths)), paths, labels, None, ()), 3)
        con.execute("COMMIT")
        return cls(con, ())

    @property
    def columns(self) -> tuple[str, ...]:
        """``id``, ``path``, ``label`` and the extra columns."""
        return BASE + self.extra_columns

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read query under the lock."""
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

    def rows(self, ids: Sequence[int]) -> list[tuple]:
        """``(id, path, label, *extra)`` of ``ids``, in that order.

        Raises:
            UnknownId: an id not in the table.
        """
        want = [int(i) for i in ids]
        got: dict[int, tuple] = {}
        for lo in range(0, len(want), _CHUNK):
            part = sorted(set(want[lo:lo + _CHUNK]))
            marks = ",".join("?" * len(part))
            for row in self.query(f"SELECT * FROM items WHERE id IN ({marks})", part):
                got[row[0]] = row
        missing = [i for i in want if i not in got]
        if missing:
            raise UnknownId(f"no item with id {missing[0]} in the gallery (removed, or never added)")
        return [got[i] for i in want]

    def column(self, name: str, i: int) -> Any:
        """One column of one id (``name`` is ``path`` or ``label``)."""
        got = self.query(f"SELECT {name} FROM items WHERE id = ?", [int(i)])
        if not got:
            raise UnknownId(f"no item with id {int(i)} in the gallery (removed, or never added)")
        return got[0][0]

    def iter_column(self, name: str, batch: int = 10_000) -> Iterator[Any]:
        """One column of every item in id order, fetched ``batch`` rows at a time."""
        last = -1
        while True:
            got = self.query(f"SELECT id, {name} FROM items WHERE id > ? ORDER BY id LIMIT ?", [last, batch])
            yield from (v for _, v in got)
            if len(got) < batch:
                return
            last = got[-1][0]

    def ids(self, where_sql: str | None = None, params: Sequence[Any] = ()) -> np.ndarray:
        """The ids (ascending, int64) of every item, or of those a WHERE body keeps."""
        sql = "SELECT id FROM items" + (f" WHERE {where_sql}" if where_sql else "") + " ORDER BY id"
        got = self.query(sql, params)
        return np.fromiter((r[0] for r in got), np.int64, count=len(got))

    def ids_of(self, ids: Sequence[int]) -> np.ndarray:
        """Those of ``ids`` in the table (ascending)."""
        uniq = sorted({int(i) for i in ids})
        out: list[int] = []
        for lo in range(0, len(uniq), _CHUNK):
            part = uniq[lo:lo + _CHUNK]
            out += [r[0] for r in self.query(f"SELECT id FROM items WHERE id IN ({','.join('?' * len(part))})", part)]
        return np.asarray(sorted(out), np.int64)

    def ids_of_paths(self, paths: Sequence[str]) -> dict[str, int]:
        """``{path: id}`` for those of ``paths`` in the gallery."""
        out: dict[str, int] = {}
        uniq = sorted(set(map(str, paths)))
        for lo in range(0, len(uniq), _CHUNK):
            part = uniq[lo:lo + _CHUNK]
            marks = ",".join("?" * len(part))
            out.update({p: i for i, p in self.query(f"SELECT id, path FROM items WHERE path IN ({marks})", part)})
        return out

    def count(self) -> int:
        """Rows in the table."""
        return int(self.query("SELECT count(*) FROM items")[0][0])

    def close(self) -> None:
        """Close the connection (the table is unusable afterwards)."""
        with self._lock:
            self._con.close()

    def write_copy(self, path: Path) -> None:
        """Write this table (an in-memory one: format 1/2) to the file ``path``."""
        with self._lock:
            dst = sqlite3.connect(path)
            try:
                self._con.backup(dst)
            finally:
                dst.close()
