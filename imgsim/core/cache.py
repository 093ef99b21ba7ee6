"""A process-wide cache held to a byte budget: what one visitor sends cannot grow the server without bound."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class ByteBudgetCache:
    """Least recently used values whose sizes together stay within `max_bytes`, each kept at most `ttl` seconds.

    Safe to share between threads. `size(value)` gives a value's bytes (default: its `nbytes`); a value
    larger than the whole budget is returned but not kept. A `make` that raises caches nothing.
    """

    def __init__(self, max_bytes: int, ttl: float, size=lambda value: value.nbytes, clock=time.monotonic):
        self.max_bytes, self.ttl, self.size, self.clock = int(max_bytes), float(ttl), size, clock
        self._lock = threading.Lock()
        self._items: OrderedDict = OrderedDict()  # key -> (value, bytes, expires), oldest use first
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, make):
        """The value cached under `key`, or `make()`'s, cached (made outside the lock: a slow make blocks no one)."""
        with self._lock:
            self._expire()
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()
        nbytes = int(self.size(value))
        with self._lock:
            if key in self._items:  # made twice at once: keep one
                self.nbytes -= self._items.pop(key)[1]
            if nbytes <= self.max_bytes:
                self._items[key] = (value, nbytes, self.clock() + self.ttl)
                self.nbytes += nbytes
                while self.nbytes > self.max_bytes:
                    self.nbytes -= self._items.popitem(last=False)[1][1]
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, _, expires) in self._items.items() if expires <= now]:
            self.nbytes -= self._items.pop(key)[1]
