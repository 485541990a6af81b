"""What the registry remembers for each operator (not rules): the last permission template they granted with,
so the next grant dialog starts from it. Kept in the database's ``meta`` table, so every dashboard on the
registry sees it. A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import hashlib

from .database import guarded, write_transaction
from .validation import parse_permissions


def _key(actor: str) -> str:
    key = f"template:{actor}"
    return key if len(key) <= 64 else "template:" + hashlib.sha256(actor.encode()).hexdigest()[:40]


class Preferences:
    @guarded
    def last_template(self, actor: str) -> str:
        """The permission template ``actor`` last granted with ("" if none)."""
        row = self.m.Meta.get_or_none(self.m.Meta.key == _key(actor))
        return row.value if row else ""

    @guarded
    def remember_template(self, actor: str, template: str) -> None:
        """Keep ``template`` (``PATTERN=ACCESS`` words, checked by the store's parser) for ``actor``."""
        text = " ".join(f"{p}={a}" for p, a in parse_permissions(template))
        with write_transaction(self.db):
            self._meta(_key(actor), text)
