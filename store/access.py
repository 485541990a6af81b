"""Who may log in and what a user may do: verifiers, grants and authorization (``Access``), from the in-memory
answers (``AccessCache``: a bounded cache of each user's access, which every part that changes a user's access
drops). Parts of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import crypto, topics
from .base import Base, Part
from .database import guarded, run_sql
from .topics import shared_pattern
from .validation import normalise_username, text_problem
from .views import Grants

ACTIONS = ("subscribe", "publish", "receive")
ACCESS_CACHE_MAX = 10_000


@dataclass
class _Access:
    admin: bool
    disabled: bool
    permissions: list  # [(pattern, access)]
    client_id: str | None  # the client id the user registered with ({client_id} binds to it)
    roles: list = field(default_factory=list)  # [(role name, [(pattern, access)])], in the user's order
    certificate: str | None = None  # SHA-256 (hex) of the one client certificate the broker admits it with


# A user's roles with their permissions, in the user's order (LEFT JOIN: a role without permissions counts).
_ROLE_ROWS = ('SELECT "ur"."user_id", "r"."name", "rp"."pattern", "rp"."access" FROM "user_roles" AS "ur" '
              'JOIN "roles" AS "r" ON "r"."id" = "ur"."role_id" '
              'LEFT JOIN "role_permissions" AS "rp" ON "rp"."role_id" = "r"."id"')
_ROLE_ORDER = ' ORDER BY "ur"."user_id", "ur"."position", "rp"."pattern"'


def _roles_by_user(rows) -> dict[int, list]:
    """(user id, role, pattern, access) rows in order -> {user id: [(role, [(pattern, access)])]}."""
    out: dict[int, list] = {}
    for user_id, role, pattern, access in rows:
        roles = out.setdefault(user_id, [])
        if not roles or roles[-1][0] != role:
            roles.append((role, []))
        if pattern is not None:
            roles[-1][1].append((pattern, access))
    return out


def _union(into: dict, pattern: str, access: str) -> None:
    """Two grants of one pattern add up (read and write is readWrite)."""
    before = into.get(pattern)
    into[pattern] = access if before in (None, access) else "readWrite"


class AccessCache(Part):
    def __init__(self, base: Base) -> None:
        super().__init__(base)
        self._answers: dict[str, _Access | None] = {}

    def invalidate(self, username: str | None = None) -> None:
        """Forget cached permissions (of one user, or of all)."""
        if username is None:
            self._answers.clear()
        else:
            self._answers.pop(normalise_username(username), None)

    def invalidate_for(self, kind: str, subject: str | None) -> None:
        """Forget the cached answers an event (of any process) may have changed: its user's, or, for a
        role's event, everyone's (a role may have many members; the cache refills as it is asked)."""
        if kind.startswith("role."):
            self.invalidate()
        elif subject and not kind.startswith("registry."):
            self.invalidate(subject)

    def get(self, username: str) -> _Access | None:
        username = normalise_username(username)
        try:
            return self._answers[username]
        except KeyError:
            pass
        row = self.base.user_row(username)
        access = None
        if row is not None:
            roles = _roles_by_user(run_sql(self.db, _ROLE_ROWS + ' WHERE "ur"."user_id" = ?' + _ROLE_ORDER,
                                           (row.id,)).fetchall())
            access = _Access(row.admin, row.disabled, [(p.pattern, p.access) for p in row.permissions],
                             row.client_id, roles.get(row.id, []), row.certificate)
        if len(self._answers) >= ACCESS_CACHE_MAX:  # bounded: a name flood cannot grow it
            self._answers.clear()
        self._answers[username] = access
        return access


class Access(Part):
    def __init__(self, base: Base, cache: AccessCache) -> None:
        super().__init__(base)
        self.cache = cache

    def verdict(self, username: str, password: str) -> str | None:
        """None when no user has this (normalised) name; else "ok", "disabled" (the password is right but the
        user may not log in) or "wrong". One query and one HMAC: it is on a device's hot path."""
        found = run_sql(self.db, 'SELECT "verifier", "disabled" FROM "users" WHERE "name" = ?', (username,)).fetchone()
        if found is None:
            return None
        verifier, disabled = found
        if not crypto.same(verifier, self.base.verifier(username, password)):
            return "wrong"
        return "disabled" if disabled else "ok"

    @guarded
    def authenticate(self, username: str, password: str) -> bool:
        """True for a user's right password (and not disabled): one HMAC against the stored verifier."""
        if text_problem(username, "username") or text_problem(password, "password"):
            return False
        username = normalise_username(username)
        return self.verdict(username, password) == "ok"

    @guarded
    def grants(self, username: str) -> Grants | None:
        """What a user may do, as a broker must enforce it (None when there is no such user): placeholders
        filled with the name and the client id the user registered with, patterns that cannot be filled
        (or would widen) dropped, and `$` topics kept for admins only. The broker projects exactly this."""
        username = normalise_username(username)
        access = self.cache.get(username)
        if access is None:
            return None
        return self._grants_of(username, access)

    @guarded
    def all_grants(self) -> dict[str, Grants]:
        """``grants`` of every user at once (three queries), for a broker's reconcile."""
        return self._bulk_grants(None)

    def _bulk_grants(self, names: list[str] | None) -> dict[str, Grants]:
        users = 'SELECT "id", "name", "admin", "disabled", "client_id", "certificate" FROM "users"'
        if names is None:
            rows = run_sql(self.db, users).fetchall()
        else:
            rows = []
            for start in range(0, len(names), 500):
                some = names[start:start + 500]
                rows += run_sql(self.db, f'{users} WHERE "name" IN ({", ".join("?" * len(some))})',
                                tuple(some)).fetchall()
        ids = [uid for uid, *_ in rows]
        perms: dict[int, list] = {}
        roles: dict[int, list] = {}
        firsts: list[int | None] = list(range(0, len(ids), 500)) if names is not None else [None]
        for first in firsts:
            chunk = ids[first:first + 500] if first is not None else None
            where = "" if chunk is None else f' WHERE "user_id" IN ({", ".join("?" * len(chunk))})'
            params = () if chunk is None else tuple(chunk)
            for user_id, pattern, kind in run_sql(self.db, 'SELECT "user_id", "pattern", "access" FROM "permissions"'
                                                           + where + ' ORDER BY "pattern"', params).fetchall():
                perms.setdefault(user_id, []).append((pattern, kind))
            role_where = where.replace('"user_id"', '"ur"."user_id"')
            for uid, found in _roles_by_user(run_sql(self.db, _ROLE_ROWS + role_where + _ROLE_ORDER,
                                                     params).fetchall()).items():
                roles[uid] = found
        return {name: self._grants_of(name, _Access(bool(admin), bool(disabled), perms.get(uid, []), client_id,
                                                    roles.get(uid, []), certificate))
                for uid, name, admin, disabled, client_id, certificate in rows}

    def verifier_of(self, username: str, password: str) -> str:
        """The verifier of an account the store does not keep (the service's own, in the broker plugin)."""
        return self.base.verifier(username, password)

    @guarded
    def broker_verifiers(self, names: list[str] | None = None) -> dict[str, str]:
        """The stored verifiers (hex) of these users (or all), for the broker plugin that checks passwords
        against them: it holds the server secret too (docs/SECURITY.md). Nothing else hands them out.

        A user whose certificate the registry signed has no password: the plugin gets the empty password's
        verifier (a device sends none), and the same record binds the account to the certificate
        (``Grants.certificate``), which is then the credential. The store keeps a verifier no password
        matches (crypto.certificate_only_verifier), so no path that sees only a password admits it."""
        query = 'SELECT "name", "verifier", ("certificate_pem" IS NOT NULL AND "certificate" IS NOT NULL) FROM "users"'
        rows = []
        if names is None:
            rows = run_sql(self.db, query).fetchall()
        else:
            names = [normalise_username(n) for n in names]
            for start in range(0, len(names), 500):
                chunk = names[start:start + 500]
                rows += run_sql(self.db, f'{query} WHERE "name" IN ({", ".join("?" * len(chunk))})',
                                tuple(chunk)).fetchall()
        return {name: self.base.verifier(name, "") if certificate_only else verifier
                for name, verifier, certificate_only in rows}

    @guarded
    def grants_of_users(self, names: list[str]) -> dict[str, Grants]:
        """``grants`` of several users (those that exist), in a few queries: the broker's batched changes."""
        return self._bulk_grants(list(dict.fromkeys(normalise_username(n) for n in names)))

    @staticmethod
    def _grants_of(username: str, access: _Access) -> Grants:
        """The user's own permissions, then its roles' in order; what a role holds alike for every member
        (``shared_pattern``) stays out of ``personal``: a broker may keep it in one shared role."""
        everything: dict[str, str] = {}
        personal: dict[str, str] = {}
        sources = [(access.permissions, False)] + [(perms, True) for _, perms in access.roles]
        for perms, from_role in sources:
            for pattern, kind in perms:
                expanded = topics.expand(pattern, username, access.client_id)
                if expanded is None or (expanded.startswith("$") and not access.admin):
                    continue
                _union(everything, expanded, kind)
                if not (from_role and shared_pattern(pattern)):
                    _union(personal, expanded, kind)
        binds = any("{client_id}" in pattern for perms, _ in sources for pattern, _ in perms)
        return Grants(username, bool(access.admin), bool(access.disabled),
                      access.client_id if binds else None, tuple(everything.items()),
                      tuple(name for name, _ in access.roles), tuple(personal.items()), access.certificate)

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
        return self.cache.get(username) is not None

    @guarded
    def is_admin(self, username: str) -> bool:
        access = self.cache.get(username)
        return bool(access and access.admin and not access.disabled)
