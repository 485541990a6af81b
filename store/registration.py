"""The registration rules: what happens to an attempt of a name that is not a user (recorded, counted as a
knock while locked, matched to an earlier request, refused by the flood limits), and expiry. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import json

from . import crypto
from types import SimpleNamespace

from .database import guarded, run_sql, write_transaction
from .validation import nfc_problem, normalise_username, registration_problem, text_problem
from .views import AttemptResult, RequestView

RETRY_EVENT_EVERY = 10.0  # seconds between request.retried events for one request
EXPIRE_CHECK_EVERY = 60.0
RECENT = 300.0  # knocks and throttled attempts are counted over the last five minutes, then forgotten
PRUNE_EVERY = 10.0
KNOCK_ROWS = 20_000  # distinct knocking names kept; beyond, they are counted together (see Status)
OVERFLOW = "*"  # the key (or peer) of everything counted beyond the cap


REQUEST_COLUMNS = ("username", "verifier", "pairing_code", "client_id", "peer", "source", "requested_permissions",
                   "requested_roles", "context", "first_seen", "last_seen", "attempts", "status", "conflict", "rekey")
INSERT_REQUEST = (f'INSERT INTO "requests" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in REQUEST_COLUMNS)}) '
                  f'VALUES ({", ".join("?" * len(REQUEST_COLUMNS))}) RETURNING "id"')


class RegistrationRules:
    @guarded
    def record_attempt(self, username, password, client_id=None, peer=None, source="mqtt",
                       requested_permissions=None, context=None, requested_roles=None) -> AttemptResult:
        """Record a registration attempt of a name that is not a user (see :meth:`login` for any name). While
        unlocked, a new request that an approval rule matches is granted at once (outcome "granted")."""
        broken = registration_problem(username, password, requested_permissions, context, requested_roles)
        if broken:
            return AttemptResult("invalid", broken[1], field=broken[0])
        username = normalise_username(username)  # NFC already (nfc_problem); a str subclass becomes a str
        if source not in ("mqtt", "http"):
            raise ValueError(f"unknown source {source!r}")
        reserved = self._reserved(username)
        if reserved:
            return AttemptResult("reserved", reserved, field="username")
        if self._is_user(username):
            return AttemptResult("known_user", f"{username!r} is already a user")
        now = self.clock()
        if not self._unlocked(now):
            self._knock(username, now)
            return AttemptResult("locked", "the registry is locked")
        self._expire_if_due(now)

        code = crypto.pairing_code(username, password)
        print_ = self._verifier(username, password)
        outcome = self._match_existing(username, print_, client_id, peer, now)
        if outcome:
            return outcome
        refusal = self._flood_refusal(peer, now)
        if refusal:
            return AttemptResult("flood", refusal)

        with write_transaction(self.db):
            # Another process may have recorded the same credentials, or granted them, meanwhile.
            if self._is_user(username):
                return AttemptResult("known_user", f"{username!r} is already a user")
            outcome = self._match_existing(username, print_, client_id, peer, self.clock())
            if outcome:
                return outcome
            rivals = [r for (r,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                                     '"status" = \'pending\'', (username,)).fetchall()]
            row = SimpleNamespace(
                username=username, verifier=print_, pairing_code=code,
                client_id=client_id, peer=peer, source=source,
                requested_permissions=json.dumps(requested_permissions) if requested_permissions else None,
                requested_roles=json.dumps(list(dict.fromkeys(requested_roles))) if requested_roles else None,
                context=json.dumps(context) if context is not None else None,
                first_seen=now, last_seen=now, attempts=1, status="pending", conflict=bool(rivals), rekey=False,
                decided_by=None, decided_at=None)
            (row.id,) = run_sql(self.db, INSERT_REQUEST, tuple(getattr(row, c) for c in REQUEST_COLUMNS)).fetchone()
            if rivals:
                run_sql(self.db, f'UPDATE "requests" SET "conflict" = ? WHERE "id" IN ({", ".join("?" * len(rivals))})',
                        (True, *rivals))
                self._event("registry", "request.conflict", username, request_id=row.id,
                            rival_ids=rivals, source=source, peer=peer)
            else:
                self._event("registry", "request.created", username, request_id=row.id, source=source,
                            peer=peer, client_id=client_id)
            admitted = None if rivals else self._admit_by_rule(row)
        if admitted is not None:
            return admitted
        view = RequestView.of(row)
        if rivals:
            return AttemptResult("conflict", f"another request for {username!r} has a different password",
                                 request=view, pairing_code=code)
        return AttemptResult("pending", "waiting for an operator", request=view, pairing_code=code)

    @guarded
    def record_rekey(self, username, password, client_id=None, peer=None, source="mqtt") -> AttemptResult:
        """A user's name tried with another password while unlocked (a re-flashed or replaced device): a
        request flagged ``rekey``, so the operator learns why the device stays out. Never admitted by an
        approval rule; granting it (with force) replaces the user's password. A retry counts on it."""
        broken = registration_problem(username, password)
        if broken:
            return AttemptResult("invalid", broken[1], field=broken[0])
        username = normalise_username(username)
        reserved = self._reserved(username)
        if reserved:
            return AttemptResult("reserved", reserved, field="username")
        now = self.clock()
        if not self._unlocked(now):
            return AttemptResult("locked", "the registry is locked")
        print_ = self._verifier(username, password)
        with write_transaction(self.db):
            outcome = self._match_existing(username, print_, client_id, peer, now)
            if outcome:
                return outcome
            refusal = self._flood_refusal(peer, now)
            if refusal:
                return AttemptResult("flood", refusal)
            code = crypto.pairing_code(username, password)
            row = SimpleNamespace(
                username=username, verifier=print_, pairing_code=code, client_id=client_id, peer=peer,
                source=source, requested_permissions=None, requested_roles=None, context=None, first_seen=now,
                last_seen=now, attempts=1, status="pending", conflict=False, rekey=True, decided_by=None,
                decided_at=None)
            (row.id,) = run_sql(self.db, INSERT_REQUEST, tuple(getattr(row, c) for c in REQUEST_COLUMNS)).fetchone()
            self._event("registry", "request.created", username, request_id=row.id, source=source, peer=peer,
                        client_id=client_id, rekey=True)
        return AttemptResult("rekey", f"{username!r} is a user with another password: a re-key request",
                             request=RequestView.of(row), pairing_code=code)

    def _match_existing(self, username, print_, client_id, peer, now) -> AttemptResult | None:
        """Same name and same password as a stored request: count the retry there."""
        R = self.m.Request
        candidates = run_sql(self.db, 'SELECT "id", "verifier" FROM "requests" WHERE "username" = ? AND '
                                      '"status" IN (\'pending\', \'denied\')', (username,)).fetchall()
        for request_id, verifier in candidates:
            if not crypto.same(verifier, print_):
                continue
            row = R.get_by_id(request_id)
            row.last_seen, row.attempts = now, row.attempts + 1
            row.client_id, row.peer = client_id or row.client_id, peer or row.peer
            run_sql(self.db, 'UPDATE "requests" SET "last_seen" = ?, "attempts" = "attempts" + 1, "client_id" = ?, '
                             '"peer" = ? WHERE "id" = ?', (now, row.client_id, row.peer, row.id))
            if row.status == "pending" and now - self._retry_event_at.get(row.id, 0.0) >= RETRY_EVENT_EVERY:
                if len(self._retry_event_at) > 2 * self.config.max_pending:  # a long-running server: stay bounded
                    self._retry_event_at.clear()
                self._retry_event_at[row.id] = now
                self._event("registry", "request.retried", username, request_id=row.id, attempts=row.attempts)
            view = RequestView.of(row)
            if row.status == "denied":
                return AttemptResult("denied", "an operator denied this request", request=view,
                                     pairing_code=row.pairing_code)
            return AttemptResult("retry", "still waiting for an operator", request=view,
                                 pairing_code=row.pairing_code)
        return None

    def _flood_refusal(self, peer, now) -> str | None:
        if peer is not None:
            (recent,) = run_sql(self.db, 'SELECT COUNT(*) FROM "requests" WHERE "peer" = ? AND "first_seen" > ?',
                                (peer, now - 60)).fetchone()
            if recent >= self.config.per_peer_per_minute:
                self.refused["flood"] += 1
                self._count_recent(self.m.Throttle, self.m.Throttle.peer, peer, now)
                return f"more than {self.config.per_peer_per_minute} new requests from {peer} in a minute"
        (pending,) = run_sql(self.db, 'SELECT COUNT(*) FROM "requests" WHERE "status" = \'pending\'').fetchone()
        if pending >= self.config.max_pending:
            self.refused["flood"] += 1
            return f"{self.config.max_pending} requests are already pending"
        return None

    def _knock(self, username: str, now: float, count: int = 1) -> None:
        key = crypto.verifier(self._secret, username, "")[:32]
        self._count_recent(self.m.Knock, self.m.Knock.key, key, now, count)

    @guarded
    def record_knocks(self, counted: list[tuple[str, int]], total: int | None = None) -> None:
        """Knocks the broker counted while locked (names with their attempts; ``total`` may count more
        attempts than the names listed: those share the overflow row), in one transaction."""
        now = self.clock()
        listed = 0
        with write_transaction(self.db):
            for username, count in counted:
                if count > 0 and not text_problem(username, "username") and not nfc_problem(username):
                    self._knock(normalise_username(username), now, count)
                    listed += count
            if total is not None and total > listed:
                self._count_recent(self.m.Knock, self.m.Knock.key, OVERFLOW, now, total - listed)

    def _count_recent(self, table, key_field, key: str, now: float, count: int = 1) -> None:
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

    def _expire_if_due(self, now: float) -> None:
        """The hot path (record_attempt) looks for stale requests at most once a minute."""
        if now - self._expired_checked_at >= EXPIRE_CHECK_EVERY:
            self._expired_checked_at = now
            self.expire_stale()

    @guarded
    def expire_stale(self) -> int:
        R = self.m.Request
        now = self.clock()
        cutoff = now - self.config.expire_after
        stale = list(R.select(R.id, R.username).where((R.status == "pending") & (R.last_seen < cutoff)))
        if not stale:
            return 0
        with write_transaction(self.db):
            for row in stale:
                changed = R.update(status="expired", decided_by="registry", decided_at=now, pairing_code=None).where(
                    (R.id == row.id) & (R.status == "pending")).execute()
                if changed:
                    self._event("registry", "request.expired", row.username, request_id=row.id)
        self.scrub_secrets()
        return len(stale)
