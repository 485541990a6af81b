"""Who may log in and what a user may do: verifiers, the forwarded login, grants and authorization, with
the in-memory answers (a bounded cache of each user's access, dropped on every change). A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from dataclasses import dataclass

from . import crypto, topics
from .database import guarded, run_sql, write_transaction
from .validation import normalise_username, text_problem
from .views import Grants, LoginResult

ACTIONS = ("subscribe", "publish", "receive")
ACCESS_CACHE_MAX = 10_000
_MISSING = object()


@dataclass
class _Access:
    admin: bool
    disabled: bool
    permissions: list  # [(pattern, access)]
    client_id: str | None  # the client id the user registered with ({client_id} binds to it)


class AccessRules:
    def invalidate(self, username: str | None = None) -> None:
        """Forget cached permissions (of one user, or of all)."""
        if username is None:
            self._access_cache.clear()
        else:
            self._access_cache.pop(normalise_username(username), None)

    def _verdict(self, username: str, password: str) -> str | None:
        """None when no user has this (normalised) name; else "ok", "disabled" (the password is right but the
        user may not log in) or "wrong". One query and one HMAC: it is on a device's hot path."""
        found = run_sql(self.db, 'SELECT "verifier", "disabled" FROM "users" WHERE "name" = ?', (username,)).fetchone()
        if found is None:
            return None
        verifier, disabled = found
        if not crypto.same(verifier, self._verifier(username, password)):
            return "wrong"
        return "disabled" if disabled else "ok"

    @guarded
    def authenticate(self, username: str, password: str) -> bool:
        """True for a user's right password (and not disabled): one HMAC against the stored verifier."""
        if text_problem(username, "username") or text_problem(password, "password"):
            return False
        username = normalise_username(username)
        return self._verdict(username, password) == "ok"

    @guarded
    def login(self, username: str, password: str, client_id: str | None = None, peer: str | None = None,
              source: str = "mqtt") -> LoginResult:
        """A login the broker could not answer itself (Mosquitto forwards names it does not know).

        A user's right password is ``accepted``: the broker has no account for it yet (the service restarted
        since the grant, or the account was deleted by hand) and may create one with this password. Any
        other name is recorded as a registration attempt (and refused)."""
        problem = text_problem(username, "username") or text_problem(password, "password")
        if problem:
            return LoginResult(False, "not_credentials", problem)
        username = normalise_username(username)
        verdict = self._verdict(username, password)
        if verdict is not None:
            if verdict == "ok":
                return LoginResult(True, "accepted", "password verified")
            if verdict == "disabled":  # said only to whoever knows the password
                return LoginResult(False, "disabled", "the user is disabled")
            return LoginResult(False, "refused", "wrong password")
        attempt = self.record_attempt(username, password, client_id, peer, source)
        return LoginResult(False, attempt.outcome, attempt.reason, attempt)

    @guarded
    def login_many(self, attempts: list[tuple]) -> list[LoginResult]:
        """:meth:`login` for several attempts ``(username, password, client_id, peer, source)`` in one write
        transaction: a flood or a storm of new devices pays one commit per batch, not per attempt."""
        with write_transaction(self.db):
            return [self.login(*attempt) for attempt in attempts]

    def _access(self, username: str) -> _Access | None:
        username = normalise_username(username)
        access = self._access_cache.get(username, _MISSING)
        if access is not _MISSING:
            return access
        row = self._user_row(username)
        access = None
        if row is not None:
            access = _Access(row.admin, row.disabled, [(p.pattern, p.access) for p in row.permissions],
                             row.client_id)
        if len(self._access_cache) >= ACCESS_CACHE_MAX:  # bounded: a name flood cannot grow it
            self._access_cache.clear()
        self._access_cache[username] = access
        return access

    @guarded
    def grants(self, username: str) -> Grants | None:
        """What a user may do, as a broker must enforce it (None when there is no such user): placeholders
        filled with the name and the client id the user registered with, patterns that cannot be filled
        (or would widen) dropped, and `$` topics kept for admins only. The broker projects exactly this."""
        username = normalise_username(username)
        access = self._access(username)
        if access is None:
            return None
        return self._grants_of(username, access)

    @guarded
    def all_grants(self) -> dict[str, Grants]:
        """``grants`` of every user at once (two queries), for a broker's reconcile."""
        perms: dict[int, list] = {}
        for user_id, pattern, kind in run_sql(self.db, 'SELECT "user_id", "pattern", "access" FROM "permissions" '
                                                        'ORDER BY "pattern"').fetchall():
            perms.setdefault(user_id, []).append((pattern, kind))
        return {name: self._grants_of(name, _Access(bool(admin), bool(disabled), perms.get(uid, []), client_id))
                for uid, name, admin, disabled, client_id in run_sql(
                    self.db, 'SELECT "id", "name", "admin", "disabled", "client_id" FROM "users"').fetchall()}

    @staticmethod
    def _grants_of(username: str, access: _Access) -> Grants:
        allowed = []
        for pattern, kind in access.permissions:
            expanded = topics.expand(pattern, username, access.client_id)
            if expanded is None or (expanded.startswith("$") and not access.admin):
                continue
            allowed.append((expanded, kind))
        binds = any("{client_id}" in pattern for pattern, _ in access.permissions)
        return Grants(username, bool(access.admin), bool(access.disabled),
                      access.client_id if binds else None, tuple(allowed))

    @guarded
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

    @guarded
    def is_user(self, username: str) -> bool:
        return self._access(username) is not None

    @guarded
    def is_admin(self, username: str) -> bool:
        access = self._access(username)
        return bool(access and access.admin and not access.disabled)
