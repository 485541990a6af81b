"""Throttles: how often something may happen per key (an address, a name) in a sliding window, in bounded memory.

``SlidingWindow`` is the mechanism: at most ``limit`` events per key within ``window`` seconds; a key remembers
only its last ``limit`` event times, and at most ``max_keys`` keys are kept (the least recently hit is forgotten
first; a key whose events have all left the window is older than any live one), so a flood of distinct keys costs
a fixed amount of memory.

``WrongPasswords`` is the rule for password checks that a device can ask for (the HTTP API checks the password
of an existing user, or of a pending request's rival): at most ``per_name`` wrong passwords for one name and
``per_peer`` from one address in ``window`` seconds; then every check for that name or from that address is
refused until the window has passed. A device may still learn that a name is taken; it cannot guess its
password at speed. The clock is injectable (tests move it by hand).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from .validation import normalise_username

WRONG_PASSWORDS_PER_NAME = 5
WRONG_PASSWORDS_PER_PEER = 20
WRONG_PASSWORD_WINDOW = 60.0
MAX_KEYS = 10_000


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds, remembering at most ``max_keys`` keys."""

    def __init__(self, limit: int, window: float, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be at least 1 and window positive")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[Hashable, deque[float]] = OrderedDict()  # least recently hit first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def wait(self, key: Hashable) -> float:
        """Seconds until ``key`` may have another event (0.0: now)."""
        with self._lock:
            return self._wait(key, self.clock())

    def hit(self, key: Hashable) -> float | None:
        """Count an event for ``key`` if the limit allows it: its time stamp (for :meth:`undo`), or None (refused,
        nothing counted; :meth:`wait` says for how long)."""
        with self._lock:
            now = self.clock()
            if self._wait(key, now) > 0:
                return None
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque(maxlen=self.limit)
            events.append(now)
            self._events.move_to_end(key)
            if len(self._events) > self.max_keys:
                self._shrink()
            return now

    def undo(self, key: Hashable, stamp: float) -> None:
        """Take back an event counted by :meth:`hit` (it turned out not to count)."""
        with self._lock:
            events = self._events.get(key)
            if events is None:
                return
            try:
                events.remove(stamp)
            except ValueError:
                return
            if not events:
                del self._events[key]

    def _wait(self, key: Hashable, now: float) -> float:
        events = self._events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return 0.0
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - now

    def _shrink(self) -> None:
        # Keys are kept in the order of their last event: the first one is the least recently hit, and every
        # key whose events have all left the window comes before any live one. Forget it (a flood of distinct
        # keys must not grow memory).
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)


def peer_key(peer: str | None) -> str:
    """The unit an address is throttled by: the IPv4 address, or the /64 network of an IPv6 address (one
    host usually holds a whole /64)."""
    if not peer:
        return "?"
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


class Check:
    """A password check counted before it runs (so parallel guesses cannot all pass the limit at once)."""

    def __init__(self, owner: WrongPasswords, name: str, peer: str, stamps: tuple[float, float]) -> None:
        self._owner, self._name, self._peer, self._stamps = owner, name, peer, stamps

    def right(self) -> None:
        """The password was right: this check is not a wrong guess."""
        self._owner.by_name.undo(self._name, self._stamps[0])
        self._owner.by_peer.undo(self._peer, self._stamps[1])


class WrongPasswords:
    """At most ``per_name`` wrong passwords per name and ``per_peer`` per address in ``window`` seconds."""

    def __init__(self, per_name: int = WRONG_PASSWORDS_PER_NAME, per_peer: int = WRONG_PASSWORDS_PER_PEER,
                 window: float = WRONG_PASSWORD_WINDOW, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.by_name = SlidingWindow(per_name, window, max_keys=max_keys, clock=clock)
        self.by_peer = SlidingWindow(per_peer, window, max_keys=max_keys, clock=clock)

    def wait(self, name: str, peer: str | None) -> tuple[float, str | None]:
        """(seconds to wait, why) before a password for ``name`` may be checked from ``peer``; (0.0, None): now."""
        by_name = self.by_name.wait(normalise_username(name))
        by_peer = self.by_peer.wait(peer_key(peer))
        if by_name <= 0 and by_peer <= 0:
            return 0.0, None
        if by_name >= by_peer:
            return by_name, f"{self.by_name.limit} wrong passwords for this name in {self.by_name.window:g} s"
        return by_peer, f"{self.by_peer.limit} wrong passwords from this address in {self.by_peer.window:g} s"

    def check(self, name: str, peer: str | None) -> Check | None:
        """Count a password check as a wrong guess before it runs (:meth:`Check.right` takes it back); None
        when the name or the address has used up its guesses (:meth:`wait` says for how long)."""
        name, peer = normalise_username(name), peer_key(peer)
        name_stamp = self.by_name.hit(name)
        if name_stamp is None:
            return None
        peer_stamp = self.by_peer.hit(peer)
        if peer_stamp is None:
            self.by_name.undo(name, name_stamp)
            return None
        return Check(self, name, peer, (name_stamp, peer_stamp))

    def wrong(self, name: str, peer: str | None) -> None:
        """Count a wrong password found after the fact (e.g. a rival of a pending request)."""
        self.by_name.hit(normalise_username(name))
        self.by_peer.hit(peer_key(peer))

    def __len__(self) -> int:
        return len(self.by_name) + len(self.by_peer)
