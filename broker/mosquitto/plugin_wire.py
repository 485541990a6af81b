"""The registry plugin's formats, Python side (the contract: plugin_protocol.md beside this file).

Accounts go to the plugin as ``P`` records (in the snapshot and in control messages); the plugin answers
control messages with its state (seq, count, digest) and reports attempts, knocks and presence as datagrams.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from store.topics import access_allows

CONTROL_TOPIC = "$CONTROL/client-registry/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
CONTROL_MAGIC = b"CRC2"
ANSWER_MAGIC = b"CRA2"
SNAPSHOT_MAGIC = b"CRS2"
ATTEMPT_MAGIC = b"CRK2"
KNOCKS_MAGIC = b"CRN1"
PRESENCE_MAGIC = b"CRP1"

DISABLED, ADMIN, SERVICE, CERT = 1, 2, 4, 8  # CERT: set by Account.record() when bound to a certificate
READ, WRITE = 1, 2
MAX_ACLS = 4096
UNKNOWN, REKEY, NEW_CERTIFICATE = 0, 1, 2  # an attempt's kind (NEW_CERTIFICATE: right password, other certificate)
PROTOCOLS = {3: "MQTT 3.1", 4: "MQTT 3.1.1", 5: "MQTT 5"}  # an attempt's protocol byte, as logged
FNV_OFFSET, FNV_PRIME, MASK64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


class WireError(ValueError):
    """Bytes that are not one of the formats (str() says where)."""


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def _str(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise WireError("field longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


def access_bits(access: str) -> int:
    """The store's access value ("read", "write", "readWrite") as the plugin's bits: one definition."""
    return (READ if access_allows(access, "subscribe") else 0) | (WRITE if access_allows(access, "publish") else 0)


@dataclass(frozen=True)
class Account:
    """One account as the plugin holds it: ``verifier`` is the store's HMAC-SHA256 (32 raw bytes);
    ``certificate``, when set, the SHA-256 fingerprint (32 raw bytes) of the one client certificate it admits."""

    username: str
    verifier: bytes
    flags: int = 0
    client_id: str = ""
    acls: tuple[tuple[int, str], ...] = ()  # (access bits, pattern), placeholders filled
    certificate: bytes | None = None

    def record(self) -> bytes:
        if len(self.verifier) != 32:
            raise WireError("a verifier is 32 bytes")
        if self.certificate is not None and len(self.certificate) != 32:
            raise WireError("a certificate fingerprint is 32 bytes")
        out = bytearray(b"P")
        out += _str(self.username)
        out.append(self.flags | (CERT if self.certificate is not None else 0))
        out += self.verifier
        if self.certificate is not None:
            out += self.certificate
        out += _str(self.client_id)
        out += struct.pack("!H", len(self.acls))
        for bits, pattern in self.acls:
            out.append(bits)
            out += _str(pattern)
        return bytes(out)

    def __repr__(self) -> str:  # the verifier stays out of logs
        bound = ", certificate" if self.certificate is not None else ""
        return f"Account({self.username!r}, flags={self.flags}, acls={len(self.acls)}{bound})"


def digest_of(records: Iterable[bytes]) -> int:
    """The state digest of a set of accounts (their P records): XOR of each record's FNV-1a 64."""
    value = 0
    for record in records:
        value ^= fnv1a64(record)
    return value


def delete_record(username: str) -> bytes:
    return b"D" + _str(username)


RESET_RECORD = b"R"


def window_record(unlocked_until: float | None) -> bytes:
    return b"W" + struct.pack("!Q", int(unlocked_until * 1000) if unlocked_until else 0)


def control_message(seq: int, records: Iterable[bytes]) -> bytes:
    return CONTROL_MAGIC + struct.pack("!Q", seq) + b"".join(records)


def snapshot(seq: int, unlocked_until: float | None, records: list[bytes], digest: int | None = None) -> bytes:
    """The snapshot file: a header, the records, and a checksum = FNV-1a 64 of the header XOR the records'
    digest (``digest``, when the caller keeps it, makes this O(1) in the records besides joining them)."""
    header = SNAPSHOT_MAGIC + struct.pack("!QQI", seq, int(unlocked_until * 1000) if unlocked_until else 0,
                                          len(records))
    checksum = snapshot_checksum(header, digest_of(records) if digest is None else digest)
    return header + b"".join(records) + struct.pack("!Q", checksum)


def snapshot_checksum(header: bytes, digest: int) -> int:
    return fnv1a64(header[:24]) ^ digest


