"""Fixes for the amqtt 0.12.1 defects that matter for a registry (all of them live here).

amqtt is pinned to exactly ``AMQTT_VERSION``; :func:`check_amqtt_version` refuses to start on anything else,
because every fix below leans on the internals of that release.

How the fixes are arranged (details and evidence in docs/ARCHITECTURE-broker.md):

* :class:`ConnectGate` owns the TCP listener. amqtt is configured with an ``external`` listener and only ever
  receives connections through its public ``Broker.external_connected``. Before handing a socket to amqtt the
  gate reads the CONNECT packet itself and

  1. authenticates it (through the same amqtt auth plugins) *before* amqtt's session table is touched, so a
     refused CONNECT that reuses a live client id cannot take that client over or wipe its subscriptions
     (defect 1), and
  2. answers a refused CONNECT with CONNACK 5 itself, so no amqtt ``Session`` is ever created for it (defect 2:
     stock amqtt leaves every refused session in ``Broker._sessions`` in state "connected", forever);
  3. closes a socket that has not sent a complete CONNECT within ``connect_timeout`` seconds (defect 3);
  4. looks at the protocol level before parsing anything else and answers any level other than 4
     (MQTT 3.1.1), notably MQTT 5, with CONNACK 1 "unacceptable protocol version" (defect 4: stock amqtt
     parses an MQTT 5 CONNECT as 3.1.1, misreads the property bytes as string lengths and waits forever).

  An accepted CONNECT is replayed to amqtt byte for byte (:class:`PrefixedReader`); the gate's decision is
  handed over through :meth:`RegistryBroker._authenticate`, so the device is authenticated exactly once.

* :class:`RegistryBroker` (a ``Broker`` subclass) overrides one hook for defect 5: when a client publishes to
  a ``$``-topic (or an invalid topic) stock amqtt leaves its message loop but never closes the connection, so
  the client stays "connected" yet nothing it sends is served any more. The override turns that into a
  proper disconnect (the normal amqtt disconnect path: handler stopped, socket closed, session cleaned up).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amqtt.adapters import BufferReader, StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.mqtt.connect import ConnectPacket
from amqtt.session import Session

AMQTT_VERSION = "0.12.1"
CONNECT_TIMEOUT = 10.0  # seconds a fresh socket has to deliver its CONNECT (defect 3)
MAX_CONNECT_BYTES = 256 * 1024  # a CONNECT larger than this is not a device registering

CONNACK_UNACCEPTABLE_PROTOCOL = b"\x20\x02\x00\x01"
CONNACK_NOT_AUTHORIZED = b"\x20\x02\x00\x05"
LISTENER = "default"


class AmqttVersionError(RuntimeError):
    pass


def check_amqtt_version() -> str:
    """Refuse to run on any amqtt but the one these fixes were written and tested against."""
    try:
        found = importlib.metadata.version("amqtt")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - dependency is mandatory
        raise AmqttVersionError("amqtt is not installed (need exactly amqtt==%s)" % AMQTT_VERSION) from None
    if found != AMQTT_VERSION:
        raise AmqttVersionError(
            f"amqtt {found} is installed but client-registry needs exactly amqtt=={AMQTT_VERSION} "
            "(its fixes in broker/amqtt_fixes.py depend on that release)"
        )
    return found


class PrefixedReader(StreamReaderAdapter):
    """A StreamReaderAdapter that first serves bytes already read (the CONNECT the gate inspected)."""

    def __init__(self, reader: asyncio.StreamReader, prefix: bytes) -> None:
        super().__init__(reader)
        self._prefix = bytearray(prefix)

    async def read(self, n: int = -1) -> bytes:
        if not self._prefix:
            return await super().read(n)
        if n == -1 or n >= len(self._prefix):
            data = bytes(self._prefix)
            self._prefix.clear()
            if n == -1 or n == len(data):
                return data
            return data + await super().read(n - len(data))
        data = bytes(self._prefix[:n])
        del self._prefix[:n]
        return data


@dataclass(slots=True)
class GateSession:
    """What the gate hands the auth plugins for a CONNECT amqtt has not seen: the fields the plugins read.

    Building a real amqtt ``Session`` here (a ``transitions`` state machine per instance) was 21 % of the CPU
    of a warm connect, and amqtt builds its own for an accepted client anyway. ``gone()`` says whether the
    client has already closed its socket (the auth plugin skips argon2 for such an abandoned CONNECT).
    """

    client_id: str
    clean_session: bool
    username: str | None
    password: str | None = field(repr=False)  # never in a repr, so never in a log line
    remote_address: str
    remote_port: int
    gone: Callable[[], bool] = field(default=lambda: False, repr=False)


class RegistryBroker(Broker):
    """amqtt's Broker with the registry's two hooks: gate decisions (defects 1, 2) and defect 5."""

    def __init__(self, *args: Any, log: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate_decisions: dict[tuple[str, int], bool] = {}
        self._cr_log = log or (lambda line: None)

    async def gate_authenticate(self, session: GateSession) -> bool:
        """Run amqtt's plugin-based authentication for a CONNECT that is not (yet) known to amqtt."""
        return await super()._authenticate(session, self.listeners_config[LISTENER])

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        key = (session.remote_address, session.remote_port)
        decided = self._gate_decisions.pop(key, None)
        if decided is not None:
            return decided
        return await super()._authenticate(session, listener)

    async def _handle_message_delivery(self, client_session: Session, handler: Any, wait_deliver: Any) -> bool:
        keep_going = await super()._handle_message_delivery(client_session, handler, wait_deliver)
        if not keep_going:
            # Defect 5: stock amqtt returns False here (publish to a $-topic or an invalid topic) and leaves the
            # message loop without closing anything. Close it properly: the disconnect waiter fires and the
            # normal disconnect path stops the handler, closes the socket and updates the session.
            message = wait_deliver.result()
            topic = getattr(message, "topic", None)
            self._cr_log(
                f"mqtt disconnect client_id={client_session.client_id!r} user={client_session.username!r}: "
                f"publish to forbidden topic {topic!r}"
            )
            await handler.handle_connection_closed()
            return True
        return keep_going


