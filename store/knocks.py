"""Counts of recent refusals, for `status`: knocks (attempts of names that are not users while the registry is
locked, kept only as a keyed count: no name is stored) and throttled addresses (beyond the per-address limit of
new requests). Both tables stay bounded under floods. A part of :class:`store.registry.Registry`, the one entry
point."""

from __future__ import annotations

from typing import Any

from .base import Base, Part
from .database import guarded, run_sql
from .durations import RECENT
from .validation import nfc_problem, normalise_username, text_problem

PRUNE_EVERY = 10.0
KNOCK_ROWS = 20_000  # distinct knocking names kept; beyond, they are counted together (see Status)
OVERFLOW = "*"  # the key (or peer) of everything counted beyond the cap


class Knocks(Part):
    def __init__(self, base: Base) -> None:
        super().__init__(base)
        self._pruned_at: dict[Any, float] = {}  # table of recent counts -> when it was last pruned
        self._recent_rows: dict[Any, int] = {}  # table of recent counts -> about how many rows it holds

    def knock(self, username: str, now: float, count: int = 1) -> None:
        key = self.base.verifier(username, "")[:32]
        self._count_recent(self.m.Knock, self.m.Knock.key, key, now, count)

    def throttled(self, peer: str, now: float) -> None:
        self._count_recent(self.m.Throttle, self.m.Throttle.peer, peer, now)

    @guarded
    def record_knocks(self, counted: list[tuple[str, int]], total: int | None = None) -> None:
        """Knocks the broker counted while locked (names with their attempts; ``total`` may count more
        attempts than the names listed: those share the overflow row), in one transaction."""
        now = self.base.clock()
        listed = 0
        with self.base.write():
            for username, count in counted:
                if count > 0 and not text_problem(username, "username") and not nfc_problem(username):
                    self.knock(normalise_username(username), now, count)
                    listed += count
            if total is not None and total > listed:
                self._count_recent(self.m.Knock, self.m.Knock.key, OVERFLOW, now, total - listed)

    def _count_recent(self, table: Any, key_field: Any, key: str, now: float, count: int = 1) -> None:
        """Count one more for ``key`` in a table of recent counts, which stays bounded under floods of
        distinct names or addresses: rows older than five minutes are dropped (every 10 s), and beyond
        KNOCK_ROWS distinct keys the rest share one row."""
        if now - self._pruned_at.get(table, 0.0) >= PRUNE_EVERY:
            self._pruned_at[table] = now
            table.delete().where(table.last_seen < now - RECENT).execute()
            self._recent_rows[table] = table.select().count()
        name, column = table._meta.table_name, key_field.column_name
        if run_sql(self.db, f'SELECT 1 FROM "{name}" WHERE "{column}" = ?', (key,)).fetchone() is None:
            if self._recent_rows.get(table, 0) >= KNOCK_ROWS:
                key = OVERFLOW
            else:
                self._recent_rows[table] = self._recent_rows.get(table, 0) + 1
        run_sql(self.db, f'INSERT INTO "{name}" ("{column}", "last_seen", "count") VALUES (?, ?, ?) ON CONFLICT '
                         f'("{column}") DO UPDATE SET "last_seen" = ?, "count" = "{name}"."count" + ?',
                (key, now, count, now, count))