@dataclass(frozen=True)
class Answer:
    seq: int
    status: int
    state_seq: int
    accounts: int
    digest: int


def parse_answer(payload: bytes) -> Answer:
    if len(payload) != 4 + 8 + 1 + 8 + 4 + 8 or payload[:4] != ANSWER_MAGIC:
        raise WireError("not a plugin answer")
    return Answer(*struct.unpack("!QBQIQ", payload[4:]))


# -- datagrams from the plugin ---------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise WireError("truncated")
        out = self.data[self.offset:self.offset + n]
        self.offset += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def str(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self.offset != len(self.data):
            raise WireError("trailing bytes")


@dataclass(frozen=True)
class Certificate:
    """The client certificate an attempt presented (TLS listener with require_certificate), as the plugin
    read it: already verified by Mosquitto against the listener's CA."""

    fingerprint: bytes  # SHA-256 of the DER
    subject: bytes  # RFC 2253 text, UTF-8 as sent, cut at 1 KiB
    issuer: bytes
    serial: int
    not_before: int  # epoch seconds
    not_after: int


@dataclass(frozen=True)
class Attempt:
    protocol: int
    kind: int  # UNKNOWN, REKEY or NEW_CERTIFICATE
    username: bytes
    password: bytes
    client_id: bytes
    peer: bytes
    certificate: Certificate | None = None

    def __repr__(self) -> str:  # never print the password by accident
        return f"Attempt(username={self.username[:80]!r}, kind={self.kind}, protocol={self.protocol})"


@dataclass(frozen=True)
class Knocks:
    total: int
    names: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True)
class Presence:
    reset: bool
    changes: tuple[tuple[bool, bytes, bytes], ...]  # (logged in, username, client id)


def parse_datagram(data: bytes) -> Attempt | Knocks | Presence:
    """One of the plugin's v2 datagrams; WireError for anything else (including v1's CRK1)."""
    magic = data[:4]
    r = _Reader(data, 4)
    if magic == ATTEMPT_MAGIC:
        protocol, kind = r.u8(), r.u8()
        username, password, client_id, peer = r.str(), r.str(), r.str(), r.str()
        certificate = None
        if r.offset < len(data):  # the optional certificate block
            if r.u8() != ord("C"):
                raise WireError("trailing bytes")
            fingerprint, subject, issuer = r.take(32), r.str(), r.str()
            serial = int.from_bytes(r.str(), "big")
            not_before, not_after = struct.unpack("!qq", r.take(16))
            certificate = Certificate(fingerprint, subject, issuer, serial, not_before, not_after)
        r.end()
        if kind not in (UNKNOWN, REKEY, NEW_CERTIFICATE):
            raise WireError("unknown attempt kind")
        return Attempt(protocol, kind, username, password, client_id, peer, certificate)
    if magic == KNOCKS_MAGIC:
        total = r.u32()
        names = tuple((r.str(), r.u32()) for _ in range(r.u16()))
        r.end()
        return Knocks(total, names)
    if magic == PRESENCE_MAGIC:
        reset = bool(r.u8())
        changes = []
        for _ in range(r.u16()):
            kind = r.u8()
            changes.append((kind == 1, r.str(), r.str()))
        r.end()
        return Presence(reset, tuple(changes))
    raise WireError("not a registry plugin datagram")


def verifier_bytes(hex_verifier: str) -> bytes:
    """The store's hex verifier as the plugin's 32 bytes."""
    data = bytes.fromhex(hex_verifier)
    if len(data) != 32:
        raise WireError("a verifier is 32 bytes")
    return data


def same_digest(a: int, b: int) -> bool:
    return hmac.compare_digest(a.to_bytes(8, "big"), b.to_bytes(8, "big"))


def parse_account(record: bytes) -> Account:
    """A P record back as an Account (the service's own copy, for reading what the plugin holds)."""
    if record[:1] != b"P":
        raise WireError("not an account record")
    r = _Reader(record, 1)
    username = r.str().decode("utf-8", "surrogatepass")
    flags = r.u8()
    verifier = r.take(32)
    certificate = r.take(32) if flags & CERT else None
    client_id = r.str().decode("utf-8", "surrogatepass")
    acls = tuple((r.u8(), r.str().decode("utf-8", "surrogatepass")) for _ in range(r.u16()))
    r.end()
    return Account(username, verifier, flags & ~CERT, client_id, acls, certificate)
