"""A small thread-safe LRU cache, the one kind of cache the process-wide ``Runtime`` hands out.

``get_or_compute(key, compute)`` runs ``compute`` at most once per key at a time: a second thread
asking for the same key waits for the first one's value instead of computing it again (the scoring
pool asks for the same reference data or suite run from several workers at once).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Cache(Generic[K, V]):
    """Least-recently-used mapping of at most ``maxsize`` entries; every method is thread-safe."""

    def __init__(self, maxsize: int = 64):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[K, threading.Lock] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value of ``key``, computing (and caching) it once when missing. An exception
        from ``compute`` is raised to the caller and nothing is cached."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._data:  # another thread computed it while this one waited
                    self._data.move_to_end(key)
                    return self._data[key]
            try:
                value = compute()
                self.put(key, value)
                return value
            finally:
                with self._lock:
                    if self._computing.get(key) is gate:
                        del self._computing[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data
