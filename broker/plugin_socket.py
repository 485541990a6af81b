"""The registry plugin's datagrams (broker/mosquitto/registry_plugin.c): one per login Mosquitto could not
answer, i.e. a username dynamic security does not know.

Format v1, big-endian: magic ``CRK1``, one byte MQTT protocol version (3, 4 or 5), then four fields, each a
u16 length and that many bytes: username, password, client id, peer address. The receiver parses them and
queues them for one worker, so a flood costs a bounded queue, never unbounded tasks; when the queue is full
the attempt is dropped (the device was refused anyway) and counted.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"CRK1"
SOCKET_NAME = "sock"  # registry.db -> registry.sock beside it, unless `serve --plugin-socket` says otherwise
QUEUE_LIMIT = 10_000
BATCH = 64  # attempts recorded in one transaction when they queue up (a flood, a storm of new devices)
HAND_OVER = 0  # not a device: the CLI handing over a password it just set (see hand_over)
WAKE = 255  # not a device: "I just changed the registry, apply it now" (see wake)
PROTOCOLS = {HAND_OVER: "handed over", 3: "MQTT 3.1", 4: "MQTT 3.1.1", 5: "MQTT 5"}


@dataclass(frozen=True)
class Knock:
    username: bytes
    password: bytes
    client_id: bytes
    peer: bytes
    protocol: int

    def __repr__(self) -> str:  # never print the password by accident
        return f"Knock(username={self.username[:80]!r}, protocol={self.protocol})"


def parse(datagram: bytes) -> Knock | None:
    """A datagram as a Knock, or None when it is not one of ours (wrong magic, truncated, trailing bytes)."""
    if len(datagram) < 5 or datagram[:4] != MAGIC:
        return None
    protocol = datagram[4]
    offset = 5
    fields = []
    for _ in range(4):
        if offset + 2 > len(datagram):
            return None
        (length,) = struct.unpack_from("!H", datagram, offset)
        offset += 2
        if offset + length > len(datagram):
            return None
        fields.append(datagram[offset:offset + length])
        offset += length
    if offset != len(datagram):
        return None
    return Knock(*fields, protocol=protocol)


def encode(username: str, password: str, client_id: str = "", peer: str = "", protocol: int = HAND_OVER) -> bytes:
    out = MAGIC + bytes([protocol])
    for value in (username, password, client_id, peer):
        data = value.encode("utf-8")
        out += struct.pack("!H", len(data)) + data
    return out


def hand_over(path: Path, username: str, password: str) -> bool:
    """Give a running service the password just set for a user (`user add`, `user passwd`), exactly as the
    plugin gives it a device's, so the broker account exists at once; False when no service listens there.
    The password travels over the local socket only, never to disk."""
    return _send(path, encode(username, password))


def wake(path: Path) -> bool:
    """Ask a running service to read the changelog now (after a change made by another process), instead of
    at its next poll; False when no service listens there."""
    return _send(path, encode("", "", protocol=WAKE))


def _send(path: Path, datagram: bytes) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(datagram, str(path))
            return True
        except OSError:
            return False


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue, counters: dict) -> None:
        self.queue = queue
        self.counters = counters

    def datagram_received(self, data: bytes, addr) -> None:
        knock = parse(data)
        if knock is None:
            self.counters["malformed"] += 1
            return
        try:
            self.queue.put_nowait(knock)
        except asyncio.QueueFull:
            self.counters["dropped"] += 1


class PluginSocket:
    """Listens on ``path`` (mode 0600, or 0660 with ``group``) and awaits ``handle(knocks)`` for the datagrams
    that arrived, one batch at a time (at most BATCH)."""

    def __init__(self, path: Path, handle: Callable[[list[Knock]], Awaitable[None]], log: Callable[[str], None],
                 *, group: int | None = None) -> None:
        self.path = path
        self.handle = handle
        self.log = log
        self.group = group
        self.counters = {"malformed": 0, "dropped": 0, "handled": 0}
        self.queue: asyncio.Queue[Knock] = asyncio.Queue(QUEUE_LIMIT)
        self._transport: asyncio.DatagramTransport | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a socket left by a service that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            if self.group is not None:
                os.chown(self.path, -1, self.group)
                os.chmod(self.path, 0o660)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self.queue, self.counters), sock=sock)
        self._worker = asyncio.create_task(self._work(), name="plugin-socket")

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():  # what queued up meanwhile: one go
                batch.append(self.queue.get_nowait())
            try:
                await self.handle(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database error or a bug: one line, and keep serving
                self.log(f"mqtt knock: {len(batch)} attempt(s) not recorded: {exc}")
            self.counters["handled"] += len(batch)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.path.unlink(missing_ok=True)
