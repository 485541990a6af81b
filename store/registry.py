"""The registry: every rule of admission in one place. The broker, the HTTP API, the CLI and the dashboard
all decide through this class; it knows nothing of MQTT, HTTP or screens.

Every mutation is one transaction that also appends an Event row (the audit log and the changelog the
broker relays). Events never carry a password, hash or fingerprint.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import peewee as pw

from . import crypto, location as loc, topics
from .database import connect, translated, write_transaction
from .errors import RefusedError, StoreError
from .validation import parse_permission, password_problem, registration_problem, username_problem
from .views import AttemptResult, EventView, Grants, ItemResult, LoginResult, RequestView, Status, UserView

ACTIONS = ("subscribe", "publish", "receive")
KNOCK_WINDOW = 300  # "devices knocking": refused while locked in the last five minutes
RETRY_EVENT_EVERY = 10.0  # seconds between request.retried events for one request
EXPIRE_CHECK_EVERY = 60.0


@dataclass(frozen=True)
class RegistryConfig:
    per_peer_per_minute: int = 30
    max_pending: int = 10_000
    expire_after: float = 24 * 3600
    default_unlock: int = 300


def _guarded(method):
    """Driver errors leave the registry as StoreError with one clear line."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with translated(self.location):
            return method(self, *args, **kwargs)

    return wrapper


_MISSING = object()


@dataclass
class _Access:
    admin: bool
    disabled: bool
    permissions: list  # [(pattern, access)]
    client_id: str | None  # the client id the user registered with ({client_id} binds to it)


