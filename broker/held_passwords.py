"""Passwords the service holds in memory between a device's attempt and the operator's grant: the one moment
the broker account can be created with exactly the password the device sent. Never written anywhere.

Bounded in count (oldest dropped first) and in time: a request the operator has not decided within
``ttl`` seconds is provisioned at the device's next login instead (the registry plugin forwards it)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class HeldPasswords:
    def __init__(self, limit: int = 10_000, ttl: float = 24 * 3600, clock=time.monotonic) -> None:
        self.limit = limit
        self.ttl = ttl
        self.clock = clock
        self._items: OrderedDict[int, tuple[float, str]] = OrderedDict()  # request id -> (held since, password)
        self._lock = threading.Lock()  # the plugin socket and the HTTP API hold from worker threads

    def hold(self, request_id: int, password: str) -> None:
        with self._lock:
            self._items.pop(request_id, None)
            self._items[request_id] = (self.clock(), password)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def take(self, request_id: int) -> str | None:
        """The password of this request, forgotten as it is handed out."""
        with self._lock:
            item = self._items.pop(request_id, None)
            self._drop_stale()
        if item is None or self.clock() - item[0] > self.ttl:
            return None
        return item[1]

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._items.pop(request_id, None)

    def _drop_stale(self) -> None:
        cutoff = self.clock() - self.ttl
        while self._items:
            key, (since, _) = next(iter(self._items.items()))
            if since >= cutoff:
                return
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:  # never print a password by accident
        return f"HeldPasswords({len(self._items)} held)"
