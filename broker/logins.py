"""The registry plugin's reports decided (plugin_protocol.md, parsed by plugin_wire): attempts of names
Mosquitto does not know go to the registry, a batch per transaction, and each outcome is one log line
(refusals bounded by :class:`~broker.log_text.Refusals`); knock counts and logins/disconnections are
recorded; the CLI's wake makes the relay read the changelog now."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from store.certificates import PresentedCertificate
from store.device_text import quoted

from .log_text import Refusals
from .mosquitto import plugin_wire as wire
from .mosquitto.presence import PresenceTracker
from .plugin_socket import WAKE_MARK

log = logging.getLogger(__name__)

# username, password, client id, peer, source, the certificate presented (TLS)
Attempt = tuple[str, str, str | None, str | None, str, PresentedCertificate | None]
SOURCES = {wire.UNKNOWN: "mqtt", wire.REKEY: "mqtt-rekey", wire.NEW_CERTIFICATE: "mqtt-certificate"}


def presented(block: wire.Certificate | None) -> PresentedCertificate | None:
    """The certificate block of an attempt as the store takes it: the fingerprint as hex, subject and issuer
    decoded from UTF-8 (Mosquitto verified the certificate against the site CA; a byte that is not UTF-8
    becomes U+FFFD rather than failing the batch, and is shown escaped like any device string)."""
    if block is None:
        return None
    return PresentedCertificate(block.fingerprint.hex(), block.subject.decode("utf-8", "replace"),
                                block.issuer.decode("utf-8", "replace"), block.serial,
                                float(block.not_before), float(block.not_after))


class Logins:
    """``await handle(batch)`` is the plugin socket's handler. ``db`` runs the registry's writes (one thread:
    SQLite has one writer); ``later`` is the loop's ``call_later`` (the refusals' summary line);
    ``database_problem()`` is why nothing may be recorded now (or None); ``catch_up()`` applies what the
    registry committed so far to Mosquitto; ``wake(waited_for=)`` asks the relay to read the changelog;
    ``attached``: Mosquitto is the site's own (its restarts come as reports)."""

    def __init__(self, reg: Any, db: Executor, presence: PresenceTracker,
                 later: Callable[[float, Callable[[], None]], Any], *, attached: bool,
                 database_problem: Callable[[], str | None], catch_up: Callable[[], Awaitable[Any]],
                 wake: Callable[..., None]) -> None:
        self.reg = reg
        self.db = db
        self.presence = presence
        self.refusals = Refusals(log, later)  # refused attempts: at most 20 lines a second
        self.attached = attached
        self.database_problem = database_problem
        self.catch_up = catch_up
        self.wake = wake

    async def handle(self, batch: list[Any]) -> None:
        """What the plugin reported (attempts of names Mosquitto does not know, knocks counted while locked,
        logins and disconnections) and the CLI's wakes; the attempts are recorded in one transaction."""
        loop = asyncio.get_running_loop()
        attempts = []
        for item in batch:
            if item is WAKE_MARK:  # another process changed the registry and waits for it
                self.wake(waited_for=True)
            elif isinstance(item, wire.Presence):
                if item.reset and self.attached:  # an attached Mosquitto restarted
                    self.presence.restarted()
                for logged_in, name, session in item.changes:
                    self.presence.change(name.decode("utf-8", "replace"), session.decode("utf-8", "replace"),
                                         logged_in)
            elif isinstance(item, wire.Knocks):
                if not self.database_problem():
                    await loop.run_in_executor(self.db, self.reg.record_knocks,
                                               [(n.decode("utf-8", "replace"), c) for n, c in item.names],
                                               item.total)
            elif isinstance(item, wire.Attempt):
                attempt = self._attempt(item)
                if attempt is not None:
                    attempts.append(attempt)
        if not attempts:
            return
        results = await loop.run_in_executor(self.db, self.reg.login_many, [attempt for _, attempt in attempts])
        if any(r.accepted or (r.attempt is not None and r.attempt.outcome == "granted") for r in results):
            await self.catch_up()  # granted by a rule, or granted meanwhile: the account goes in now
        for (proto, (username, _password, client_id, peer, *_)), result in zip(attempts, results, strict=True):
            self._decided(proto, username, client_id, peer, result)

    def _attempt(self, item: wire.Attempt) -> tuple[str, Attempt] | None:
        proto = wire.PROTOCOLS.get(item.protocol, f"protocol {item.protocol}")
        try:
            username, password = item.username.decode("utf-8"), item.password.decode("utf-8")
            client_id = item.client_id.decode("utf-8") or None
        except UnicodeDecodeError:
            self.refusals(f"mqtt refuse user={quoted(item.username)} ({proto}): not valid UTF-8")
            return None
        peer = item.peer.decode("ascii", "replace") or None
        problem = self.database_problem()
        if problem:
            self.refusals(f"mqtt refuse user={quoted(username)} from {peer or '?'} ({proto}): not recorded, {problem}")
            return None
        return proto, (username, password, client_id, peer, SOURCES[item.kind], presented(item.certificate))

    def _decided(self, proto: str, username: str, client_id: str | None, peer: str | None, result: Any) -> None:
        where = f"user={quoted(username)} client={quoted(client_id)} from {peer or '?'} ({proto})"
        if result.accepted:
            # A user's right password that Mosquitto did not know yet: its account was on its way (a grant
            # not applied when the device knocked); it is there now.
            self.refusals(f"mqtt knock {where}: a user's right password; its account was being applied")
            return
        attempt = result.attempt
        if attempt is not None and attempt.outcome == "granted":
            log.info(f"mqtt admit {where}: {attempt.reason}; its next connect gets in")
            return
        if attempt is not None and attempt.accepted:
            self.wake()
        line = f"mqtt refuse {where}: {result.outcome} ({result.reason})"
        if attempt is not None and attempt.accepted:
            log.info(line)  # a request an operator will see: always its own line
        else:
            self.refusals(line)
