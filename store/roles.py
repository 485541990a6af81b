"""Roles: named sets of permissions that users hold, in order, besides their own. A part of
:class:`store.registry.Registry`, the one entry point.

A role's patterns are written like a user's (``{username}``/``{client_id}`` filled per member); ``grants``
adds them to every member's own (store/access.py). What a role gives every member alike (``shared_pattern``)
can live in one broker role shared by the members, so editing it is one broker change.

Events (subject = the role for ``role.*``, the user for ``user.role_*``; detail names the other):
``role.added``, ``role.removed``, ``role.permission_added``, ``role.permission_removed`` (only a real
narrowing, as for users), ``user.role_added``, ``user.role_removed``. Removing a role with members (``force``)
writes a ``user.role_removed`` for each member first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peewee as pw

from .access import AccessCache
from .base import Base, Part
from .database import guarded
from .errors import InvalidValueError, RefusedError
from .permissions import Permissions, checked, parsed_pairs, put_permission, replace_permissions
from .topics import shared_pattern
from .validation import normalise_username, role_name_problem
from .views import RoleView


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Roles(Part):
    def __init__(self, base: Base, cache: AccessCache, permissions: Permissions) -> None:
        super().__init__(base)
        self.cache, self.permissions = cache, permissions

    # ------------------------------------------------------------------ helpers
    def _role_row(self, name: str):
        if not isinstance(name, str) or role_name_problem(name):
            return None
        return self.m.Role.get_or_none(self.m.Role.name == name)

    def _require_role(self, name: str):
        row = self._role_row(name)
        if row is None:
            raise RefusedError(f"no role named {name!r}")
        return row

    def _member_names(self, role) -> list[str]:
        U, UR = self.m.User, self.m.UserRole
        return [n for (n,) in U.select(U.name).join(UR, on=(UR.user == U.id)).where(UR.role == role)
                .order_by(U.name).tuples()]

    def _forget(self, names: Iterable[str]) -> None:
        for name in names:
            self.cache.invalidate(name)

    def _role_view(self, row, members: int | None = None) -> RoleView:
        RP = self.m.RolePermission
        if members is None:
            members = self.m.UserRole.select().where(self.m.UserRole.role == row).count()
        return RoleView(row.name, [(p.pattern, p.access) for p in row.permissions.order_by(RP.pattern)],
                        members, row.created_at, row.created_by)

    def existing(self, names: Iterable[str]) -> list:
        """Role rows for ``names`` (in that order, duplicates dropped), or RefusedError naming the first
        unknown or invalid one; reads only, so a refusal writes nothing."""
        rows, seen = [], set()
        for name in names:
            problem = role_name_problem(name)
            if problem:
                raise InvalidValueError(problem)
            if name in seen:
                continue
            seen.add(name)
            rows.append(self._require_role(name))
        return rows

    def _attach(self, user, roles: list, actor: str | None) -> list[str]:
        """Give ``user`` the ``roles`` it lacks, after the ones it has (inside a transaction); a
        ``user.role_added`` event each when ``actor`` is given. Returns the names added."""
        UR = self.m.UserRole
        have = {r for (r,) in UR.select(UR.role).where(UR.user == user).tuples()}
        position = UR.select(pw.fn.COALESCE(pw.fn.MAX(UR.position) + 1, 0)).where(UR.user == user).scalar()
        added = []
        for role in roles:
            if role.id in have:
                continue
            UR.create(user=user, role=role, position=position)
            if actor is not None:
                self.base.event(actor, "user.role_added", user.name, role=role.name, position=position)
            position += 1
            added.append(role.name)
        return added

    # ------------------------------------------------------------------ reading
    @guarded
    def roles(self) -> list[RoleView]:
        """Every role with its permissions and member count, by name."""
        R, UR = self.m.Role, self.m.UserRole
        counts = dict(UR.select(UR.role, pw.fn.COUNT(UR.id)).group_by(UR.role).tuples())
        return [self._role_view(r, counts.get(r.id, 0)) for r in R.select().order_by(R.name)]

    @guarded
    def role(self, name: str) -> RoleView | None:
        row = self._role_row(name)
        return self._role_view(row) if row else None

    @guarded
    def role_members(self, name: str) -> list[str]:
        """The names of the users that have this role, by name ([] for no such role)."""
        row = self._role_row(name)
        return self._member_names(row) if row else []

    @guarded
    def shared_grants(self, name: str | None = None) -> dict[str, tuple]:
        """What each role (or the one named) gives every member alike: ``{role: ((pattern, access), ...)}``,
        by pattern. A broker may keep this in one role shared by the members; the rest of a role reaches
        each member through ``Grants.personal``."""
        R, RP = self.m.Role, self.m.RolePermission
        query = R.select(R.name, RP.pattern, RP.access).join(RP, pw.JOIN.LEFT_OUTER, on=(RP.role == R.id))
        if name is not None:
            query = query.where(R.name == name)
        out: dict[str, list] = {}
        for role, pattern, access in query.order_by(R.name, RP.pattern).tuples():
            perms = out.setdefault(role, [])
            if pattern is not None and shared_pattern(pattern):
                perms.append((pattern, access))
        return {role: tuple(perms) for role, perms in out.items()}

    # ------------------------------------------------------------------ roles
    @guarded
    def add_role(self, name: str, actor: str = "cli") -> RoleView:
        problem = role_name_problem(name)
        if problem:
            raise InvalidValueError(problem)
        with self.base.write():
            if self._role_row(name) is not None:
                raise RefusedError(f"role {name!r} already exists")
            row = self.m.Role.create(name=name, created_at=self.base.clock(), created_by=actor)
            self.base.event(actor, "role.added", name)
        return self._role_view(row, 0)

    @guarded
    def remove_role(self, name: str, actor: str = "cli", force: bool = False) -> int:
        """Delete a role; its members lose what it gave them. Refused while it has members unless ``force``.
        Returns how many members it had."""
        with self.base.write():
            row = self._require_role(name)
            members = self._member_names(row)
            if members and not force:
                raise RefusedError(f"role {name!r} has {_plural(len(members), 'member')}: "
                                   f"remove it with force to take it from them")
            for member in members:
                self.base.event(actor, "user.role_removed", member, role=name, reason="role removed")
            self.m.UserRole.delete().where(self.m.UserRole.role == row).execute()
            self.m.RolePermission.delete().where(self.m.RolePermission.role == row).execute()
            row.delete_instance()
            self.base.event(actor, "role.removed", name, members=len(members))
        self._forget(members)
        return len(members)

    @guarded
    def role_permit(self, name: str, pattern: str, access: str, actor: str = "cli") -> int:
        """Let every member of the role use ``pattern`` with ``access``; returns how many members it affects."""
        pattern, access = checked(pattern, access)
        RP = self.m.RolePermission
        with self.base.write():
            row = self._require_role(name)
            shrinks = put_permission(RP, RP.role, row, pattern, access, f"role {name!r}")
            members = self._member_names(row)
            self.base.event(actor, "role.permission_removed" if shrinks else "role.permission_added", name,
                            pattern=pattern, access=access, members=len(members))
        self._forget(members)
        return len(members)

    @guarded
    def role_forbid(self, name: str, pattern: str, actor: str = "cli") -> int:
        """Take ``pattern`` from the role (and so from every member); returns how many members it affects."""
        RP = self.m.RolePermission
        with self.base.write():
            row = self._require_role(name)
            if not RP.delete().where((RP.role == row) & (RP.pattern == pattern)).execute():
                raise RefusedError(f"role {name!r} has no permission on {pattern!r}")
            members = self._member_names(row)
            self.base.event(actor, "role.permission_removed", name, pattern=pattern, members=len(members))
        self._forget(members)
        return len(members)

    @guarded
    def set_user_access(self, user: str, pairs: Iterable, roles: Iterable[str], actor: str = "cli") -> int:
        """A user's own permissions and its roles in one transaction (the dashboard's editor): a bad pattern or
        an unknown role changes neither. Returns how many permissions and roles changed."""
        with self.base.write():
            return self.set_user_roles(user, roles, actor) + self.permissions.set_permissions(user, pairs, actor)

    @guarded
    def set_role_permissions(self, name: str, pairs: Iterable, actor: str = "cli") -> tuple[int, int]:
        """Replace a role's permissions by ``pairs`` in one transaction (an editor's save): a bad pattern changes
        nothing. Returns (patterns changed, members affected)."""
        new = parsed_pairs(pairs)
        RP = self.m.RolePermission
        with self.base.write():
            row = self._require_role(name)
            members = self._member_names(row)

            def event(change: str, pattern: str, access: str | None) -> None:
                extra: dict[str, Any] = {"access": access} if access else {}
                self.base.event(actor, f"role.permission_{change}", name, pattern=pattern, members=len(members),
                                **extra)

            changes = replace_permissions(RP, RP.role, row, new, event)
        self._forget(members)
        return changes, len(members)

    # ------------------------------------------------------------------ members
    @guarded
    def add_user_role(self, user: str, role: str, actor: str = "cli") -> None:
        """Give a user a role, after the roles it has."""
        user = normalise_username(user)
        with self.base.write():
            row = self.base.require_user(user)
            role_row, = self.existing([role])
            if not self._attach(row, [role_row], actor):
                raise RefusedError(f"{user!r} already has role {role!r}")
        self.cache.invalidate(user)

    @guarded
    def remove_user_role(self, user: str, role: str, actor: str = "cli") -> None:
        user = normalise_username(user)
        UR = self.m.UserRole
        with self.base.write():
            row = self.base.require_user(user)
            role_row = self._require_role(role)
            if not UR.delete().where((UR.user == row) & (UR.role == role_row)).execute():
                raise RefusedError(f"{user!r} does not have role {role!r}")
            self.base.event(actor, "user.role_removed", user, role=role)
        self.cache.invalidate(user)

    @guarded
    def set_user_roles(self, user: str, roles: Iterable[str], actor: str = "cli") -> int:
        """Make ``roles`` a user's roles in one transaction (for an editor): the ones it has keep their
        order, new ones follow in the order given; an unknown role changes nothing. Returns how many roles
        were added or removed (0: nothing changed, no event)."""
        user = normalise_username(user)
        UR = self.m.UserRole
        with self.base.write():
            row = self.base.require_user(user)
            wanted = self.existing(list(roles))
            keep = {r.id for r in wanted}
            removed = [link for link in UR.select().where(UR.user == row) if link.role_id not in keep]
            for link in removed:
                self.base.event(actor, "user.role_removed", user, role=link.role.name)
                link.delete_instance()
            added = self._attach(row, wanted, actor)
        self.cache.invalidate(user)
        return len(removed) + len(added)
