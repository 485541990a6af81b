"""What the running server notes for other processes (the last change it applied and that it is alive, a problem
that keeps it from its job, its flood limits), read your writes on those notes, and the server's periodic
housekeeping. A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import time
from collections.abc import Callable

from .base import SERVER_SEEN, Base, Part
from .database import guarded
from .window import PER_ADDRESS_LIMIT, SERVER_PROBLEM, SERVER_PROBLEM_AT, Window

APPLIED = "applied_event_id"  # meta key: the last event the running server applied to the broker


class ServerNotes(Part):
    def __init__(self, base: Base, window: Window) -> None:
        super().__init__(base)
        self.window = window

    @guarded
    def note_applied(self, event_id: int) -> None:
        """The server has applied every change up to ``event_id`` to the broker (and is alive now)."""
        with self.base.write():
            self.base.meta(APPLIED, str(event_id))
            self.base.meta(SERVER_SEEN, repr(self.base.clock()))

    @guarded
    def note_alive(self) -> None:
        """The server is running, whatever it waits for meanwhile (a plugin slow to take a batch): a command
        waiting in another process then hears "timeout" (not applied yet), not "no_server"."""
        with self.base.write():
            self.base.meta(SERVER_SEEN, repr(self.base.clock()))

    @guarded
    def housekeeping(self) -> None:
        """What the running server does every 2 s besides noting that it is alive: a window that ran out is
        closed in the audit log (Window.close_expired), and a WAL scrub that a reader kept busy is done."""
        self.window.close_expired(self.base.clock())
        self.base.scrub_secrets(cleared=False)

    @guarded
    def note_problem(self, problem: str | None) -> None:
        """What keeps the running server from doing its job (Mosquitto refuses its account, or stopped taking
        changes), for `status` and the dashboards in other processes; None when it is well again. Noted again
        every few seconds while it lasts: a server that died with a problem noted is not shown as having it."""
        with self.base.write():
            if problem:
                self.base.meta(SERVER_PROBLEM, problem)
                self.base.meta(SERVER_PROBLEM_AT, repr(self.base.clock()))
            else:
                self.m.Meta.delete().where(self.m.Meta.key.in_((SERVER_PROBLEM, SERVER_PROBLEM_AT))).execute()

    @guarded
    def note_limits(self) -> None:
        """The serving process's flood limits, for `status` in other processes to show."""
        with self.base.write():
            limit = str(self.base.config.per_peer_per_minute)
            if self.base.meta_values(PER_ADDRESS_LIMIT).get(PER_ADDRESS_LIMIT, limit) != limit:
                # `status` says "N throttled (limit L)": refusals counted under another limit are not L's.
                self.m.Throttle.delete().execute()
            self.base.meta(PER_ADDRESS_LIMIT, limit)

    @guarded
    def applied(self) -> tuple[int, float | None]:
        """(the last event id the running server applied, when it last said so) from the database."""
        rows = self.base.meta_values(APPLIED, SERVER_SEEN)
        seen = rows.get(SERVER_SEEN)
        return int(rows.get(APPLIED, 0)), float(seen) if seen else None

    def wait_applied(self, event_id: int, timeout: float = 1.0,
                     sleep: Callable[[float], object] = time.sleep) -> str:
        """Read your writes: wait until a running server has applied ``event_id`` (for permissions and
        revocation: Mosquitto enforces it). "applied", "no_server" (none has been alive lately; it applies
        the change when it starts) or "timeout"."""
        deadline = time.monotonic() + timeout
        while True:
            done, seen = self.applied()
            if done >= event_id:
                return "applied"
            if not self.base.server_alive(seen):
                return "no_server"
            if time.monotonic() >= deadline:
                return "timeout"
            sleep(0.02)
