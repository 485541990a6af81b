"""The registry's accounts as Mosquitto's registry plugin holds them (plugin_protocol.md), kept in step with
the store.

The service keeps a copy of what it gave the plugin (``records``: username -> the account's P record, and
their digest), so that:
- a change (an Event row, from any process) costs the plugin one record per affected user, sent in few control
  messages and acknowledged by sequence number (``apply``); nothing proportional to the number of accounts
  runs on Mosquitto's thread;
- the snapshot the plugin loads at Mosquitto's start is written from it, off the broker's thread, at most about
  a second behind (``write_snapshot``);
- ``reconcile`` compares the plugin's state (count and digest, answered in O(1)) with the copy, and the copy
  with the store, under the same lock as ``apply``: it never races a change in flight.

What a user may do is ``Registry.grants`` (placeholders filled, ``$`` patterns for admins only); its password
is checked against the store's own verifier (HMAC-SHA256 under the server secret, which the plugin reads), so
no password is held anywhere between a device's attempt and its grant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from store.private_files import write_private

from . import plugin_wire as wire
from .config import SERVICE_USER
from .link import BrokerLink, LinkError

log = logging.getLogger(__name__)

# An admin may use every topic and read (never write) the registry's own; `#` never matches `$` topics.
ADMIN_ACLS = ((wire.READ | wire.WRITE, "#"), (wire.READ, "$registry/#"))
SERVICE_ACLS = ((wire.WRITE, "$registry/#"),)  # its control topic is the plugin's own rule
USER_EVENTS = frozenset({"request.granted", "user.added", "user.removed", "user.disabled", "user.enabled",
                         "user.password_changed", "user.certificate_changed", "permission.added", "permission.removed",
                         "user.role_added", "user.role_removed"})
ROLE_EVENTS = frozenset({"role.permission_added", "role.permission_removed"})
WINDOW_EVENTS = frozenset({"registry.unlocked", "registry.locked"})
MESSAGE_BYTES = 128 * 1024  # one control message at most (a full load is many)
SNAPSHOT_EVERY = 1.0


def account_of(grants: Any, verifier_hex: str) -> wire.Account:
    """A registry user as the plugin's account: its grants compiled (sorted, so equal means equal bytes)."""
    acls = {(wire.access_bits(access), pattern) for pattern, access in grants.topics}
    flags = (wire.DISABLED if grants.disabled else 0) | (wire.ADMIN if grants.admin else 0)
    if grants.admin:
        acls.update(ADMIN_ACLS)
    return wire.Account(grants.username, wire.verifier_bytes(verifier_hex), flags, grants.client_id or "",
                        tuple(sorted(acls, key=lambda a: (a[1], a[0]))),
                        bytes.fromhex(grants.certificate) if grants.certificate else None)


def _chunks(records: Iterable[bytes], first: list[bytes] | None = None) -> list[list[bytes]]:
    out: list[list[bytes]] = [list(first or [])]
    size = sum(map(len, out[0]))
    for record in records:
        if size + len(record) > MESSAGE_BYTES and out[-1]:
            out.append([])
            size = 0
        out[-1].append(record)
        size += len(record)
    return [chunk for chunk in out if chunk]


