"""What a user may do on which topics: adding, removing and replacing permissions, each one transaction with
its events. A part of :class:`store.registry.Registry`, the one entry point.

Only a real narrowing is a ``permission.removed`` (the broker side closes what it no longer allows): a pattern
taken away, or an access that loses something (``readWrite`` -> ``read``, ``read`` -> ``write``). Widening
``read`` to ``readWrite`` is a ``permission.added``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .access import AccessCache
from .base import Base, Part
from .database import guarded
from .errors import InvalidValueError, RefusedError
from .validation import normalise_username, parse_permission


def covers(new: str, old: str) -> bool:
    """Does access ``new`` allow everything ``old`` allowed?"""
    return new == old or new == "readWrite"


def checked(pattern: str, access: str) -> tuple[str, str]:
    """(pattern, access) as parse_permission reads them, or RefusedError with the rule."""
    try:
        return parse_permission((pattern, access))
    except ValueError as exc:
        raise InvalidValueError(str(exc)) from None


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


def replace_permissions(table, owner_field, owner, new: dict, event) -> int:
    """Make ``owner``'s permissions exactly ``new`` ({pattern: access}) inside the caller's transaction, calling
    ``event(kind, pattern, access)`` per change: ``*.removed`` only for a real narrowing (a pattern dropped, or
    access that no longer covers the old). Returns how many patterns changed."""
    old = {p.pattern: p for p in table.select().where(owner_field == owner)}
    changes = 0
    for pattern, perm in old.items():
        if pattern not in new:
            perm.delete_instance()
            event("removed", pattern, None)
            changes += 1
    for pattern, access in new.items():
        before = old.get(pattern)
        if before is None:
            table.create(**{owner_field.name: owner, "pattern": pattern, "access": access})
            event("added", pattern, access)
        elif before.access != access:
            table.update(access=access).where(table.id == before.id).execute()
            event("added" if covers(access, before.access) else "removed", pattern, access)
        else:
            continue
        changes += 1
    return changes


def parsed_pairs(pairs: Iterable) -> dict:
    """``(pattern, access)`` or ``"PATTERN=ACCESS"`` items as {pattern: access} (a pattern given twice keeps its
    last access); RefusedError for the first bad one, before anything is written."""
    try:
        return dict(parse_permission(p) for p in pairs)
    except ValueError as exc:
        raise InvalidValueError(str(exc)) from None


class Permissions(Part):
    def __init__(self, base: Base, cache: AccessCache) -> None:
        super().__init__(base)
        self.cache = cache

    @guarded
    def permit(self, name: str, pattern: str, access: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        pattern, access = checked(pattern, access)
        P = self.m.Permission
        with self.base.write():
            row = self.base.require_user(name)
            shrinks = put_permission(P, P.user, row, pattern, access, repr(name))
            self.base.event(actor, "permission.removed" if shrinks else "permission.added", name,
                            pattern=pattern, access=access)
        self.cache.invalidate(name)

    @guarded
    def forbid(self, name: str, pattern: str, actor: str = "cli") -> None:
        name = normalise_username(name)
        P = self.m.Permission
        with self.base.write():
            row = self.base.require_user(name)
            deleted = P.delete().where((P.user == row) & (P.pattern == pattern)).execute()
            if not deleted:
                raise RefusedError(f"{name!r} has no permission on {pattern!r}")
            self.base.event(actor, "permission.removed", name, pattern=pattern)
        self.cache.invalidate(name)

    @guarded
    def set_permissions(self, name: str, pairs: Iterable, actor: str = "cli") -> int:
        """Replace a user's permissions by ``pairs`` (``(pattern, access)`` or ``"PATTERN=ACCESS"``) in one
        transaction: every pattern is checked first, so a bad one changes nothing. Returns how many patterns
        changed (0: nothing to do, no event). A pattern given twice keeps its last access."""
        name = normalise_username(name)
        new = parsed_pairs(pairs)
        P = self.m.Permission

        def event(change: str, pattern: str, access: str | None) -> None:
            extra: dict[str, Any] = {"access": access} if access else {}
            self.base.event(actor, f"permission.{change}", name, pattern=pattern, **extra)

        with self.base.write():
            changes = replace_permissions(P, P.user, self.base.require_user(name), new, event)
        self.cache.invalidate(name)
        return changes
