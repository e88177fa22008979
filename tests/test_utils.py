"""dva.utils helpers: prefetch_map keeps order, propagates errors, overlaps work."""
from __future__ import annotations

import threading
import time

import pytest

from dva.utils import prefetch_map


def test_prefetch_map_keeps_order_and_runs_one_ahead():
    seen: list[int] = []

    def fn(i: int) -> int:
        seen.append(i)
        return i * i

    it = prefetch_map(fn, list(range(6)))
    assert next(it) == 0
    time.sleep(0.05)
    assert seen[:2] == [0, 1]  # the next item was prepared while the caller held the first
    assert list(it) == [1, 4, 9, 16, 25]
    assert list(prefetch_map(fn, [])) == []


def test_prefetch_map_raises_in_order_and_uses_one_other_thread():
    threads = set()

    def fn(i: int) -> int:
        threads.add(threading.get_ident())
        if i == 2:
            raise ValueError("bad item 2")
        return i

    it = prefetch_map(fn, [0, 1, 2, 3])
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(it)
    assert threading.get_ident() not in threads and len(threads) == 1
