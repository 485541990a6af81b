"""What a user may do on which topics: adding, removing and replacing permissions, each one transaction with
its events. A part of :class:`store.registry.Registry`, the one entry point.

Only a real narrowing is a ``permission.removed`` (the broker side closes what it no longer allows): a pattern
taken away, or an access that loses something (``readWrite`` -> ``read``, ``read`` -> ``write``). Widening
``read`` to ``readWrite`` is a ``permission.added``."""

from __future__ import annotations

from typing import Iterable

from .database import guarded, write_transaction
from .errors import RefusedError
from .validation import normalise_username, parse_permission


def covers(new: str, old: str) -> bool:
    """Does access ``new`` allow everything ``old`` allowed?"""
    return new == old or new == "readWrite"


def checked(pattern: str, access: str) -> tuple[str, str]:
    """(pattern, access) as parse_permission reads them, or RefusedError with the rule."""
    try:
        return parse_permission((pattern, access))
    except ValueError as exc:
        raise RefusedError(str(exc)) from None


def put_permission(table, owner_field, owner, pattern: str, access: str, whose: str) -> bool:
    """Give ``owner`` (a user's or a role's row, in ``owner_field`` of ``table``) ``access`` on ``pattern``
    inside the caller's transaction; refused when it has exactly that. True when this narrows what it had."""
    existing = table.get_or_none((owner_field == owner) & (table.pattern == pattern))
    if existing is None:
        table.create(**{owner_field.name: owner, "pattern": pattern, "access": access})
    elif existing.access == access:
        raise RefusedError(f"{whose} already has {access} on {pattern!r}")
    else:
        table.update(access=access).where(table.id == existing.id).execute()
    return existing is not None and not covers(access, existing.access)


class PermissionRules:
    @guarded
    def permit(self, name: str, pattern: str, access: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        pattern, access = checked(pattern, access)
        P = self.m.Permission
        with write_transaction(self.db):
            row = self._require_user(name)
            shrinks = put_permission(P, P.user, row, pattern, access, repr(name))
            self._event(actor, "permission.removed" if shrinks else "permission.added", name,
                        pattern=pattern, access=access)
        self.invalidate(name)

    @guarded
    def forbid(self, name: str, pattern: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        P = self.m.Permission
        with write_transaction(self.db):
            row = self._require_user(name)
            deleted = P.delete().where((P.user == row) & (P.pattern == pattern)).execute()
            if not deleted:
                raise RefusedError(f"{name!r} has no permission on {pattern!r}")
            self._event(actor, "permission.removed", name, pattern=pattern)
        self.invalidate(name)

    @guarded
    def set_permissions(self, name: str, pairs: Iterable, actor: str = "cli") -> int:
        """Replace a user's permissions by ``pairs`` (``(pattern, access)`` or ``"PATTERN=ACCESS"``) in one
        transaction: every pattern is checked first, so a bad one changes nothing. Returns how many patterns
        changed (0: nothing to do, no event). A pattern given twice keeps its last access."""
        name = normalise_username(name)
        try:
            new = dict(parse_permission(p) for p in pairs)
        except ValueError as exc:
            raise RefusedError(str(exc)) from None
        P = self.m.Permission
        changes = 0
        with write_transaction(self.db):
            row = self._require_user(name)
            old = {p.pattern: p for p in P.select().where(P.user == row)}
            for pattern, perm in old.items():
                if pattern not in new:
                    perm.delete_instance()
                    self._event(actor, "permission.removed", name, pattern=pattern)
                    changes += 1
            for pattern, access in new.items():
                before = old.get(pattern)
                if before is None:
                    P.create(user=row, pattern=pattern, access=access)
                    self._event(actor, "permission.added", name, pattern=pattern, access=access)
                elif before.access != access:
                    P.update(access=access).where(P.id == before.id).execute()
                    kind = "permission.added" if covers(access, before.access) else "permission.removed"
                    self._event(actor, kind, name, pattern=pattern, access=access)
                else:
                    continue
                changes += 1
        self.invalidate(name)
        return changes
