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


class PermissionRules:
    @guarded
    def permit(self, name: str, pattern: str, access: str, actor: str = "cli") -> None:
        name = normalise_username(name)
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
            shrinks = existing is not None and not covers(access, existing.access)
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
