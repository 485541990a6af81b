"""Expiry: a request pending longer than ``RegistryConfig.expire_after`` is closed as expired (its pairing code
cleared). A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

from .base import Base, Part
from .database import guarded

EXPIRE_CHECK_EVERY = 60.0


class Expiry(Part):
    def __init__(self, base: Base) -> None:
        super().__init__(base)
        self._checked_at = 0.0

    def expire_if_due(self, now: float) -> None:
        """The hot path (record_attempt) looks for stale requests at most once a minute."""
        if now - self._checked_at >= EXPIRE_CHECK_EVERY:
            self._checked_at = now
            self.expire_stale()

    @guarded
    def expire_stale(self) -> int:
        R = self.m.Request
        now = self.base.clock()
        cutoff = now - self.base.config.expire_after
        stale = list(R.select(R.id, R.username).where((R.status == "pending") & (R.last_seen < cutoff)))
        if not stale:
            return 0
        with self.base.write():
            for row in stale:
                changed = R.update(status="expired", decided_by="registry", decided_at=now, pairing_code=None,
                                   csr=None).where(
                    (R.id == row.id) & (R.status == "pending")).execute()
                if changed:
                    self.base.event("registry", "request.expired", row.username, request_id=row.id)
        self.base.scrub_secrets()
        return len(stale)
