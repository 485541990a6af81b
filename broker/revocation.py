"""The CRL the running service keeps for Mosquitto's TLS listener (``crlfile``): rewritten from the store's
``revoked_serials()`` when the service starts (a user removed while no service ran is listed before Mosquitto
starts) and on every ``certificate.revoked``/``certificate.reinstated`` event, then Mosquitto is sent SIGHUP,
which reloads it: the revoked certificate's next handshake is refused.

The CRL is one guard of two: Mosquitto 2.0.11 keeps connections already open at a reload, and an unreadable
CRL at reload fails open (it checks no revocation then), so the relay also removes or disables the account in
the registry plugin, which kicks its sessions, whatever happens to this file. Nothing is written without a
site CA beside the database (no CA: no certificate was signed, nothing to revoke)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from store.errors import StoreError

from .certificates import TlsFiles, revoke

log = logging.getLogger(__name__)

KINDS = frozenset({"certificate.revoked", "certificate.reinstated"})


class RevocationList:
    """``await write()`` rewrites the CRL now; ``await apply(events)`` does when a batch revokes or reinstates
    a certificate. ``reload()`` makes Mosquitto read it (True when it was told); None: a Mosquitto the site
    runs (attach mode), which the site must reload itself. ``group``: Mosquitto's, which reads the file."""

    def __init__(self, reg: Any, files: TlsFiles, db: Executor, *, reload: Callable[[], bool] | None,
                 group: int | None = None) -> None:
        self.reg = reg
        self.files = files
        self.db = db
        self.reload = reload
        self.group = group

    def has_ca(self) -> bool:
        return self.files.ca_cert.exists() and self.files.ca_key.exists()

    async def apply(self, events: list[Any]) -> None:
        kinds = {event.kind for event in events} & KINDS
        if kinds:
            await self.write(", ".join(sorted(kinds)), tell_broker=True)

    async def write(self, why: str = "service start", *, tell_broker: bool = False) -> bool:
        """Rewrite the CRL (True), or say in the log why it could not be."""
        if not self.has_ca():
            if tell_broker:
                log.warning(f"tls: {why}, but no site CA beside the database ({self.files.ca_cert}): no CRL "
                            f"written (the registry plugin has removed or disabled the account)")
            return False
        loop = asyncio.get_running_loop()
        try:
            revoked = await loop.run_in_executor(self.db, self.reg.revoked_serials)
            await loop.run_in_executor(self.db, revoke, self.files, revoked, self.group)
        except (StoreError, OSError) as exc:  # CertificateError is a StoreError
            log.error(f"tls: cannot rewrite {self.files.crl} ({why}): {exc}; the registry plugin has removed or "
                      f"disabled the account, but a certificate's handshake is not refused until it is written")
            return False
        if not tell_broker:
            log.info(f"tls: {self.files.crl} lists {len(revoked)} revoked certificate{'s' * (len(revoked) != 1)}")
            return True
        if self.reload is None:
            log.warning(f"tls: {why}: {self.files.crl} rewritten ({len(revoked)} revoked); the site's Mosquitto "
                        f"reads it when reloaded: run `systemctl reload mosquitto` (or send it SIGHUP) where its "
                        f"TLS listener has `crlfile {self.files.crl}`")
        elif self.reload():
            log.info(f"tls: {why}: {self.files.crl} rewritten ({len(revoked)} revoked), mosquitto reloads it")
        else:
            log.info(f"tls: {why}: {self.files.crl} rewritten ({len(revoked)} revoked); mosquitto reads it when "
                     f"it starts again")
        return True
