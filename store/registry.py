"""The registry: every rule of admission in one place. The broker, the HTTP API, the CLI and the dashboard
all decide through this class; it knows nothing of MQTT, HTTP or screens.

Registry is the one entry point; its rules are kept by job: the registration of attempts
(``registration.py``), who may log in and do what (``access.py``), reading (``queries.py``), and here the
window, the operator's decisions and the changes to users.

Every mutation is one transaction that also appends an Event row (the audit log and the changelog the
broker relays). Events never carry a password, hash or fingerprint.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterable

import peewee as pw

from . import crypto, location as loc
from .access import AccessRules, _Access
from .approval_rules import ApprovalRules
from .database import connect, guarded, run_sql, scrub_wal, write_transaction
from .errors import InvalidValueError, RefusedError, StoreError
from .permissions import PermissionRules
from .preferences import Preferences
from .presence import PresenceRecords
from .queries import Queries
from .registration import OVERFLOW, RegistrationRules
from .roles import RoleRules
from .validation import (normalise_username, parse_permission, password_problem, reserved_problem, text_problem,
                         username_problem)
from .views import ItemResult, RequestView, Status, UserView

KNOCK_WINDOW = 300  # "devices knocking" and "throttled": the last five minutes (registration.RECENT)
CONSOLE_USER = "client-registry-console"  # the dashboards' own admin account (store/console.py)
SERVER_ALIVE = 5.0  # a server that noted nothing for this long is not running (it notes every 2 s)
SCRUB_DUE = "scrub_due"  # meta key: a cleared secret may still be in the WAL (Registry.scrub_secrets)
SERVER_PROBLEM = "server_problem"  # meta key: why the running server cannot do its job, while it says so
SERVER_PROBLEM_AT = "server_problem_at"  # meta key: when it last said so (shown while within SERVER_ALIVE)
WINDOW_OPENED = "window_opened_at"  # meta key: when the registry last went from locked to unlocked


DENY_BATCH = 500  # requests denied per transaction: a flood clears fast, the writer lock is held briefly


@dataclass(frozen=True)
class RegistryConfig:
    per_peer_per_minute: int = 30
    max_pending: int = 10_000
    expire_after: float = 24 * 3600
    default_unlock: int = 300


class Registry(RegistrationRules, AccessRules, PermissionRules, RoleRules, ApprovalRules, Preferences,
               PresenceRecords, Queries):
    def __init__(self, location: str, config: RegistryConfig | None = None, clock: Callable[[], float] = time.time,
                 *, create: bool = False):
        self.location = location
        self.config = config or RegistryConfig()
        self.clock = clock
        self.data_dir = loc.data_dir_for(location)
        self.db, self.m = connect(location, create=create)
        secret = self.companion("secret")
        try:
            self._secret = crypto.load_or_create_secret(secret)
        except (OSError, ValueError) as exc:
            self.db.close()
            raise StoreError(f"cannot read or create the server secret {secret}: {exc}") from exc
        self._access_cache: dict[str, _Access | None] = {}
        self._retry_event_at: dict[int, float] = {}
        self._expired_checked_at = 0.0
        self._pruned_at: dict = {}  # table of recent counts -> when it was last pruned
        self._recent_rows: dict = {}  # table of recent counts -> about how many rows it holds
        self.refused: Counter[str] = Counter()  # refusals beyond the flood limits, by this process
        self._scrub_due = False  # a cleared pairing code may still be in the WAL (scrub_secrets)

    def close(self) -> None:
        self.db.close()

    def companion(self, name: str):
        """A file of this database's own (secret, credentials, Mosquitto's files): see store.location."""
        return loc.companion(self.location, name)

    # ----------------------------------------------------------------- helpers
    def _event(self, actor: str, kind: str, subject: str | None, at: float | None = None, **detail) -> None:
        run_sql(self.db, 'INSERT INTO "events" ("time", "actor", "kind", "subject", "detail") VALUES (?, ?, ?, ?, ?)',
                (self.clock() if at is None else at, actor, kind, subject, json.dumps(detail)))

    def _verifier(self, username: str, password: str) -> str:
        return crypto.verifier(self._secret, username, password)

    def _user_row(self, name: str):
        name = normalise_username(name)
        if text_problem(name, "username"):  # no user has a name UTF-8 cannot carry
            return None
        return self.m.User.get_or_none(self.m.User.name == name)

    def _require_user(self, name: str):
        row = self._user_row(name)
        if row is None:
            raise RefusedError(f"no user named {name!r}")
        return row

    # ------------------------------------------------------------ reserved names
    def _reserved(self, name: str) -> str | None:
        """Why ``name`` (NFC) may never be a device's (validation.reserved_problem), or None."""
        site = run_sql(self.db, 'SELECT 1 FROM "site_accounts" WHERE "name" = ?', (name,)).fetchone() is not None
        return reserved_problem(name, site_account=site)

    @guarded
    def set_site_accounts(self, names: Iterable[str], source: str, actor: str = "server") -> bool:
        """The accounts the site's own broker has (attach mode), as the server read them from ``source`` (the
        site's files); replaces the earlier list. True when it changed (one ``site_accounts.changed`` event,
        with the count: the names stay out of the audit log)."""
        wanted = {normalise_username(n) for n in names if isinstance(n, str) and not text_problem(n, "name")}
        with write_transaction(self.db):
            have = {name for (name,) in run_sql(self.db, 'SELECT "name" FROM "site_accounts"').fetchall()}
            if have == wanted:
                return False
            for name in have - wanted:
                run_sql(self.db, 'DELETE FROM "site_accounts" WHERE "name" = ?', (name,))
            for name in wanted - have:
                run_sql(self.db, 'INSERT INTO "site_accounts" ("name") VALUES (?)', (name,))
            self._event(actor, "site_accounts.changed", None, count=len(wanted), source=source)
        return True

    @guarded
    def site_accounts(self) -> list[str]:
        return sorted(name for (name,) in run_sql(self.db, 'SELECT "name" FROM "site_accounts"').fetchall())

    @guarded
    def site_clashes(self) -> list[str]:
        """Users of the registry whose name the site's broker has too (created before the site's account, or
        before attach): the operator must remove one of them; the registry changes neither by itself."""
        return [name for (name,) in run_sql(self.db, 'SELECT "u"."name" FROM "users" AS "u" JOIN "site_accounts" '
                                                     'AS "s" ON "s"."name" = "u"."name" ORDER BY "u"."name"')]

    # ------------------------------------------------------------------ window
    def _unlocked(self, now: float) -> bool:
        (until,) = run_sql(self.db, 'SELECT "unlocked_until" FROM "window" WHERE "id" = 1').fetchone()
        return until is not None and until > now

    def _window_opened(self) -> float:
        """When the current (or, while locked, the last) unlock window opened; 0.0 before any was noted."""
        found = run_sql(self.db, 'SELECT "value" FROM "meta" WHERE "key" = ?', (WINDOW_OPENED,)).fetchone()
        return float(found[0]) if found else 0.0

    def _is_user(self, name: str) -> bool:
        """The hot path's question (is this attempt a user's?), without building a model instance."""
        return run_sql(self.db, 'SELECT 1 FROM "users" WHERE "name" = ?', (name,)).fetchone() is not None

    @guarded
    def unlock(self, seconds: float | None = None, actor: str = "cli") -> Status:
        seconds = self.config.default_unlock if seconds is None else seconds
        if not 0 < seconds <= 7 * 24 * 3600:
            raise RefusedError("the unlock duration must be between 1 second and 7 days")
        now = self.clock()
        with write_transaction(self.db):
            if not self._unlocked(now):  # a new window (not an extension): approval rules count afresh
                self._meta(WINDOW_OPENED, repr(now))
            self.m.Window.update(unlocked_until=now + seconds, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self._event(actor, "registry.unlocked", actor, seconds=seconds, until=now + seconds)
        return self.status()

    def _close_expired_window(self, now: float) -> None:
        """A window that ran out is closed in the audit log as ``registry.locked`` by "registry", at the moment
        it ran out (written by the running server within NOTE_EVERY, else by the next status): an operator
        reading the log sees when unknown devices stopped being recorded, not only when it was opened."""
        (until,) = run_sql(self.db, 'SELECT "unlocked_until" FROM "window" WHERE "id" = 1').fetchone()
        if until is None or until > now:
            return  # the usual case, read only: no write lock
        with write_transaction(self.db):
            if run_sql(self.db, 'UPDATE "window" SET "unlocked_until" = NULL WHERE "id" = 1 AND "unlocked_until" = ?',
                       (until,)).rowcount:  # once, though two processes may see it run out together
                self._event("registry", "registry.locked", "registry", at=until, expired=True)

    @guarded
    def lock(self, actor: str = "cli") -> Status:
        with write_transaction(self.db):
            self.m.Window.update(unlocked_until=None, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self._event(actor, "registry.locked", actor)
        return self.status()

    @guarded
    def status(self, expire: bool = True) -> Status:
        """``expire=False`` only reads (a dashboard's periodic refresh): stale requests are expired by the
        next call that may write."""
        now = self.clock()
        if expire:
            self.expire_stale()
            self._close_expired_window(now)
        window = self.m.Window.get_by_id(1)
        unlocked = window.unlocked_until is not None and window.unlocked_until > now
        K, T = self.m.Knock, self.m.Throttle
        recent = K.select(pw.fn.COUNT(K.key), pw.fn.COALESCE(pw.fn.SUM(K.count), 0)).where(
            K.last_seen > now - KNOCK_WINDOW).tuples().get()
        capped = K.select().where((K.key == OVERFLOW) & (K.last_seen > now - KNOCK_WINDOW)).exists()
        throttled = list(T.select(T.peer, T.count).where(T.last_seen > now - KNOCK_WINDOW)
                         .order_by(T.count.desc()).limit(3).tuples())
        limit = self.m.Meta.get_or_none(self.m.Meta.key == "per_address_limit")  # the server's (note_limits)
        throttled_total = T.select(pw.fn.COALESCE(pw.fn.SUM(T.count), 0)).where(
            T.last_seen > now - KNOCK_WINDOW).scalar()
        notes = dict(run_sql(self.db, 'SELECT "key", "value" FROM "meta" WHERE "key" IN (?, ?)',
                             (SERVER_PROBLEM, SERVER_PROBLEM_AT)).fetchall())
        alive = notes.get(SERVER_PROBLEM_AT) and now - float(notes[SERVER_PROBLEM_AT]) <= SERVER_ALIVE
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
            per_address_limit=int(limit.value) if limit else self.config.per_peer_per_minute,
            server_problem=notes.get(SERVER_PROBLEM) if alive else None,
        )

    def scrub_secrets(self, cleared: bool = True) -> None:
        """Called after a committed pairing code or verifier was cleared (grant, deny, expiry, user removal;
        once per command, not per row): its old bytes leave the WAL too (database.scrub_wal). If a reader kept
        the WAL busy, meta ``scrub_due`` says so to whichever process comes next: the server calls this with
        ``cleared=False`` every 2 s (note_applied) and does it then."""
        flagged = run_sql(self.db, 'SELECT 1 FROM "meta" WHERE "key" = ?', (SCRUB_DUE,)).fetchone() is not None
        if not (cleared or self._scrub_due or flagged):
            return
        self._scrub_due = not scrub_wal(self.db)
        if self._scrub_due != flagged:  # written after the truncation: this frame holds no secret
            with write_transaction(self.db):
                if self._scrub_due:
                    self._meta(SCRUB_DUE, "1")
                else:
                    self.m.Meta.delete().where(self.m.Meta.key == SCRUB_DUE).execute()

    # ------------------------------------------------- what the running server applied
    def _meta(self, key: str, value: str) -> None:
        M = self.m.Meta
        M.insert(key=key, value=value).on_conflict(conflict_target=[M.key], update={M.value: value}).execute()

    @guarded
    def note_applied(self, event_id: int) -> None:
        """The server has applied every change up to ``event_id`` to the broker (and is alive now)."""
        with write_transaction(self.db):
            self._meta("applied_event_id", str(event_id))
            self._meta("server_seen_at", repr(self.clock()))
        self._close_expired_window(self.clock())
        self.scrub_secrets(cleared=False)

    @guarded
    def note_problem(self, problem: str | None) -> None:
        """What keeps the running server from doing its job (Mosquitto refuses its account, or stopped taking
        changes), for `status` and the dashboards in other processes; None when it is well again. Noted again
        every few seconds while it lasts: a server that died with a problem noted is not shown as having it."""
        with write_transaction(self.db):
            if problem:
                self._meta(SERVER_PROBLEM, problem)
                self._meta(SERVER_PROBLEM_AT, repr(self.clock()))
            else:
                self.m.Meta.delete().where(self.m.Meta.key.in_((SERVER_PROBLEM, SERVER_PROBLEM_AT))).execute()

    @guarded
    def note_limits(self) -> None:
        """The serving process's flood limits, for `status` in other processes to show."""
        with write_transaction(self.db):
            self._meta("per_address_limit", str(self.config.per_peer_per_minute))

    @guarded
    def applied(self) -> tuple[int, float | None]:
        """(the last event id the running server applied, when it last said so) from the database."""
        rows = dict(self.m.Meta.select(self.m.Meta.key, self.m.Meta.value).where(
            self.m.Meta.key.in_(("applied_event_id", "server_seen_at"))).tuples())
        seen = rows.get("server_seen_at")
        return int(rows.get("applied_event_id", 0)), float(seen) if seen else None

    def wait_applied(self, event_id: int, timeout: float = 1.0, sleep=time.sleep) -> str:
        """Read your writes: wait until a running server has applied ``event_id`` (for permissions and
        revocation: Mosquitto enforces it). "applied", "no_server" (none has been alive lately; it applies
        the change when it starts) or "timeout"."""
        deadline = time.monotonic() + timeout
        while True:
            done, seen = self.applied()
            if done >= event_id:
                return "applied"
            if seen is None or self.clock() - seen > SERVER_ALIVE:
                return "no_server"
            if time.monotonic() >= deadline:
                return "timeout"
            sleep(0.02)

    # --------------------------------------------------------------- decisions
    def _resolve_items(self, items: Iterable) -> list[tuple[str, object]]:
        """Each item (id or username) with the ids of its pending requests, or an error string (hand-written
        SQL: Peewee's query building cost ~1 ms an item, 14 s for a glob deny of 10,000)."""
        out = []
        for item in items:
            text = normalise_username(str(item))
            if text_problem(text, "name"):
                out.append((text, text_problem(text, "name")))
                continue
            if text.isdigit():
                found = run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "id" = ?', (int(text),)).fetchone()
                out.append((text, [found[0]] if found else f"no request #{text}"))
                continue
            ids = [i for (i,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                         '"status" = \'pending\' ORDER BY "id"', (text,))]
            if not ids:
                latest = run_sql(self.db, 'SELECT "status" FROM "requests" WHERE "username" = ? ORDER BY "id" DESC'
                                 ' LIMIT 1', (text,)).fetchone()
                out.append((text, f"{text!r} has no pending request" + (f" (it is {latest[0]})" if latest else "")))
            else:
                out.append((text, ids))
        return out

    @guarded
    def grant(self, ids_or_names, permissions=(), actor: str = "cli", force: bool = False,
              requested: bool = False, roles: Iterable[str] = ()) -> list[ItemResult]:
        """Create users from pending requests. ``permissions`` (``"PATTERN=ACCESS"`` or pairs) is the template
        every granted user gets, ``roles`` (names) the roles; ``requested=True`` also gives each device what it
        asked for (HTTP requests: permissions and roles), the template winning where both name a pattern and
        the operator's roles coming first. ``permissions=None`` is ``requested=True`` alone. An unknown role
        is refused before anything is written; a requested one refuses that request only."""
        if permissions is None:
            permissions, requested = (), True
        try:
            template = [parse_permission(p) for p in permissions]
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        roles = [r.name for r in self._existing_roles(list(roles))]
        self.expire_stale()
        results = []
        for item, rows in self._resolve_items(ids_or_names):
            if isinstance(rows, str):
                results.append(ItemResult(item, False, rows))
                continue
            if len(rows) > 1:
                results.append(ItemResult(item, False, (
                    f"{item!r} has {len(rows)} conflicting requests "
                    f"(#{', #'.join(map(str, rows))}): grant one by id with force")))
                continue
            results.append(self._grant_one(item, rows[0], template, requested, actor, force, roles))
        self.scrub_secrets(any(r.ok for r in results))
        return results

    def _grant_one(self, item, request_id, template, requested, actor, force, roles=(), **detail) -> ItemResult:
        """``detail``: more for the request.granted event (an approval rule names itself there). Hand-written
        SQL: an approval rule runs this for every device it admits (peewee's query building cost ~1.2 ms of the
        1.8 ms a device took, measured with 2,000 admissions)."""
        now = self.clock()
        with write_transaction(self.db):
            row = self._request_row(request_id)  # re-read inside the transaction: another operator may have decided
            if row.status != "pending":
                return ItemResult(item, False, f"request #{row.id} ({row.username}) is already {row.status}",
                                  RequestView.of(row))
            reserved = self._reserved(row.username)  # again: the site may have created the name since
            if reserved:
                return ItemResult(item, False, f"request #{row.id} ({row.username}): {reserved}", RequestView.of(row))
            rivals = [r for (r,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                                     '"status" = \'pending\' AND "id" <> ?',
                                            (row.username, row.id)).fetchall()]
            if rivals and not force:
                return ItemResult(item, False, (
                    f"request #{row.id} ({row.username}) conflicts with #"
                    f"{', #'.join(str(r) for r in rivals)}: confirm with force"), RequestView.of(row))
            existing = self._user_row(row.username) if row.rekey or self._is_user(row.username) else None
            if existing is not None and row.rekey:
                return self._grant_rekey(item, row, existing, actor, force, now)
            if existing is not None:
                return ItemResult(item, False, f"{row.username!r} is already a user", RequestView.of(row))
            perms = [(p["resource"], p["operation"]) for p in json.loads(row.requested_permissions or "[]")
                     ] if requested else []
            perms += template  # after the requested ones: the operator's access wins for the same pattern
            wanted = list(roles) + (json.loads(row.requested_roles or "[]") if requested else [])
            try:
                role_rows = self._existing_roles(wanted) if wanted else []
            except RefusedError as exc:  # a role the device asked for is gone (or never was): grant nothing
                return ItemResult(item, False, f"request #{row.id} ({row.username}): {exc}", RequestView.of(row))
            (user_id,) = run_sql(self.db, 'INSERT INTO "users" ("name", "verifier", "client_id", "admin", "disabled", '
                                          '"created_at", "created_by", "created_how") VALUES (?, ?, ?, ?, ?, ?, ?, ?) '
                                          'RETURNING "id"',
                                 (row.username, row.verifier, row.client_id, False, False, now, actor,
                                  f"registration-{row.source}")).fetchone()
            for pattern, access in dict(perms).items():
                run_sql(self.db, 'INSERT INTO "permissions" ("user_id", "pattern", "access") VALUES (?, ?, ?)',
                        (user_id, pattern, access))
            for position, role in enumerate(role_rows):  # a new user: its roles in order, from 0
                run_sql(self.db, 'INSERT INTO "user_roles" ("user_id", "role_id", "position") VALUES (?, ?, ?)',
                        (user_id, role.id, position))
            run_sql(self.db, 'UPDATE "requests" SET "status" = \'granted\', "decided_by" = ?, "decided_at" = ?, '
                             '"pairing_code" = NULL WHERE "id" = ?', (actor, now, row.id))
            for rival in rivals:
                run_sql(self.db, 'UPDATE "requests" SET "status" = \'denied\', "decided_by" = ?, "decided_at" = ?, '
                                 '"pairing_code" = NULL WHERE "id" = ?', (actor, now, rival))
                self._event(actor, "request.denied", row.username, request_id=rival,
                            reason=f"rival of granted request #{row.id}")
            self._event(actor, "request.granted", row.username, request_id=row.id,
                        permissions=[{"pattern": p, "access": a} for p, a in dict(perms).items()],
                        roles=[r.name for r in role_rows], **detail)
        self.invalidate(row.username)
        row.status, row.decided_by, row.decided_at, row.pairing_code = "granted", actor, now, None
        return ItemResult(item, True, f"granted {row.username} (request #{row.id})", RequestView.of(row))

    def _request_row(self, request_id: int) -> SimpleNamespace:
        """One request's columns as attributes (what RequestView.of reads), without a model instance."""
        cursor = run_sql(self.db, 'SELECT * FROM "requests" WHERE "id" = ?', (request_id,))
        found = cursor.fetchone()
        if found is None:
            raise RefusedError(f"no request #{request_id}")
        row = SimpleNamespace(**dict(zip([c[0] for c in cursor.description], found)))
        row.conflict, row.rekey = bool(row.conflict), bool(row.rekey)
        return row

    def _grant_rekey(self, item, row, user, actor: str, force: bool, now: float) -> ItemResult:
        """A re-key request (inside _grant_one's transaction): with force the user's password becomes the one
        the device sent, and its live sessions are disconnected; its permissions and roles stay as they are."""
        R = self.m.Request
        if not force:
            return ItemResult(item, False, (
                f"request #{row.id} ({row.username}) is a new password for an existing user (a re-flashed or "
                f"replaced device?): confirm with force"), RequestView.of(row))
        self.m.User.update(verifier=row.verifier).where(self.m.User.id == user.id).execute()
        R.update(status="granted", decided_by=actor, decided_at=now, pairing_code=None).where(R.id == row.id).execute()
        self._event(actor, "user.password_changed", row.username, request_id=row.id, rekey=True)
        self._event(actor, "request.granted", row.username, request_id=row.id, rekey=True, permissions=[], roles=[])
        self.invalidate(row.username)
        return ItemResult(item, True, f"re-keyed {row.username} (request #{row.id}): its new password is in effect",
                          RequestView.of(R.get_by_id(row.id)))

    @guarded
    def deny(self, ids_or_names, actor: str = "cli") -> list[ItemResult]:
        """Deny pending requests, in transactions of up to ``DENY_BATCH`` (clearing a flood of 10,000 by glob
        took 7.7 s by ids, one transaction each)."""
        results, plan = [], []  # plan: (item, request id or the reason it resolves to none), in the items' order
        for item, ids in self._resolve_items(ids_or_names):
            plan += [(item, ids)] if isinstance(ids, str) else [(item, request_id) for request_id in ids]
        for start in range(0, len(plan), DENY_BATCH):
            now = self.clock()
            with write_transaction(self.db):
                for item, request_id in plan[start:start + DENY_BATCH]:
                    if isinstance(request_id, str):
                        results.append(ItemResult(item, False, request_id))
                        continue
                    row = self._request_row(request_id)
                    if row.status != "pending":
                        results.append(ItemResult(item, False, f"request #{row.id} ({row.username}) is already"
                                                  f" {row.status}", RequestView.of(row)))
                        continue
                    run_sql(self.db, 'UPDATE "requests" SET "status" = \'denied\', "decided_by" = ?, "decided_at" = ?,'
                            ' "pairing_code" = NULL WHERE "id" = ?', (actor, now, row.id))
                    self._event(actor, "request.denied", row.username, request_id=row.id)
                    row.status, row.decided_by, row.decided_at, row.pairing_code = "denied", actor, now, None
                    results.append(ItemResult(item, True, f"denied {row.username} (request #{row.id})",
                                              RequestView.of(row)))
        self.scrub_secrets(any(r.ok for r in results))
        return results

    # ------------------------------------------------------------------- users
    @guarded
    def add_user(self, name: str, password: str, admin: bool = False, actor: str = "cli", how: str = "cli") -> UserView:
        name = normalise_username(name)
        reserved = None if (how == "console" and name == CONSOLE_USER) or username_problem(name) \
            else self._reserved(name)
        for problem in (username_problem(name), reserved, password_problem(password)):
            if problem:
                raise InvalidValueError(problem)
        with write_transaction(self.db):
            if self._user_row(name) is not None:
                raise RefusedError(f"user {name!r} already exists")
            self.m.User.create(name=name, verifier=self._verifier(name, password), admin=admin, created_at=self.clock(),
                               created_by=actor, created_how=how)
            self._event(actor, "user.added", name, admin=admin, how=how)
        self.invalidate(name)
        return self.user(name)

    @guarded
    def remove_user(self, name: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        self._refuse_console(name, "removed")
        with write_transaction(self.db):
            self._delete_user(self._require_user(name), actor)
        self.invalidate(name)
        self.scrub_secrets()  # its verifier: a password filter to whoever also has the secret

    def _delete_user(self, row, actor: str, **detail) -> None:
        """Inside a write transaction: the user, its permissions and roles, and the user.removed event."""
        self.m.Permission.delete().where(self.m.Permission.user == row).execute()
        self.m.UserRole.delete().where(self.m.UserRole.user == row).execute()
        self.m.Presence.delete().where(self.m.Presence.name == row.name).execute()  # a new user of that name starts afresh
        row.delete_instance()
        self._event(actor, "user.removed", row.name, **detail)

    def _refuse_console(self, name: str, what: str) -> None:
        if name == CONSOLE_USER:
            raise RefusedError(f"{CONSOLE_USER} is the account every dashboard logs in with: it cannot be {what} "
                               f"(change its password with `user passwd` if it leaked)")

    def _set_disabled(self, name: str, disabled: bool, actor: str) -> None:
        name = normalise_username(name)
        if disabled:
            self._refuse_console(name, "disabled")
        with write_transaction(self.db):
            row = self._require_user(name)
            if row.disabled == disabled:
                raise RefusedError(f"user {name!r} is already {'disabled' if disabled else 'enabled'}")
            self.m.User.update(disabled=disabled).where(self.m.User.id == row.id).execute()
            self._event(actor, "user.disabled" if disabled else "user.enabled", name)
        self.invalidate(name)

    @guarded
    def disable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, True, actor)

    @guarded
    def enable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, False, actor)

    @guarded
    def set_password(self, name: str, password: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        problem = password_problem(password)
        if problem:
            raise InvalidValueError(problem)
        with write_transaction(self.db):
            row = self._require_user(name)
            self.m.User.update(verifier=self._verifier(name, password)).where(self.m.User.id == row.id).execute()
            self._event(actor, "user.password_changed", name)
        self.invalidate(name)
        self.scrub_secrets()  # the old verifier


def open_registry(db: str | None = None, config: RegistryConfig | None = None,
                  clock: Callable[[], float] = time.time, *, create: bool = True) -> Registry:
    """Open the registry at --db, $CLIENT_REGISTRY_DB, or the default location. ``create=False`` refuses a
    database that does not exist yet (every CLI command but `init`, `serve` and the dashboard)."""
    return Registry(loc.resolve(db), config=config, clock=clock, create=create)