class Registry:
    def __init__(self, location: str, config: RegistryConfig | None = None, clock: Callable[[], float] = time.time):
        self.location = location
        self.config = config or RegistryConfig()
        self.clock = clock
        self.data_dir = loc.data_dir_for(location)
        self.db, self.m = connect(location)
        try:
            self._secret = crypto.load_or_create_secret(self.data_dir)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read or create the server secret in {self.data_dir}: {exc}") from exc
        self._access_cache: dict[str, _Access | None] = {}
        self._retry_event_at: dict[int, float] = {}
        self._expired_checked_at = 0.0
        self.refused: Counter[str] = Counter()  # refusals beyond the flood limits, by this process

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------- helpers
    def _event(self, actor: str, kind: str, subject: str | None, **detail) -> None:
        self.m.Event.create(time=self.clock(), actor=actor, kind=kind, subject=subject, detail=json.dumps(detail))

    def _verifier(self, username: str, password: str) -> str:
        return crypto.verifier(self._secret, username, password)

    def _user_row(self, name: str):
        return self.m.User.get_or_none(self.m.User.name == name)

    def _require_user(self, name: str):
        row = self._user_row(name)
        if row is None:
            raise RefusedError(f"no user named {name!r}")
        return row

    # ------------------------------------------------------------ registration
    @_guarded
    def record_attempt(self, username, password, client_id=None, peer=None, source="mqtt",
                       requested_permissions=None, context=None) -> AttemptResult:
        """Record a registration attempt of a name that is not a user (see :meth:`login` for any name)."""
        broken = registration_problem(username, password, requested_permissions, context)
        if broken:
            return AttemptResult("invalid", broken[1], field=broken[0])
        if source not in ("mqtt", "http"):
            raise ValueError(f"unknown source {source!r}")
        if self._user_row(username) is not None:
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
            if self._user_row(username) is not None:
                return AttemptResult("known_user", f"{username!r} is already a user")
            outcome = self._match_existing(username, print_, client_id, peer, self.clock())
            if outcome:
                return outcome
            rivals = list(self.m.Request.select().where(
                (self.m.Request.username == username) & (self.m.Request.status == "pending")))
            row = self.m.Request.create(
                username=username, verifier=print_, pairing_code=code,
                client_id=client_id, peer=peer, source=source,
                requested_permissions=json.dumps(requested_permissions) if requested_permissions else None,
                context=json.dumps(context) if context is not None else None,
                first_seen=now, last_seen=now, attempts=1, status="pending", conflict=bool(rivals),
            )
            if rivals:
                self.m.Request.update(conflict=True).where(
                    self.m.Request.id.in_([r.id for r in rivals])).execute()
                self._event("registry", "request.conflict", username, request_id=row.id,
                            rival_ids=[r.id for r in rivals], source=source, peer=peer)
            else:
                self._event("registry", "request.created", username, request_id=row.id, source=source,
                            peer=peer, client_id=client_id)
        view = RequestView.of(row)
        if rivals:
            return AttemptResult("conflict", f"another request for {username!r} has a different password",
                                 request=view, pairing_code=code)
        return AttemptResult("pending", "waiting for an operator", request=view, pairing_code=code)

    def _match_existing(self, username, print_, client_id, peer, now) -> AttemptResult | None:
        """Same name and same password as a stored request: count the retry there."""
        R = self.m.Request
        for row in R.select().where((R.username == username) & R.status.in_(("pending", "denied"))):
            if not crypto.same(row.verifier, print_):
                continue
            R.update(last_seen=now, attempts=R.attempts + 1, client_id=client_id or row.client_id,
                     peer=peer or row.peer).where(R.id == row.id).execute()
            if row.status == "pending" and now - self._retry_event_at.get(row.id, 0.0) >= RETRY_EVENT_EVERY:
                if len(self._retry_event_at) > 2 * self.config.max_pending:  # a long-running server: stay bounded
                    self._retry_event_at.clear()
                self._retry_event_at[row.id] = now
                self._event("registry", "request.retried", username, request_id=row.id,
                            attempts=row.attempts + 1)
            view = RequestView.of(R.get_by_id(row.id))
            if row.status == "denied":
                return AttemptResult("denied", "an operator denied this request", request=view,
                                     pairing_code=row.pairing_code)
            return AttemptResult("retry", "still waiting for an operator", request=view,
                                 pairing_code=row.pairing_code)
        return None

    def _flood_refusal(self, peer, now) -> str | None:
        R = self.m.Request
        if peer is not None:
            recent = R.select().where((R.peer == peer) & (R.first_seen > now - 60)).count()
            if recent >= self.config.per_peer_per_minute:
                self.refused["flood"] += 1
                return f"more than {self.config.per_peer_per_minute} new requests from {peer} in a minute"
        if R.select().where(R.status == "pending").count() >= self.config.max_pending:
            self.refused["flood"] += 1
            return f"{self.config.max_pending} requests are already pending"
        return None

    def _knock(self, username: str, now: float) -> None:
        key = crypto.verifier(self._secret, username, "")[:32]
        K = self.m.Knock
        K.insert(key=key, last_seen=now, count=1).on_conflict(
            conflict_target=[K.key], update={K.last_seen: now, K.count: K.count + 1}).execute()

    # ------------------------------------------------------------------ window
    def _unlocked(self, now: float) -> bool:
        row = self.m.Window.get_by_id(1)
        return row.unlocked_until is not None and row.unlocked_until > now

    @_guarded
    def unlock(self, seconds: float | None = None, actor: str = "cli") -> Status:
        seconds = self.config.default_unlock if seconds is None else seconds
        if not 0 < seconds <= 7 * 24 * 3600:
            raise RefusedError("the unlock duration must be between 1 second and 7 days")
        now = self.clock()
        with write_transaction(self.db):
            self.m.Window.update(unlocked_until=now + seconds, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self._event(actor, "registry.unlocked", actor, seconds=seconds, until=now + seconds)
        return self.status()

    @_guarded
    def lock(self, actor: str = "cli") -> Status:
        with write_transaction(self.db):
            self.m.Window.update(unlocked_until=None, unlocked_by=actor).where(self.m.Window.id == 1).execute()
            self._event(actor, "registry.locked", actor)
        return self.status()

    @_guarded
    def status(self) -> Status:
        now = self.clock()
        self.expire_stale()
        window = self.m.Window.get_by_id(1)
        unlocked = window.unlocked_until is not None and window.unlocked_until > now
        K = self.m.Knock
        recent = K.select(pw.fn.COUNT(K.key), pw.fn.COALESCE(pw.fn.SUM(K.count), 0)).where(
            K.last_seen > now - KNOCK_WINDOW).tuples().get()
        return Status(
            unlocked=unlocked,
            remaining=max(0.0, window.unlocked_until - now) if unlocked else 0.0,
            unlocked_until=window.unlocked_until if unlocked else None,
            unlocked_by=window.unlocked_by if unlocked else None,
            pending=self.m.Request.select().where(self.m.Request.status == "pending").count(),
            knocking=recent[0],
            refused_recent=int(recent[1]),
        )

    # --------------------------------------------------------------- decisions
    def _resolve_items(self, items: Iterable) -> list[tuple[str, object]]:
        """Each item (id or username) with its pending request rows, or an error string."""
        R = self.m.Request
        out = []
        for item in items:
            text = str(item)
            if text.isdigit():
                row = R.get_or_none(R.id == int(text))
                out.append((text, [row] if row else f"no request #{text}"))
                continue
            rows = list(R.select().where((R.username == text) & (R.status == "pending")).order_by(R.id))
            if not rows:
                latest = R.select().where(R.username == text).order_by(R.id.desc()).first()
                out.append((text, f"{text!r} has no pending request" + (
                    f" (it is {latest.status})" if latest else "")))
            else:
                out.append((text, rows))
        return out

    @_guarded
    def grant(self, ids_or_names, permissions=(), actor: str = "cli", force: bool = False) -> list[ItemResult]:
        explicit = None if permissions is None else [parse_permission(p) for p in permissions]
        self.expire_stale()
        results = []
        for item, rows in self._resolve_items(ids_or_names):
            if isinstance(rows, str):
                results.append(ItemResult(item, False, rows))
                continue
            if len(rows) > 1:
                results.append(ItemResult(item, False, (
                    f"{item!r} has {len(rows)} conflicting requests "
                    f"(#{', #'.join(str(r.id) for r in rows)}): grant one by id with force")))
                continue
            results.append(self._grant_one(item, rows[0].id, explicit, actor, force))
        return results

    def _grant_one(self, item, request_id, explicit, actor, force) -> ItemResult:
        R = self.m.Request
        now = self.clock()
        with write_transaction(self.db):
            row = R.get_by_id(request_id)  # re-read inside the transaction: another operator may have decided
            if row.status != "pending":
                return ItemResult(item, False, f"request #{row.id} ({row.username}) is already {row.status}",
                                  RequestView.of(row))
            rivals = list(R.select().where(
                (R.username == row.username) & (R.status == "pending") & (R.id != row.id)))
            if rivals and not force:
                return ItemResult(item, False, (
                    f"request #{row.id} ({row.username}) conflicts with #"
                    f"{', #'.join(str(r.id) for r in rivals)}: confirm with force"), RequestView.of(row))
            if self._user_row(row.username) is not None:
                return ItemResult(item, False, f"{row.username!r} is already a user", RequestView.of(row))
            if explicit is None:
                perms = [(p["resource"], p["operation"]) for p in json.loads(row.requested_permissions or "[]")]
            else:
                perms = explicit
            user = self.m.User.create(
                name=row.username, verifier=row.verifier, client_id=row.client_id, created_at=now,
                created_by=actor, created_how=f"registration-{row.source}")
            for pattern, access in dict(perms).items():
                self.m.Permission.create(user=user, pattern=pattern, access=access)
            R.update(status="granted", decided_by=actor, decided_at=now).where(R.id == row.id).execute()
            for rival in rivals:
                R.update(status="denied", decided_by=actor, decided_at=now).where(R.id == rival.id).execute()
                self._event(actor, "request.denied", rival.username, request_id=rival.id,
                            reason=f"rival of granted request #{row.id}")
            self._event(actor, "request.granted", row.username, request_id=row.id,
                        permissions=[{"pattern": p, "access": a} for p, a in dict(perms).items()])
        self.invalidate(row.username)
        return ItemResult(item, True, f"granted {row.username} (request #{row.id})", RequestView.of(R.get_by_id(row.id)))

    @_guarded
    def deny(self, ids_or_names, actor: str = "cli") -> list[ItemResult]:
        R = self.m.Request
        results = []
        for item, rows in self._resolve_items(ids_or_names):
            if isinstance(rows, str):
                results.append(ItemResult(item, False, rows))
                continue
            for found in rows:
                now = self.clock()
                with write_transaction(self.db):
                    row = R.get_by_id(found.id)
                    if row.status != "pending":
                        results.append(ItemResult(item, False, f"request #{row.id} ({row.username}) is already {row.status}",
                                                  RequestView.of(row)))
                        continue
                    R.update(status="denied", decided_by=actor, decided_at=now).where(R.id == row.id).execute()
                    self._event(actor, "request.denied", row.username, request_id=row.id)
                results.append(ItemResult(item, True, f"denied {row.username} (request #{row.id})",
                                          RequestView.of(R.get_by_id(row.id))))
        return results

    def _expire_if_due(self, now: float) -> None:
        """The hot path (record_attempt) looks for stale requests at most once a minute."""
        if now - self._expired_checked_at >= EXPIRE_CHECK_EVERY:
            self._expired_checked_at = now
            self.expire_stale()

    @_guarded
    def expire_stale(self) -> int:
        R = self.m.Request
        now = self.clock()
        cutoff = now - self.config.expire_after
        stale = list(R.select(R.id, R.username).where((R.status == "pending") & (R.last_seen < cutoff)))
        if not stale:
            return 0
        with write_transaction(self.db):
            for row in stale:
                changed = R.update(status="expired", decided_by="registry", decided_at=now).where(
                    (R.id == row.id) & (R.status == "pending")).execute()
                if changed:
                    self._event("registry", "request.expired", row.username, request_id=row.id)
        return len(stale)

    # -------------------------------------------------------------------- auth
    def invalidate(self, username: str | None = None) -> None:
        """Forget cached permissions (of one user, or of all)."""
        if username is None:
            self._access_cache.clear()
        else:
            self._access_cache.pop(username, None)

    def _check(self, row, username: str, password: str) -> str:
        """"ok", "disabled" (the password is right but the user may not log in) or "wrong"."""
        if row is None or not crypto.same(row.verifier, self._verifier(username, password)):
            return "wrong"
        return "disabled" if row.disabled else "ok"

    @_guarded
    def authenticate(self, username: str, password: str) -> bool:
        """True for a user's right password (and not disabled): one HMAC against the stored verifier."""
        if not isinstance(username, str) or not isinstance(password, str):
            return False
        return self._check(self._user_row(username), username, password) == "ok"

    @_guarded
    def login(self, username: str, password: str, client_id: str | None = None, peer: str | None = None,
              source: str = "mqtt") -> LoginResult:
        """A login the broker could not answer itself (Mosquitto forwards names it does not know).

        A user's right password is ``accepted``: the broker has no account for it yet (the service restarted
        since the grant, or the account was deleted by hand) and may create one with this password. Any
        other name is recorded as a registration attempt (and refused)."""
        if not isinstance(username, str) or not isinstance(password, str):
            return LoginResult(False, "not_credentials", "username and password must be strings")
        row = self._user_row(username)
        if row is not None:
            verdict = self._check(row, username, password)
            if verdict == "ok":
                return LoginResult(True, "accepted", "password verified")
            if verdict == "disabled":  # said only to whoever knows the password
                return LoginResult(False, "disabled", "the user is disabled")
            return LoginResult(False, "refused", "wrong password")
        attempt = self.record_attempt(username, password, client_id, peer, source)
        return LoginResult(False, attempt.outcome, attempt.reason, attempt)

    def _access(self, username: str) -> _Access | None:
        access = self._access_cache.get(username, _MISSING)
        if access is not _MISSING:
            return access
        row = self._user_row(username)
        access = None
        if row is not None:
            access = _Access(row.admin, row.disabled, [(p.pattern, p.access) for p in row.permissions],
                             row.client_id)
        self._access_cache[username] = access
        return access

    @_guarded
    def grants(self, username: str) -> Grants | None:
        """What a user may do, as a broker must enforce it (None when there is no such user): placeholders
        filled with the name and the client id the user registered with, patterns that cannot be filled
        (or would widen) dropped, and `$` topics kept for admins only. The broker projects exactly this."""
        access = self._access(username)
        if access is None:
            return None
        allowed = []
        for pattern, kind in access.permissions:
            expanded = topics.expand(pattern, username, access.client_id)
            if expanded is None or (expanded.startswith("$") and not access.admin):
                continue
            allowed.append((expanded, kind))
        binds = any("{client_id}" in pattern for pattern, _ in access.permissions)
        return Grants(username, bool(access.admin), bool(access.disabled),
                      access.client_id if binds else None, tuple(allowed))

    @_guarded
    def authorize(self, username: str | None, action: str, topic: str) -> bool:
        """May this user do ``action`` (subscribe, publish, receive) on ``topic``? The same answer the
        broker enforces from :meth:`grants`."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if not username or not topic:
            return False
        grants = self.grants(username)
        if grants is None or grants.disabled:
            return False
        if grants.admin:
            return True
        if topic.startswith("$"):
            return False
        check = topics.covers if action == "subscribe" else topics.matches
        return any(topics.access_allows(kind, action) and check(pattern, topic) for pattern, kind in grants.topics)

    @_guarded
    def is_user(self, username: str) -> bool:
        return self._access(username) is not None

    @_guarded
    def is_admin(self, username: str) -> bool:
        access = self._access(username)
        return bool(access and access.admin and not access.disabled)

    # ------------------------------------------------------------------- users
    @_guarded
    def add_user(self, name: str, password: str, admin: bool = False, actor: str = "cli", how: str = "cli") -> UserView:
        for problem in (username_problem(name), password_problem(password)):
            if problem:
                raise RefusedError(problem)
        with write_transaction(self.db):
            if self._user_row(name) is not None:
                raise RefusedError(f"user {name!r} already exists")
            self.m.User.create(name=name, verifier=self._verifier(name, password), admin=admin, created_at=self.clock(),
                               created_by=actor, created_how=how)
            self._event(actor, "user.added", name, admin=admin, how=how)
        self.invalidate(name)
        return self.user(name)

    @_guarded
    def remove_user(self, name: str, actor: str = "cli") -> None:
        with write_transaction(self.db):
            row = self._require_user(name)
            self.m.Permission.delete().where(self.m.Permission.user == row).execute()
            row.delete_instance()
            self._event(actor, "user.removed", name)
        self.invalidate(name)

    def _set_disabled(self, name: str, disabled: bool, actor: str) -> None:
        with write_transaction(self.db):
            row = self._require_user(name)
            if row.disabled == disabled:
                raise RefusedError(f"user {name!r} is already {'disabled' if disabled else 'enabled'}")
            self.m.User.update(disabled=disabled).where(self.m.User.id == row.id).execute()
            self._event(actor, "user.disabled" if disabled else "user.enabled", name)
        self.invalidate(name)

    @_guarded
    def disable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, True, actor)

    @_guarded
    def enable_user(self, name: str, actor: str = "cli") -> None:
        self._set_disabled(name, False, actor)

    @_guarded
    def set_password(self, name: str, password: str, actor: str = "cli") -> None:
        problem = password_problem(password)
        if problem:
            raise RefusedError(problem)
        with write_transaction(self.db):
            row = self._require_user(name)
            self.m.User.update(verifier=self._verifier(name, password)).where(self.m.User.id == row.id).execute()
            self._event(actor, "user.password_changed", name)
        self.invalidate(name)

    @_guarded
    def permit(self, name: str, pattern: str, access: str, actor: str = "cli") -> None:
        try:
            pattern, access = parse_permission((pattern, access))
        except ValueError as exc:
            raise RefusedError(str(exc)) from None
        P = self.m.Permission
        with write_transaction(self.db):
            row = self._require_user(name)
            existing = P.get_or_none((P.user == row) & (P.pattern == pattern))
            if existing is None:
                P.create(user=row, pattern=pattern, access=access)
            elif existing.access == access:
                raise RefusedError(f"{name!r} already has {access} on {pattern!r}")
            else:
                P.update(access=access).where(P.id == existing.id).execute()
            # Any change of access except to readWrite takes something away: the relay kicks on "removed".
            shrinks = existing is not None and access != "readWrite"
            self._event(actor, "permission.removed" if shrinks else "permission.added", name,
                        pattern=pattern, access=access)
        self.invalidate(name)

    @_guarded
    def forbid(self, name: str, pattern: str, actor: str = "cli") -> None:
        P = self.m.Permission
        with write_transaction(self.db):
            row = self._require_user(name)
            deleted = P.delete().where((P.user == row) & (P.pattern == pattern)).execute()
            if not deleted:
                raise RefusedError(f"{name!r} has no permission on {pattern!r}")
            self._event(actor, "permission.removed", name, pattern=pattern)
        self.invalidate(name)

    # ----------------------------------------------------------------- reading
    @_guarded
    def requests(self, include_all: bool = False) -> list[RequestView]:
        self.expire_stale()
        R = self.m.Request
        query = R.select()
        if not include_all:
            query = query.where(R.status == "pending")
        pending_first = pw.Case(None, [(R.status == "pending", 0)], 1)
        return [RequestView.of(r) for r in query.order_by(pending_first, R.id.desc())]

    @_guarded
    def request(self, request_id: int) -> RequestView | None:
        row = self.m.Request.get_or_none(self.m.Request.id == request_id)
        return RequestView.of(row) if row else None

    # -- paged reading, for the dashboard's bounded requests table (added on branch perf-tui) ---------------
    def _request_match(self, match: str | None):
        """``match`` as a WHERE clause: any of username, client id, peer, source, pairing code or the status
        label (``conflict`` for a pending request with a conflicting password) contains it, ignoring case."""
        if not match:
            return None
        R = self.m.Request
        text = match.lower()
        clause = (R.username.contains(text) | R.client_id.contains(text) | R.peer.contains(text)
                  | R.source.contains(text) | R.pairing_code.contains(text)
                  | (R.status.contains(text) & ~((R.status == "pending") & (R.conflict == True))))  # noqa: E712
        if text in "conflict":
            clause = clause | ((R.status == "pending") & (R.conflict == True))  # noqa: E712
        return clause

    @_guarded
    def request_count(self, match: str | None = None) -> int:
        """How many requests (any status) match ``match`` (see ``request_page``); all of them without one."""
        query = self.m.Request.select()
        clause = self._request_match(match)
        if clause is not None:
            query = query.where(clause)
        return query.count()

    @_guarded
    def request_page(self, limit: int, offset: int = 0, match: str | None = None) -> tuple[list[RequestView], int]:
        """``limit`` requests from position ``offset`` in the order of ``requests(include_all=True)`` (pending
        first, newest first), optionally only those matching ``match``; and how many match in all.

        Two index-friendly queries (pending, then decided, each by id descending) instead of one sort over
        every row, so the first page of 100,000 requests costs about as much as the first page of 100."""
        self.expire_stale()
        R = self.m.Request
        clause = self._request_match(match)

        pending_q = R.select().where(R.status == "pending" if clause is None else (R.status == "pending") & clause)
        decided_q = R.select().where(R.status != "pending" if clause is None else (R.status != "pending") & clause)
        n_pending = pending_q.count()
        n_total = n_pending + decided_q.count()
        rows: list = []
        offset = max(0, offset)
        if limit > 0 and offset < n_pending:
            rows += list(pending_q.order_by(R.id.desc()).limit(limit).offset(offset))
        remaining = limit - len(rows)
        if remaining > 0:
            rows += list(decided_q.order_by(R.id.desc()).limit(remaining).offset(max(0, offset - n_pending)))
        return [RequestView.of(r) for r in rows], n_total

    def _user_view(self, row, permissions) -> UserView:
        return UserView(name=row.name, admin=bool(row.admin), disabled=bool(row.disabled), created_at=row.created_at,
                        created_by=row.created_by, created_how=row.created_how, permissions=permissions,
                        client_id=row.client_id)

    @_guarded
    def users(self) -> list[UserView]:
        U, P = self.m.User, self.m.Permission
        perms: dict[int, list] = {}
        for p in P.select().order_by(P.pattern):
            perms.setdefault(p.user_id, []).append((p.pattern, p.access))
        return [self._user_view(u, perms.get(u.id, [])) for u in U.select().order_by(U.name)]

    @_guarded
    def user(self, name: str) -> UserView | None:
        row = self._user_row(name)
        if row is None:
            return None
        P = self.m.Permission
        return self._user_view(row, [(p.pattern, p.access) for p in row.permissions.order_by(P.pattern)])

    @_guarded
    def events(self, since: int = 0, limit: int | None = None, subject: str | None = None) -> list[EventView]:
        E = self.m.Event
        query = E.select().where(E.id > since)
        if subject is not None:
            query = query.where(E.subject == subject)
        query = query.order_by(E.id)
        if limit:
            query = query.limit(limit)
        return [EventView.of(e) for e in query]

    @_guarded
    def last_event_id(self) -> int:
        return self.m.Event.select(pw.fn.COALESCE(pw.fn.MAX(self.m.Event.id), 0)).scalar()


def open_registry(db: str | None = None, config: RegistryConfig | None = None,
                  clock: Callable[[], float] = time.time) -> Registry:
    """Open the registry at --db, $CLIENT_REGISTRY_DB, or the default location."""
    return Registry(loc.resolve(db), config=config, clock=clock)