class ConnectGate:
    """Accepts TCP connections, vets the CONNECT, hands accepted connections to amqtt (see module doc)."""

    def __init__(self, broker: RegistryBroker, *, connect_timeout: float = CONNECT_TIMEOUT,
                 log: Callable[[str], None] | None = None) -> None:
        self.broker = broker
        self.connect_timeout = connect_timeout
        self._log = log or (lambda line: None)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio.start_server callback: one call per TCP connection, lasts as long as the connection."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        key = (peer[0], peer[1])
        try:
            raw = await self._read_connect(reader, writer, peer)
            if raw is None:
                return
            session = await self._parse(raw, peer, lambda: writer.is_closing() or reader.at_eof())
            if session is None:
                await self._close(writer)
                return
            allowed = await self.broker.gate_authenticate(session)
            if not allowed:
                # Answer here: amqtt never sees this client, so no session is created or touched.
                writer.write(CONNACK_NOT_AUTHORIZED)
                await self._close(writer)
                return
            self.broker._gate_decisions[key] = True
            await self.broker.external_connected(PrefixedReader(reader, raw), StreamWriterAdapter(writer), LISTENER)
        except asyncio.CancelledError:
            # Shutdown. This task is the top of its connection (asyncio.start_server's callback), so end it
            # quietly: re-raising would make asyncio print "Exception in callback" to the terminal.
            await self._close(writer)
        except Exception as exc:  # never let one connection take the listener down
            self._log(f"mqtt connection from {peer[0]}:{peer[1]} failed: {exc!r}")
            await self._close(writer)
        finally:
            self.broker._gate_decisions.pop(key, None)
            if task is not None:
                self._tasks.discard(task)

    async def _read_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: tuple[Any, ...]) -> bytes | None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                first = await reader.readexactly(1)
                if first[0] >> 4 != 1:
                    self._log(f"mqtt refuse {peer[0]}:{peer[1]}: first packet is not CONNECT")
                    await self._close(writer)
                    return None
                length_bytes = bytearray()
                length, multiplier = 0, 1
                while True:
                    b = (await reader.readexactly(1))[0]
                    length_bytes.append(b)
                    length += (b & 0x7F) * multiplier
                    if not b & 0x80:
                        break
                    multiplier *= 128
                    if len(length_bytes) >= 4:
                        await self._close(writer)
                        return None
                if length > MAX_CONNECT_BYTES or length < 10:
                    self._log(f"mqtt refuse {peer[0]}:{peer[1]}: CONNECT of {length} bytes")
                    await self._close(writer)
                    return None
                # Defect 4: look at the protocol level before anything else is parsed.
                head = await reader.readexactly(2)
                (name_len,) = struct.unpack("!H", head)
                if name_len + 3 > length:
                    await self._close(writer)
                    return None
                name_and_level = await reader.readexactly(name_len + 1)
                level = name_and_level[-1]
                if level != 4:
                    self._log(f"mqtt refuse {peer[0]}:{peer[1]}: protocol level {level} "
                              "(only MQTT 3.1.1 is served), CONNACK 1")
                    writer.write(CONNACK_UNACCEPTABLE_PROTOCOL)
                    await self._close(writer)
                    return None
                rest = await reader.readexactly(length - 2 - len(name_and_level))
        except TimeoutError:
            self._log(f"mqtt close {peer[0]}:{peer[1]}: no CONNECT within {self.connect_timeout:g} s")
            await self._close(writer)
            return None
        except (asyncio.IncompleteReadError, ConnectionError):
            await self._close(writer)
            return None
        return bytes(first) + bytes(length_bytes) + head + name_and_level + rest

    async def _parse(self, raw: bytes, peer: tuple[Any, ...], gone: Callable[[], bool]) -> GateSession | None:
        try:
            connect = await ConnectPacket.from_stream(BufferReader(raw))
        except Exception:
            self._log(f"mqtt refuse {peer[0]}:{peer[1]}: malformed CONNECT")
            return None
        if connect.variable_header is None or connect.payload is None or connect.variable_header.reserved_flag:
            self._log(f"mqtt refuse {peer[0]}:{peer[1]}: malformed CONNECT")
            return None
        return GateSession(
            client_id=connect.client_id if not connect.payload.client_id_is_random else "",
            clean_session=connect.clean_session_flag,
            username=connect.username,
            password=connect.password,
            remote_address=peer[0],
            remote_port=peer[1],
            gone=gone,
        )

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def cancel_pending(self) -> None:
        """Cancel connections still being vetted or served (used on shutdown)."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
