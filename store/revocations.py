"""Revoked certificates: a certificate the registry signed (from a CSR) is revoked when its user is removed or
disabled, and reinstated when that user is enabled again. The table is the truth; the CRL Mosquitto reads is
written from :meth:`Revocations.revoked_serials` by the service (broker/certificates.py). A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .base import Part
from .database import guarded, run_sql


class Revocations(Part):
    def revoke(self, user: Any, reason: str, actor: str) -> None:
        """Inside the caller's write transaction: the user's signed certificate, if it has one, is revoked."""
        serial = user.certificate_serial
        if serial is None:
            return
        M = self.m.RevokedCertificate
        M.insert(serial=serial, username=user.name, revoked_at=self.base.clock(), reason=reason).on_conflict(
            conflict_target=[M.serial], update={M.reason: reason}).execute()
        self.base.event(actor, "certificate.revoked", user.name, serial=serial, reason=reason)

    def reinstate(self, user: Any, actor: str) -> None:
        """Inside the caller's write transaction: a disabled user's certificate is valid again (enabled)."""
        if user.certificate_serial is None:
            return
        if run_sql(self.db, 'DELETE FROM "revoked_certificates" WHERE "serial" = ? AND "reason" = ?',
                   (user.certificate_serial, "disabled")).rowcount:
            self.base.event(actor, "certificate.reinstated", user.name, serial=user.certificate_serial)

    @guarded
    def revoked_serials(self) -> list[tuple[int, dt.datetime]]:
        """What the CRL must list: (serial, revoked at, UTC) of every revoked certificate, by serial."""
        rows = run_sql(self.db, 'SELECT "serial", "revoked_at" FROM "revoked_certificates"').fetchall()
        return sorted((int(serial, 16), dt.datetime.fromtimestamp(at, dt.UTC)) for serial, at in rows)
