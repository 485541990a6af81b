"""The service's datagram socket: the registry plugin's reports (attempts of names it does not know, knock
counts, presence: plugin_protocol.md, parsed by plugin_wire) and the CLI's wake.

The wake is v1's layout: magic ``CRK1``, one byte (255), then four empty fields (a u16 length 0 each). The receiver
parses every datagram and queues it for one worker, so a flood costs a bounded queue, never unbounded tasks; when the
queue is full the datagram is dropped (the device was refused anyway) and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .mosquitto.plugin_wire import Attempt, Knocks, Presence, WireError, parse_datagram

log = logging.getLogger(__name__)

MAGIC = b"CRK1"
SOCKET_NAME = "sock"  # registry.db -> registry.sock beside it, unless `serve --plugin-socket` says otherwise
QUEUE_LIMIT = 10_000
BATCH = 64  # attempts recorded in one transaction when they queue up (a flood, a storm of new devices)
WAKE = 255  # not a device: "I just changed the registry, apply it now" (see wake)


# The CLI's wake, byte for byte as earlier versions sent it (a v1 datagram of protocol 255, all fields empty).
WAKE_DATAGRAM = MAGIC + bytes([WAKE]) + b"\0\0" * 4


class Wake:
    """"I just changed the registry, apply it now" (another process; see wake)."""

    def __repr__(self) -> str:
        return "Wake()"


WAKE_MARK = Wake()


def wake(path: Path) -> bool:
    """Ask a running service to read the changelog now (after a change made by another process), instead of
    at its next poll; False when no service listens there."""
    return _send(path, WAKE_DATAGRAM)


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
        knock: Wake | Attempt | Knocks | Presence | None
        try:
            knock = parse_datagram(data)  # the plugin's (v2)
        except WireError:
            knock = WAKE_MARK if data == WAKE_DATAGRAM else None
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

    def __init__(self, path: Path, handle: Callable[[list[Any]], Awaitable[None]], *, group: int | None = None) -> None:
        self.path = path
        self.handle = handle
        self.group = group
        self.counters = {"malformed": 0, "dropped": 0, "handled": 0}
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_LIMIT)
        self._transport: asyncio.DatagramTransport | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a socket left by a service that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._bind_private(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self.queue, self.counters), sock=sock)
        self._worker = asyncio.create_task(self._work(), name="plugin-socket")

    def _bind_private(self, sock: socket.socket) -> None:
        """Bind at ``path`` with its final mode from the first moment, without touching the process's umask
        (threads share it): bound in a folder only we can enter, given its mode there, then moved in place.
        The folder is named through /proc/self/fd, so the path bound is never longer than ``path`` (AF_UNIX
        paths are limited to 107 bytes)."""
        private = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        folder = os.open(private, os.O_RDONLY | os.O_DIRECTORY)
        staged = private / "s"
        try:
            sock.bind(f"/proc/self/fd/{folder}/s")
            if self.group is not None:
                os.chown(staged, -1, self.group)
            os.chmod(staged, 0o660 if self.group is not None else 0o600)
            os.replace(staged, self.path)
        finally:
            os.close(folder)
            shutil.rmtree(private, ignore_errors=True)

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
                log.error(f"mqtt knock: {len(batch)} attempt(s) not recorded: {exc}")
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
