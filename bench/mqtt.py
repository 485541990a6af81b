"""A minimal asyncio MQTT 3.1.1 client: just CONNECT/CONNACK, SUBSCRIBE and incoming PUBLISH.

Lighter on CPU than paho (no thread, no per-client state machine), which matters because the load generator
shares a 2-core machine with the server under test.
"""

from __future__ import annotations

import asyncio
import struct
import time


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


DISCONNECT = b"\xe0\x00"


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(1)
    mult, length = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length += (b & 0x7F) * mult
        if not b & 0x80:
            break
        mult *= 128
    body = await reader.readexactly(length) if length else b""
    return head[0], body


class Conn:
    """One MQTT connection. ``rc`` is the CONNACK return code (None when none arrived)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.rc: int | None = None

    async def close(self, disconnect: bool = True) -> None:
        try:
            if disconnect:
                self.writer.write(DISCONNECT)
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def connect(host: str, port: int, client_id: str, username: str | None, password: str | None, *,
                  clean: bool = True, timeout: float = 30.0) -> Conn:
    """Open a socket, send CONNECT, wait for CONNACK. Raises OSError/TimeoutError on transport failure."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    conn = Conn(reader, writer)
    writer.write(connect_packet(client_id, username, password, clean=clean))
    try:
        head, body = await asyncio.wait_for(read_packet(reader), timeout)
    except (asyncio.IncompleteReadError, ConnectionError):
        conn.rc = None
        return conn
    conn.rc = body[1] if head == 0x20 and len(body) >= 2 else None
    return conn


async def connect_once(host: str, port: int, client_id: str, username: str | None, password: str | None,
                       timeout: float = 30.0) -> int | None:
    """CONNECT, CONNACK, DISCONNECT, close: returns the return code (None if none)."""
    conn = await connect(host, port, client_id, username, password, timeout=timeout)
    await conn.close(disconnect=conn.rc == 0)
    return conn.rc


class Subscriber:
    """Subscribes (QoS 0) and timestamps each incoming PUBLISH as (monotonic time, topic, payload)."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, bytes]] = []
        self._conn: Conn | None = None
        self._task: asyncio.Task | None = None
        self.on_message = None

    async def start(self, host: str, port: int, username: str, password: str, topic: str) -> None:
        self._conn = await connect(host, port, f"bench-sub-{time.monotonic_ns()}", username, password)
        if self._conn.rc != 0:
            raise RuntimeError(f"subscriber refused: CONNACK {self._conn.rc}")
        self._conn.writer.write(packet(8, struct.pack("!H", 1) + _str(topic) + b"\x00", flags=0x2))
        head, body = await asyncio.wait_for(read_packet(self._conn.reader), 10)
        if head != 0x90 or body[-1] == 0x80:
            raise RuntimeError(f"subscribe refused: {head:#x} {body!r}")
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        reader = self._conn.reader
        try:
            while True:
                head, body = await read_packet(reader)
                now = time.monotonic()
                if head >> 4 != 3:
                    continue
                (n,) = struct.unpack_from("!H", body)
                topic = body[2:2 + n].decode()
                pos = 2 + n + (2 if head & 0x06 else 0)
                if head & 0x06:  # QoS 1: acknowledge
                    self._conn.writer.write(b"\x40\x02" + body[2 + n:pos])
                self.messages.append((now, topic, body[pos:]))
                if self.on_message is not None:
                    self.on_message(now, topic, body[pos:])
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
