"""MQTT 3.1.1 packets as bytes: what the load generator writes and reads (CONNECT/CONNACK, SUBSCRIBE/SUBACK,
PUBLISH). No client state machine here: bench/loadgen.py drives raw non-blocking sockets with these.
tests/broker/mqtt_raw.py reuses ``_str``, ``_varint`` and ``packet``."""

from __future__ import annotations

import struct


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, body: bytes, flags: int = 0) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


def connect_packet(client_id: str, username: str | None = None, password: str | None = None, *,
                   clean: bool = True, keepalive: int = 60) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return packet(1, body)


def subscribe_packet(topic: str, qos: int = 0, packet_id: int = 1) -> bytes:
    return packet(8, struct.pack("!H", packet_id) + _str(topic) + bytes([qos]), flags=0x2)


DISCONNECT = b"\xe0\x00"
CONNACK = 0x20
SUBACK = 0x90
PUBLISH = 3


def split_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete packet from the front of ``buf``: [(first byte, body)]."""
    out = []
    pos = 0
    n = len(buf)
    while pos < n:
        mult, length, i = 1, 0, pos + 1
        while True:
            if i >= n:
                del buf[:pos]
                return out
            b = buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            mult *= 128
        if i + length > n:
            break
        out.append((buf[pos], bytes(buf[i:i + length])))
        pos = i + length
    del buf[:pos]
    return out


def parse_publish(head: int, body: bytes) -> tuple[str, bytes, bytes]:
    """(topic, payload, packet id or b'') of a PUBLISH."""
    (n,) = struct.unpack_from("!H", body)
    topic = body[2:2 + n].decode("utf-8", "replace")
    pos = 2 + n
    pid = b""
    if head & 0x06:
        pid = body[pos:pos + 2]
        pos += 2
    return topic, body[pos:], pid
