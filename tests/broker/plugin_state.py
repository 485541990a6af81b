"""What the registry plugin holds, read through the service's copy of it (``srv.accounts``), and what it should
hold, read from the store: the broker tests' one way of asking "is it applied in Mosquitto?".

The service's copy is what the plugin acknowledged (a record enters the copy only after the plugin answered
the control message that carried it); ``plugin_agrees`` asks the plugin itself (a query: its count and
digest) when a test has drifted the plugin by hand (``by_hand``)."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.plugin_accounts import account_of

READ, WRITE, READ_WRITE = wire.READ, wire.WRITE, wire.READ | wire.WRITE
BITS = {"read": READ, "write": WRITE, "readWrite": READ_WRITE}
_hand_seq = itertools.count(1)


# -- what the plugin holds (the service's acknowledged copy) -----------------------------------------------------
def account(server, name: str) -> wire.Account | None:
    """The user's account as the plugin holds it, or None when it has none."""
    record = server.srv.accounts.records.get(name)
    return None if record is None else wire.parse_account(record)


def acls(server, name: str) -> set[tuple[int, str]] | None:
    """The account's ACLs as (access bits, pattern), or None when there is no account."""
    found = account(server, name)
    return None if found is None else set(found.acls)


def patterns(server, name: str) -> set[str]:
    """Every pattern in the account's ACLs (empty when there is no account)."""
    return {pattern for _, pattern in acls(server, name) or ()}


# -- what it should hold (the store) -----------------------------------------------------------------------------
def expected_account(reg, name: str) -> wire.Account | None:
    """The account the plugin must hold for this user, from the store now (None: the user does not exist)."""
    reg.invalidate(name)  # another process may have changed it: read the database, not this Registry's cache
    grants = reg.grants(name)
    if grants is None:
        return None
    return account_of(grants, reg.broker_verifiers([grants.username])[grants.username])


def expected_acls(reg, name: str) -> set[tuple[int, str]] | None:
    found = expected_account(reg, name)
    return None if found is None else set(found.acls)


def in_step(server, reg, name: str) -> bool:
    """The plugin holds exactly the account the store says (flags, verifier, client id, ACLs), or none."""
    return account(server, name) == expected_account(reg, name)


def applied(srv, reg) -> bool:
    """The server (an EmbeddedServer) applied every change committed so far, through any Registry, to the
    plugin (its relay handled the changelog up to ``reg``'s last event)."""
    relay = srv._relay
    return relay is not None and relay.last_id >= reg.last_event_id()


# -- talking to the plugin by hand -------------------------------------------------------------------------------
def by_hand(server, *records: bytes) -> wire.Answer:
    """Send records to the plugin ourselves, bypassing the service's copy (which then disagrees with it), with
    a sequence number above any the service used; no records: a query. Returns the plugin's answer."""
    seq = server.srv.accounts.seq + 1_000_000 + next(_hand_seq)
    return server.call(server.srv.link.control(seq, list(records)))


def plugin_agrees(server) -> bool:
    """The plugin's own count and digest (queried) are the service copy's, and the copy's digest is its
    records' (so the plugin holds exactly those records, byte for byte)."""
    answer = by_hand(server)
    copy = server.srv.accounts
    return (answer.status == 0 and answer.accounts == len(copy.records)
            and answer.digest == copy.digest == wire.digest_of(copy.records.values()))


def record_for(name: str, verifier_hex: str, *, flags: int = 0, client_id: str = "",
               acls: tuple[tuple[int, str], ...] = ()) -> bytes:
    return wire.Account(name, wire.verifier_bytes(verifier_hex), flags, client_id, acls).record()


# -- the snapshot file -------------------------------------------------------------------------------------------
def read_snapshot(path: Path) -> tuple[int, int, dict[str, bytes]]:
    """(state seq, unlocked until ms, username -> P record) of a snapshot file; AssertionError if it is not
    one (plugin_protocol.md, "Snapshot file")."""
    data = Path(path).read_bytes()
    assert data[:4] == wire.SNAPSHOT_MAGIC, "not a snapshot"
    seq, until, count = struct.unpack_from("!QQI", data, 4)
    at, end = 4 + 20, len(data) - 8
    records: dict[str, bytes] = {}

    def skip_str(offset: int) -> int:
        return offset + 2 + struct.unpack_from("!H", data, offset)[0]

    for _ in range(count):
        start = at
        at = skip_str(at + 1) + 1 + 32  # op, username, flags, verifier
        at = skip_str(at)  # client id
        (n,) = struct.unpack_from("!H", data, at)
        at += 2
        for _ in range(n):
            at = skip_str(at + 1)
        assert at <= end, "snapshot truncated"
        record = data[start:at]
        records[wire.parse_account(record).username] = record
    assert at == end and len(records) == count, "snapshot trailing bytes or duplicate names"
    checksum = wire.snapshot_checksum(data[:24], wire.digest_of(records.values()))
    assert struct.unpack("!Q", data[-8:])[0] == checksum, "snapshot checksum"
    return seq, until, records
