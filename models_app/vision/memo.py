"""A small thread-safe LRU for deterministic functions of images, keyed by the image's bytes.

Face detection and recognition are the slow steps, and the same images come back: an
observer judges one source photo against many outputs; the loop confirms a candidate on the
photo that is then saved losslessly and scored again. Equal bytes give equal results, so a
hit changes nothing but the time. Pure: numpy only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

V = TypeVar("V")


def image_key(arr: np.ndarray, *extra: Hashable) -> tuple:
    """A key for ``arr``: its shape, dtype and a 128-bit digest of its bytes, then ``extra``."""
    a = np.ascontiguousarray(arr)
    return (a.shape, a.dtype.str, hashlib.blake2b(a.data, digest_size=16).digest(), *extra)


class ImageLru:
    """``get(key, make)``: the cached value, or ``make()`` stored under ``key``; at most
    ``size`` entries, least recently used dropped first. ``hits``/``misses`` count lookups."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = make()  # outside the lock: another thread may compute it too, harmlessly
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0