class PluginAccounts:
    """``reg`` is the service's Registry (read in threads), ``link`` the service account's connection,
    ``service`` its credentials (an account of the plugin only, never a registry user)."""

    def __init__(self, reg: Any, link: BrokerLink | None, *, service: Any,
                 snapshot_path: Path, group: int | None = None) -> None:
        self.reg = reg
        self.link = link
        self.service = service
        self.snapshot_path = snapshot_path
        self.group = group  # attach mode: the site's Mosquitto reads it through its group (0640)
        self.records: dict[str, bytes] = {}
        self.digest = 0
        self.window: float | None = None
        self.seq = 0
        self.stale = False  # a change could not be applied: reconcile soon (and nothing counts as applied)
        self.problem: str | None = None  # why the last change or reconcile did not reach Mosquitto (/healthz)
        self._dirty = False
        self._lock = asyncio.Lock()

    # -- reading the store (in threads) ----------------------------------------------------------------------
    def _service_record(self) -> bytes:
        verifier = self.reg.verifier_of(SERVICE_USER, self.service.password)
        return wire.Account(SERVICE_USER, wire.verifier_bytes(verifier), wire.SERVICE, "", SERVICE_ACLS).record()

    def _read(self, names: list[str] | None) -> tuple[dict[str, bytes | None], float | None]:
        """The records of these users (None: removed), or of everyone, and the window, as the store says now."""
        grants = self.reg.all_grants() if names is None else self.reg.grants_of_users(names)
        verifiers = self.reg.broker_verifiers(None if names is None else list(grants))
        out: dict[str, bytes | None] = {} if names is None else dict.fromkeys(names)
        for name, g in grants.items():
            if name == SERVICE_USER or name not in verifiers:  # never a registry user's (store/validation.py)
                continue
            out[name] = account_of(g, verifiers[name]).record()
        out[SERVICE_USER] = self._service_record()
        return out, self.reg.status(expire=False).unlocked_until

    # -- the copy ----------------------------------------------------------------------------------------------
    def _put(self, name: str, record: bytes | None) -> None:
        old = self.records.pop(name, None)
        if old is not None:
            self.digest ^= wire.fnv1a64(old)
        if record is not None:
            self.records[name] = record
            self.digest ^= wire.fnv1a64(record)
        self._dirty = True

    async def load(self) -> int:
        """Build the copy from the store (at start, before the snapshot is written); returns the accounts."""
        records, window = await asyncio.to_thread(self._read, None)
        self.records, self.digest, self.window = {}, 0, window
        for name, record in records.items():
            self._put(name, record)
        return len(self.records)

    def snapshot_bytes(self) -> bytes:
        return wire.snapshot(self.seq, self.window, list(self.records.values()), self.digest)

    async def write_snapshot(self, force: bool = False) -> None:
        """Write the snapshot if anything changed (atomically, 0600), off the event loop."""
        if not (self._dirty or force):
            return
        self._dirty = False
        data = self.snapshot_bytes()
        await asyncio.to_thread(write_private, self.snapshot_path, data, group=self.group)

    async def run_snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)
            try:
                await self.write_snapshot()
            except OSError as exc:
                self._dirty = True
                log.error(f"plugin: cannot write the snapshot {self.snapshot_path}: {exc.strerror or exc}")

    # -- talking to the plugin ---------------------------------------------------------------------------------
    async def _send(self, messages: list[list[bytes]]) -> wire.Answer | None:
        assert self.link is not None
        answer = None
        for records in messages:
            self.seq += 1
            answer = await self.link.control(self.seq, records)
        return answer

    async def _query(self) -> wire.Answer:
        assert self.link is not None
        answer = await self.link.control(self.seq + 1, [])
        self.seq = max(self.seq + 1, answer.state_seq)
        return answer

    def _agrees(self, answer: wire.Answer) -> bool:
        return answer.accounts == len(self.records) and wire.same_digest(answer.digest, self.digest)

    async def apply(self, events: list[Any]) -> int:
        """Follow changelog events: one record per affected user, in as few messages as fit; returns how
        many records were sent. LinkError when Mosquitto did not take them (``stale`` is set)."""
        names: set[str] = set()
        window = False
        for event in events:
            if event.kind in USER_EVENTS and event.subject:
                names.add(event.subject)
            elif event.kind in ROLE_EVENTS and event.subject:
                names.update(await asyncio.to_thread(self.reg.role_members, event.subject))
            elif event.kind in WINDOW_EVENTS:
                window = True
        if not names and not window:
            return 0
        async with self._lock:
            try:
                found, until = await asyncio.to_thread(self._read, sorted(names))
            except Exception:
                self.stale = True  # not applied: the relay must not report it applied (read your writes)
                raise
            found.pop(SERVICE_USER, None)
            changes = {n: r for n, r in found.items() if self.records.get(n) != r}
            records = [r if r is not None else wire.delete_record(n) for n, r in changes.items()]
            if window and until != self.window:
                records.insert(0, wire.window_record(until))
            if not records:
                return 0
            try:
                await self._send(_chunks(records))
            except LinkError as exc:
                self.stale, self.problem = True, f"Mosquitto is not taking the registry's changes: {exc}"
                raise
            self.problem = None
            for name, record in changes.items():
                self._put(name, record)
            if window:
                self.window, self._dirty = until, True
            return len(records)

    async def reconcile(self) -> int:
        """Make the plugin agree with the store; returns how many corrections were made (each is logged)."""
        async with self._lock:
            records, until = await asyncio.to_thread(self._read, None)
            fixes = 0
            for name in sorted(set(records) | set(self.records)):
                if records.get(name) != self.records.get(name):
                    what = ("added" if name not in self.records else
                            "removed" if records.get(name) is None else "updated")
                    log.warning(f"reconcile: account {name!r} {what} (the copy had drifted from the store)")
                    fixes += 1
            if until != self.window:
                fixes += 1
            try:
                answer = await self._query()
                if fixes == 0 and self._agrees(answer):
                    self.problem, self.stale = None, False
                    return 0
                if fixes == 0:
                    log.warning("reconcile: Mosquitto's accounts differed from the service's copy "
                             f"({answer.accounts} vs {len(self.records)} accounts, or their digest); reloading")
                self.records, self.digest, self.window = {}, 0, until
                for name, record in records.items():
                    self._put(name, record)
                began = time.monotonic()
                loaded = await self._send(_chunks(self.records.values(), [wire.window_record(until)]))
                if loaded is None or not self._agrees(loaded):
                    # The plugin holds accounts the registry does not: start it afresh.
                    loaded = await self._send(_chunks(self.records.values(),
                                                      [wire.RESET_RECORD, wire.window_record(until)]))
                if loaded is None or not self._agrees(loaded):
                    raise LinkError("the registry plugin's state still differs after a full load")
                log.info(f"plugin: {len(self.records)} accounts loaded into Mosquitto in "
                         f"{(time.monotonic() - began) * 1000:.0f} ms")
                self.problem, self.stale = None, False  # only now: the plugin holds what the store says
                return max(fixes, 1)
            except LinkError as exc:
                self.stale, self.problem = True, f"Mosquitto is not taking the registry's changes: {exc}"
                raise

    def has_account(self, username: str) -> bool:
        return username in self.records
