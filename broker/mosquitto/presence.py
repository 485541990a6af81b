"""Who is connected, from the supervised Mosquitto's own log: its connection notices, parsed as untrusted
text, counted per user and written to the store in batches.

Mosquitto 2.0.11 tells a plugin of no connect (``MOSQ_EVT_BASIC_AUTH`` of a known user is answered by dynamic
security, before our plugin), but with ``connection_messages true`` it logs (src/handle_connect.c, loop.c)::

    New client connected from 10.0.0.7:50012 as CLIENT_ID (p4, c1, k60, u'USERNAME').
    Client CLIENT_ID closed its connection.            (and the other endings of do_disconnect)

What a device controls there is its client id (and, once granted, nothing else). What we rely on, verified on
2.0.11 (tests/broker/test_presence.py):

* Client ids and usernames with control characters (``\\n``, ``\\r``, U+0085) are refused at CONNECT
  (``mosquitto_validate_utf8``), so a device cannot start a line of its own; U+2028 is accepted and stays
  inside the line (we split on ``\\n`` only).
* Mosquitto formats a line into ``char[1000]``: a longer one is cut, which could leave a client id's own
  ``(p4, c1, k60, u'victim').`` at its end. Lines of 999 bytes or more are not trusted.
* The username is the line's last field: we take the rightmost ``(pN, cN, kN, u'`` and refuse a line holding
  two (a client id imitating the suffix), so a device can hide at most its own session.
* A refused login is logged ``Client <unknown> disconnected, not authorised.``: Mosquitto forgets the client
  id before the disconnect, so trying a victim's client id with a wrong password does not end its session.
  A session taken over by the same client id is not logged as a disconnect; its ``New client connected``
  replaces it, which is why sessions are kept by client id.
* Only names that are registry users are recorded (the store drops the others).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

LINE_LIMIT = 999  # Mosquitto 2.0.11's log_line is char[1000]: a line this long may have been cut
MAX_SESSIONS = 500_000  # client ids remembered at once (a lost disconnect line must not grow this forever)
FLUSH_EVERY = 1.0  # seconds: every change of this long goes to the store in one transaction

_CONNECTED = re.compile(r"New client connected from \S+ as (?P<cid>.+) \(p\d+, c[01], k\d+, u'(?P<user>.*)'\)\.")
_SUFFIX = re.compile(r" \(p\d+, c[01], k\d+, u'")
_ENDED = re.compile(
    r"Client (?P<cid>.+) (?:closed its connection|disconnected(?:, not authorised| due to [A-Za-z ]+|: [^:]*)?"
    r"|has exceeded timeout, disconnecting|been disconnected by administrative action)\.")
_BAD_SOCKET = re.compile(r"Bad socket read/write on client (?P<cid>.+): [^:]*")
_NOTICES = (b"New connection from ", b"New client connected from ", b"New bridge connected from ", b"Client ",
            b"Bad socket read/write on client ")


def parse(line: bytes) -> tuple[str, str, str | None] | None:
    """``("connected", client id, username)``, ``("ended", client id, None)``, ``("other", "", None)`` for a
    connection notice we do not trust or need, or None for any other line (it is logged as usual)."""
    if not line.startswith(_NOTICES):
        return None
    if len(line) >= LINE_LIMIT:
        return ("other", "", None)  # maybe cut by Mosquitto: its end may be the client id's
    text = line.decode("utf-8", "replace")
    match = _CONNECTED.fullmatch(text)
    if match:
        if len(_SUFFIX.findall(text)) != 1:
            return ("other", "", None)  # a client id imitating the suffix: whose session it is is not sure
        return ("connected", match["cid"], match["user"])
    match = _ENDED.fullmatch(text) or _BAD_SOCKET.fullmatch(text)
    if match:
        return ("ended", match["cid"], None)
    return ("other", "", None)  # "already connected, closing old connection.", bridges, anonymous clients


class PresenceTracker:
    """Fed Mosquitto's output lines (``feed``, on the event loop); ``run()`` writes what changed every
    ``FLUSH_EVERY`` s through ``write(changes, reset_at)`` (``Registry.record_presence``, off the loop; False:
    not now, the database is away), so a
    reconnect storm of 10,000 devices is a few transactions, and Mosquitto never waits for us."""

    def __init__(self, clock: Callable[[], float], write: Callable[..., Awaitable[bool]],
                 log: Callable[[str], None], interval: float = FLUSH_EVERY) -> None:
        self.clock = clock
        self.write = write
        self.log = log
        self.interval = interval
        self.sessions: dict[str, str] = {}  # client id -> username, as Mosquitto keeps them (one per id)
        self.count: dict[str, int] = {}  # username -> live sessions
        self._changed: dict[str, list] = {}  # username -> [sessions, last connected, last disconnected]
        self._reset_at: float | None = None
        self._full_said = False
        self._failed: str | None = None

    def feed(self, line: bytes) -> bool:
        """One line of Mosquitto's output; True when it was a connection notice (not worth a log line each)."""
        notice = parse(line)
        if notice is None:
            return False
        kind, client_id, username = notice
        if kind == "connected":
            self._ended(client_id)  # the same client id taken over: Mosquitto logs no end for the old one
            if len(self.sessions) >= MAX_SESSIONS:
                if not self._full_said:
                    self._full_said = True
                    self.log(f"presence: more than {MAX_SESSIONS} sessions; new ones are not counted")
                return True
            self.sessions[client_id] = username
            self._count(username, +1, connected=self.clock())
        elif kind == "ended":
            self._ended(client_id)
        return True

    def _ended(self, client_id: str) -> None:
        username = self.sessions.pop(client_id, None)
        if username is not None:
            self._count(username, -1, disconnected=self.clock())

    def _count(self, username: str, step: int, connected: float | None = None,
               disconnected: float | None = None) -> None:
        n = self.count.get(username, 0) + step
        if n > 0:
            self.count[username] = n
        else:
            self.count.pop(username, None)
        change = self._changed.setdefault(username, [0, None, None])
        change[0] = max(0, n)
        if connected is not None:
            change[1] = connected
        if disconnected is not None:
            change[2] = disconnected

    def restarted(self) -> None:
        """Mosquitto (re)starts: every session it had is gone."""
        self.sessions.clear()
        self.count.clear()
        self._changed.clear()
        self._reset_at = self.clock()
        self._full_said = False

    def take(self) -> tuple[dict[str, tuple], float | None] | None:
        """What changed since the last take, or None."""
        if not self._changed and self._reset_at is None:
            return None
        changes = {name: tuple(change) for name, change in self._changed.items()}
        reset_at, self._reset_at = self._reset_at, None
        self._changed = {}
        return changes, reset_at

    async def flush(self) -> None:
        batch = self.take()
        if batch is None:
            return
        try:
            written = await self.write(*batch)
        except Exception as exc:  # the database failed: keep the batch for the next round, say so once
            if str(exc) != self._failed:
                self.log(f"presence: not recorded ({exc}); trying again every {self.interval:g} s")
            self._failed = str(exc)
            written = False
        else:
            self._failed = None
        if not written:
            changes, reset_at = batch
            if self._reset_at is not None:
                return  # Mosquitto restarted since: those sessions are gone anyway
            for name, change in changes.items():
                self._changed.setdefault(name, list(change))  # newer changes win
            self._reset_at = reset_at

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
