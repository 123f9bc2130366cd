"""The web process's one short-lived cache: values kept for a few seconds, bounded, thread-safe.

Two hot paths read the same database rows again and again: a script polling the API (its token's
row, on every request) and a viewer scrolling through a series (the row of each slice's volume).
Both keep what they read here for ``ttl`` seconds, so a row that changes or disappears is
noticed within that time; code that changes a row in this process can :meth:`TTLCache.clear`
at once. The cache is per process: other web workers notice within ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: the most values one cache holds; past it the cache starts again empty (a rare, cheap reset,
#: instead of tracking which value is the oldest)
MAX_ITEMS = 10_000


class TTLCache(Generic[K, V]):
    """Values by key, each for ``ttl`` seconds after it was put (``ttl`` <= 0: keep nothing)."""

    def __init__(
        self,
        ttl: float,
        max_items: int = MAX_ITEMS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_items = max_items
        #: seconds on a monotonic clock (a test moves its own instead of sleeping)
        self.clock = clock
        self._items: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value put under ``key`` less than ``ttl`` ago, else ``None``."""
        with self._lock:
            item = self._items.get(key)
        if item is None or item[0] < self.clock():
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._items) >= self.max_items:
                self._items.clear()
            self._items[key] = (self.clock() + self.ttl, value)

    def get_or_read(self, key: K, read: Callable[[], V]) -> V:
        """The cached value, or ``read()``'s (kept for next time). Two threads that miss at once
        both read: a second read of a row is cheaper than making every reader wait."""
        value = self.get(key)
        if value is None:
            value = read()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
