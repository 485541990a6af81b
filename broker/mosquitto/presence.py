"""Who is connected, from the registry plugin's own reports: a login is a successful password check of one of
its accounts, a disconnection is Mosquitto's ``MOSQ_EVT_DISCONNECT`` of such a client (plugin_protocol.md,
"Presence"). Sessions are counted per user and written to the store in batches.

Sessions are kept by client id, as Mosquitto keeps them: a device that takes its own session over (the same client id)
is reported as a new login and no end of the old one. Only names that are registry users are recorded (the store drops
the others).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_SESSIONS = 500_000  # client ids remembered at once (a lost disconnection must not grow this forever)
FLUSH_EVERY = 1.0  # seconds: every change of this long goes to the store in one transaction


class PresenceTracker:
    """Fed the plugin's reports (``change``, on the event loop); ``run()`` writes what changed every
    ``FLUSH_EVERY`` s through ``write(changes, reset_at)`` (``Registry.record_presence``, off the loop; False:
    not now, the database is away), so a
    reconnect storm of 10,000 devices is a few transactions, and Mosquitto never waits for us."""

    def __init__(self, clock: Callable[[], float], write: Callable[..., Awaitable[bool]],
                 interval: float = FLUSH_EVERY) -> None:
        self.clock = clock
        self.write = write
        self.interval = interval
        self.sessions: dict[str, str] = {}  # client id -> username, as Mosquitto keeps them (one per id)
        self.count: dict[str, int] = {}  # username -> live sessions
        self._changed: dict[str, list] = {}  # username -> [sessions, last connected, last disconnected]
        self._reset_at: float | None = None
        self._full_said = False
        self._failed: str | None = None

    def change(self, username: str, client_id: str, logged_in: bool) -> None:
        """One login (True) or disconnection (False) the plugin reported. Sessions are kept by client id, as
        Mosquitto keeps them: a login with a client id already in use took that session over (the plugin
        reports no end for it)."""
        self._ended(client_id)
        if not logged_in:
            return
        if len(self.sessions) >= MAX_SESSIONS:
            if not self._full_said:
                self._full_said = True
                log.warning(f"presence: more than {MAX_SESSIONS} sessions; new ones are not counted")
            return
        self.sessions[client_id] = username
        self._count(username, +1, connected=self.clock())

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
                log.warning(f"presence: not recorded ({exc}); trying again every {self.interval:g} s")
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
