"""Hand-built MQTT packets over a plain socket, for the protocol corners real clients do not reach."""

from __future__ import annotations

import socket
import struct

# The packet encoding is the benchmarks' lightweight client's: one copy of it.
from bench.mqtt import _str, _varint, packet


def connect(client_id: str, username: str | None = None, password: str | None = None, *,
            clean: bool = True, keepalive: int = 60, level: int = 4) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        body += _varint(5) + bytes([0x11]) + struct.pack("!I", 0)  # properties: session expiry interval 0
    body += _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return packet(1, body)


def publish(topic: str, payload: bytes = b"x") -> bytes:
    return packet(3, _str(topic) + payload)


def subscribe(packet_id: int, topic_filter: str, qos: int = 0) -> bytes:
    return packet(8, struct.pack("!H", packet_id) + _str(topic_filter) + bytes([qos]), flags=0x2)


def open_socket(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_connack(sock: socket.socket, timeout: float = 3.0) -> int | None:
    """The CONNACK return code, or None if nothing (or not a CONNACK) arrived within timeout."""
    sock.settimeout(timeout)
    try:
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                return None
            data += chunk
    except (TimeoutError, ConnectionError):
        return None
    if data[0] != 0x20:
        return None
    return data[3]


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the server closes the connection within timeout (anything it sends first is drained)."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
