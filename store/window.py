"""The unlock window (while it is open, unknown devices are recorded as requests) and the status that heads every
view of the registry. A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import peewee as pw

from .base import Base, Part
from .database import guarded, run_sql
from .durations import RECENT, UNLOCK_LONGEST, describe
from .errors import RefusedError
from .expiry import Expiry
from .knocks import OVERFLOW
from .views import Status

WINDOW_OPENED = "window_opened_at"  # meta key: when the registry last went from locked to unlocked
SERVER_PROBLEM = "server_problem"  # meta key: why the running server cannot do its job, while it says so
SERVER_PROBLEM_AT = "server_problem_at"  # meta key: when it last said so (shown while the server is alive)
PER_ADDRESS_LIMIT = "per_address_limit"  # meta key: the running server's flood limit (ServerNotes.note_limits)


class Window(Part):
    def __init__(self, base: Base, expiry: Expiry) -> None:
        super().__init__(base)
        self.expiry = expiry

    def unlocked(self, now: float) -> bool:
        (until,) = run_sql(self.db, 'SELECT "unlocked_until" FROM "window" WHERE "id" = 1').fetchone()
        return until is not None and until > now

    def opened(self) -> float:
        """When the current (or, while locked, the last) unlock window opened; 0.0 before any was noted."""
        found = run_sql(self.db, 'SELECT "value" FROM "meta" WHERE "key" = ?', (WINDOW_OPENED,)).fetchone()
        return float(found[0]) if found else 0.0

    @guarded
    def unlock(self, seconds: float | None = None, actor: str = "cli") -> Status:
        seconds = self.base.config.default_unlock if seconds is None else seconds
        if not 0 < seconds <= UNLOCK_LONGEST:
            raise RefusedError(f"the unlock duration must be between 1 second and {describe(UNLOCK_LONGEST)}")
        now = self.base.clock()
        with self.base.write():
            if not self.unlocked(now):  # a new window (not an extension): approval rules count afresh
                self.base.meta(WINDOW_OPENED, repr(now))
            self.m.Window.update(unlocked_until=now + seconds, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self.base.event(actor, "registry.unlocked", actor, seconds=seconds, until=now + seconds)
        return self.status()

    def close_expired(self, now: float) -> None:
        """A window that ran out is closed in the audit log as ``registry.locked`` by "registry", at the moment
        it ran out (written by the running server's housekeeping within 2 s, else by the next status): an
        operator reading the log sees when unknown devices stopped being recorded, not only when it was opened."""
        (until,) = run_sql(self.db, 'SELECT "unlocked_until" FROM "window" WHERE "id" = 1').fetchone()
        if until is None or until > now:
            return  # the usual case, read only: no write lock
        with self.base.write():
            if run_sql(self.db, 'UPDATE "window" SET "unlocked_until" = NULL WHERE "id" = 1 AND "unlocked_until" = ?',
                       (until,)).rowcount:  # once, though two processes may see it run out together
                self.base.event("registry", "registry.locked", "registry", at=until, expired=True)

    @guarded
    def lock(self, actor: str = "cli") -> Status:
        with self.base.write():
            self.m.Window.update(unlocked_until=None, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self.base.event(actor, "registry.locked", actor)
        return self.status()

    @guarded
    def status(self, expire: bool = True) -> Status:
        """``expire=False`` only reads (a dashboard's periodic refresh): stale requests are expired by the
        next call that may write."""
        now = self.base.clock()
        if expire:
            self.expiry.expire_stale()
            self.close_expired(now)
        window = self.m.Window.get_by_id(1)
        unlocked = window.unlocked_until is not None and window.unlocked_until > now
        K, T = self.m.Knock, self.m.Throttle
        recent = K.select(pw.fn.COUNT(K.key), pw.fn.COALESCE(pw.fn.SUM(K.count), 0)).where(
            K.last_seen > now - RECENT).tuples().get()
        capped = K.select().where((K.key == OVERFLOW) & (K.last_seen > now - RECENT)).exists()
        throttled = list(T.select(T.peer, T.count).where(T.last_seen > now - RECENT)
                         .order_by(T.count.desc()).limit(3).tuples())
        limit = self.m.Meta.get_or_none(self.m.Meta.key == PER_ADDRESS_LIMIT)  # the server's (note_limits)
        throttled_total = T.select(pw.fn.COALESCE(pw.fn.SUM(T.count), 0)).where(
            T.last_seen > now - RECENT).scalar()
        notes = self.base.meta_values(SERVER_PROBLEM, SERVER_PROBLEM_AT)
        alive = self.base.server_alive(float(notes[SERVER_PROBLEM_AT]) if notes.get(SERVER_PROBLEM_AT) else None)
        return Status(
            unlocked=unlocked,
            remaining=max(0.0, window.unlocked_until - now) if unlocked else 0.0,
            unlocked_until=window.unlocked_until if unlocked else None,
            unlocked_by=window.unlocked_by if unlocked else None,
            pending=self.m.Request.select().where(self.m.Request.status == "pending").count(),
            knocking=recent[0] - (1 if capped else 0),
            knocking_capped=capped,
            refused_recent=int(recent[1]),
            throttled=int(throttled_total),
            throttled_from=[(peer, count) for peer, count in throttled if peer != OVERFLOW],
            per_address_limit=int(limit.value) if limit else self.base.config.per_peer_per_minute,
            server_problem=notes.get(SERVER_PROBLEM) if alive else None,
        )
