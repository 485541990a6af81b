"""Who is online: what the broker said of each user's connections, as the running server reports it in
batches. Facts, not rules, and not audited (a reconnect storm must not become thousands of events). A part of
:class:`store.registry.Registry`, the one entry point.

Only users are recorded: a name the broker reported that is not a user (the service account, anything a
parser got wrong) is dropped here, whoever sent it.
"""

from __future__ import annotations

from .base import SERVER_SEEN, Part
from .database import guarded, run_sql
from .views import PresenceSnapshot

SOURCE = "presence_source"  # meta: how the running server learns of connections ("" when it cannot)
SINCE = "presence_since"  # meta: when a server of this registry first watched them

_UPSERT = (
    'INSERT INTO "presence" ("name", "sessions", "last_connected", "last_disconnected") '
    'SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM "users" WHERE "name" = ?) '
    'ON CONFLICT ("name") DO UPDATE SET "sessions" = excluded."sessions", '
    '"last_connected" = COALESCE(excluded."last_connected", "presence"."last_connected"), '
    '"last_disconnected" = COALESCE(excluded."last_disconnected", "presence"."last_disconnected")'
)


class Presence(Part):
    @guarded
    def watch_presence(self, source: str | None) -> None:
        """A server starts: the sessions it did not see end are gone (its broker is new, or not watched), so
        nobody is online. ``source`` says how it learns of connections from now on; None: it cannot (the
        site's own broker), and presence reads as unknown."""
        with self.base.write():
            run_sql(self.db, 'UPDATE "presence" SET "sessions" = 0 WHERE "sessions" <> 0')
            self.base.meta(SOURCE, source or "")
            if source:
                M = self.m.Meta
                M.insert(key=SINCE, value=repr(self.base.clock())).on_conflict_ignore().execute()

    @guarded
    def record_presence(self, changes: dict[str, tuple[int, float | None, float | None]],
                        reset_at: float | None = None) -> None:
        """One batch from the server, in one transaction: ``reset_at`` first (the broker restarted then: every
        session it had ended), then ``changes``: name -> (live sessions, last connected, last disconnected),
        a time None leaving the stored one."""
        with self.base.write():
            if reset_at is not None:
                run_sql(self.db, 'UPDATE "presence" SET "sessions" = 0, "last_disconnected" = ? '
                                 'WHERE "sessions" <> 0', (reset_at,))
            for name, (sessions, connected, disconnected) in changes.items():
                run_sql(self.db, _UPSERT, (name, sessions, connected, disconnected, name))

    @guarded
    def presence(self) -> PresenceSnapshot:
        meta = self.base.meta_values(SOURCE, SINCE, SERVER_SEEN)
        alive = self.base.server_alive(float(meta[SERVER_SEEN]) if meta.get(SERVER_SEEN) else None)
        source = meta.get(SOURCE)
        if not alive:
            why = "no server is running on this registry"
        elif not source:
            why = "the server is attached to the site's own broker, whose connections it does not see"
        else:
            why = None
        rows = {name: (sessions, connected, disconnected) for name, sessions, connected, disconnected in run_sql(
            self.db, 'SELECT "name", "sessions", "last_connected", "last_disconnected" FROM "presence"')}
        return PresenceSnapshot(watched=why is None, why_not=why,
                                since=float(meta[SINCE]) if meta.get(SINCE) else None, rows=rows)
