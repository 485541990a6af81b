"""What the registry remembers for each operator (not rules): the last permission template and roles they granted with,
so the next grant dialog starts from them. Kept in the database's ``meta`` table, so every dashboard on the registry
sees it. A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import hashlib
import json

from .base import Part
from .database import guarded
from .validation import parse_permissions, role_name_problem


def _key(actor: str, what: str = "template") -> str:
    key = f"{what}:{actor}"
    return key if len(key) <= 64 else f"{what}:" + hashlib.sha256(actor.encode()).hexdigest()[:40]


class Preferences(Part):
    @guarded
    def last_template(self, actor: str) -> str:
        """The permission template ``actor`` last granted with ("" if none)."""
        row = self.m.Meta.get_or_none(self.m.Meta.key == _key(actor))
        return row.value if row else ""

    @guarded
    def remember_template(self, actor: str, template: str) -> None:
        """Keep ``template`` (``PATTERN=ACCESS`` words, checked by the store's parser) for ``actor``."""
        text = " ".join(f"{p}={a}" for p, a in parse_permissions(template))
        with self.base.write():
            self.base.meta(_key(actor), text)

    @guarded
    def last_roles(self, actor: str) -> list[str]:
        """The roles ``actor`` last granted with ([] if none), whether they still exist or not."""
        row = self.m.Meta.get_or_none(self.m.Meta.key == _key(actor, "roles"))
        return json.loads(row.value) if row else []

    @guarded
    def remember_roles(self, actor: str, roles: list[str]) -> None:
        names = [r for r in roles if not role_name_problem(r)]
        with self.base.write():
            self.base.meta(_key(actor, "roles"), json.dumps(names))
