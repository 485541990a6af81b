"""client-registry server: amqtt broker + registry plugins + event relay + HTTP API in one asyncio loop.

Public API (stable; the dashboard embeds the server with exactly this)::

    from broker.server import EmbeddedServer, ServerError

    async with EmbeddedServer(reg, mqtt_bind="127.0.0.1:0", http_bind="127.0.0.1:0", log=None) as srv:
        srv.mqtt_host, srv.mqtt_port     # real bound address (port 0 in the bind = ephemeral port)
        srv.http_host, srv.http_port     # None when http_bind is None (HTTP API disabled)
        srv.console                      # Credentials(username, password) of the console admin account
        await srv.kick("name")           # disconnect live sessions of a user, returns how many
        ...                              # runs until the block exits; leaving it shuts everything down

* ``reg`` is an open ``store.Registry``; the server never closes it.
* ``mqtt_bind`` / ``http_bind`` are ``"HOST:PORT"`` strings (``"[::1]:1883"``, ``":1883"`` and ``"1883"`` work too).
* ``log`` is ``None`` (silent) or a callable taking one line of text (no newline); it is called from the event
  loop thread, once per decision, and never receives a password; whatever it raises is ignored.
* amqtt's own logging is always silenced (it never reaches the terminal), so an embedding TUI keeps the screen.
* Must be entered inside a running asyncio loop (the embedder's). ``srv.session_count`` counts amqtt sessions.
* Starting (or a malformed bind string) raises :class:`ServerError` (``str(e)`` is one clear line), e.g. when a
  port is already taken or the installed amqtt is not the pinned version; nothing is left running then.
* Keyword-only extras: ``connect_timeout`` (seconds a socket has to send CONNECT, default 10),
  ``relay_interval`` (event poll period, default 0.1 s), ``console`` (create/read the console admin account,
  default True) and ``amqtt_fixes`` (default True; False runs stock amqtt, only for the regression tests).

``serve_main(db, mqtt_bind, http_bind)`` is what ``client-registry serve`` runs: it logs to stderr, stops
cleanly on SIGINT/SIGTERM and returns the process exit code (1 with one line on stderr when it cannot start).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from .amqtt_fixes import (
    CONNECT_TIMEOUT,
    AmqttVersionError,
    ConnectGate,
    RegistryBroker,
    check_amqtt_version,
)
from .http_api import RegisterAPI
from .plugins import PLUGINS_CONFIG, bind_plugins
from .relay import EventRelay

__all__ = ["EmbeddedServer", "ServerError", "parse_bind", "serve_main", "silence_amqtt_logging"]

DEFAULT_MQTT_BIND = "0.0.0.0:1883"
DEFAULT_HTTP_BIND = "127.0.0.1:8080"
ARGON2_NICE = 10


def lower_thread_priority() -> None:
    """argon2 is bulk work: when the cores are busy, the event loop (warm logins, the relay, deliveries) and a
    dashboard embedding the server go first. Linux renices a single thread by its native id."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICE)
    except (AttributeError, OSError):  # not Linux, or not permitted: same work, default priority
        pass


_QUIET_LOGGERS = ("amqtt", "transitions", "aiohttp.access", "aiohttp.server", "websockets")


class ServerError(Exception):
    """The server cannot start; str() is one line meant for the operator."""


def parse_bind(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    host, port = "", ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ServerError(f"invalid address {text!r}: expected [IPv6]:PORT")
        host, port = text[1:end], text[end + 1:].lstrip(":")
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    elif text.isdigit():
        port = text
    else:
        host = text
    try:
        port_no = int(port) if port else default_port
    except ValueError:
        raise ServerError(f"invalid port in {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise ServerError(f"invalid port in {text!r}")
    return host or "0.0.0.0", port_no


def silence_amqtt_logging() -> None:
    """Keep amqtt (and friends) off the terminal whatever the root logger is configured to do."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False
        logger.setLevel(logging.CRITICAL)


def _bind_error(what: str, host: str, port: int, exc: BaseException) -> ServerError:
    err = exc
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        return ServerError(f"cannot listen for {what} on {host}:{port}: address already in use")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(exc)
    return ServerError(f"cannot listen for {what} on {host}:{port}: {reason}")


def _guard_log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """An embedder's log callable must never break a decision: swallow whatever it raises."""
    if log is None:
        return lambda line: None

    def guarded(line: str) -> None:
        try:
            log(line)
        except Exception:
            pass

    return guarded


class EmbeddedServer:
    def __init__(self, reg: Any, mqtt_bind: str = DEFAULT_MQTT_BIND, http_bind: str | None = DEFAULT_HTTP_BIND,
                 log: Callable[[str], None] | None = None, *, connect_timeout: float = CONNECT_TIMEOUT,
                 relay_interval: float = 0.1, console: bool = True, amqtt_fixes: bool = True) -> None:
        self.reg = reg
        self.mqtt_bind = parse_bind(mqtt_bind, 1883)
        self.http_bind = parse_bind(http_bind, 8080) if http_bind is not None else None
        self.log: Callable[[str], None] = _guard_log(log)
        self.connect_timeout = connect_timeout
        self.relay_interval = relay_interval
        self.use_console = console
        self.amqtt_fixes = amqtt_fixes
        self.mqtt_host: str = self.mqtt_bind[0]
        self.mqtt_port: int = 0
        self.http_host: str | None = None
        self.http_port: int | None = None
        self.console: Any = None
        self.broker: Broker | None = None
        self._gate: ConnectGate | None = None
        self._mqtt_server: asyncio.Server | None = None
        self._http_runner: Any = None
        self._relay: EventRelay | None = None
        self._broker_started = False
        # argon2 runs here and nowhere else: at most one hash per core at a time (19 MiB each), and the
        # default executor (HTTP reads) and the relay's own thread never queue behind it.
        self._argon2_pool: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            check_amqtt_version()
        except AmqttVersionError as exc:
            raise ServerError(str(exc)) from None
        silence_amqtt_logging()
        self._argon2_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cr-argon2",
                                               initializer=lower_thread_priority)
        try:
            if self.use_console:
                from store.console import ensure_console_account
                self.console = await asyncio.to_thread(ensure_console_account, self.reg)
            await self._start_broker()
            await self._start_http()
            self._relay = EventRelay(self.reg, self._publish, self.kick, self.log, interval=self.relay_interval)
            await self._relay.start()
        except BaseException:
            await self.stop()
            raise

    async def _start_broker(self) -> None:
        host, port = self.mqtt_bind
        if self.amqtt_fixes:
            config = {"listeners": {"default": {"type": "external"}}, "plugins": dict(PLUGINS_CONFIG)}
            broker = RegistryBroker(config, log=self.log)
        else:
            bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            config = {"listeners": {"default": {"type": "tcp", "bind": bind}}, "plugins": dict(PLUGINS_CONFIG)}
            broker = Broker(config)
        bind_plugins(broker, self.reg, self.log, argon2_pool=self._argon2_pool, wake=self._wake_relay)
        self.broker = broker
        try:
            await broker.start()
        except BrokerError as exc:
            raise _bind_error("MQTT", host, port, exc) from None
        self._broker_started = True
        if self.amqtt_fixes:
            assert isinstance(broker, RegistryBroker)
            self._gate = ConnectGate(broker, connect_timeout=self.connect_timeout, log=self.log)
            try:
                self._mqtt_server = await asyncio.start_server(self._gate.handle, host, port, reuse_address=True)
            except OSError as exc:
                raise _bind_error("MQTT", host, port, exc) from None
            sock = self._mqtt_server.sockets[0]
        else:
            sock = broker._servers["default"].instance.sockets[0]  # stock mode: amqtt owns the listener
        self.mqtt_host, self.mqtt_port = sock.getsockname()[:2]
        self.log(f"mqtt listening on {self.mqtt_host}:{self.mqtt_port}"
                 + ("" if self.amqtt_fixes else " (STOCK amqtt, fixes disabled)"))

    async def _start_http(self) -> None:
        if self.http_bind is None:
            return
        from aiohttp import web

        host, port = self.http_bind
        api = RegisterAPI(self.reg, self.log, argon2_pool=self._argon2_pool, wake=self._wake_relay)
        runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await runner.setup()
        self._http_runner = runner
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise _bind_error("HTTP", host, port, exc) from None
        self.http_host, self.http_port = runner.addresses[0][:2]
        self.log(f"http listening on {self.http_host}:{self.http_port}")

    async def stop(self) -> None:
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._mqtt_server is not None:
            self._mqtt_server.close()
            self._mqtt_server = None
        if self.broker is not None and self._broker_started:
            self._broker_started = False
            try:
                await self.broker.shutdown()
            except Exception as exc:  # shutting down anyway; say so and carry on
                self.log(f"broker shutdown: {exc!r}")
        if self._gate is not None:
            await self._gate.cancel_pending()
            self._gate = None
        if self._argon2_pool is not None:
            # Queued checks are dropped; a running one (tens of ms) is waited for off the loop.
            pool, self._argon2_pool = self._argon2_pool, None
            await asyncio.to_thread(functools.partial(pool.shutdown, wait=True, cancel_futures=True))

    def _wake_relay(self) -> None:
        """Called by the plugins and the HTTP API after a decision of ours that wrote an event."""
        if self._relay is not None:
            self._relay.wake()

    # -- used by the relay and by embedders ------------------------------------------------------------------
    async def _publish(self, topic: str, payload: bytes) -> None:
        if self.broker is not None:
            await self.broker.internal_message_broadcast(topic, payload, 1)

    async def kick(self, username: str) -> int:
        """Disconnect every live MQTT session of ``username``; returns how many were disconnected."""
        if self.broker is None:
            return 0
        kicked = 0
        for client_id, (session, handler) in list(self.broker.sessions.items()):
            if session.username == username and session.transitions.is_connected() and handler is not None:
                await handler.handle_connection_closed()
                kicked += 1
        return kicked

    @property
    def session_count(self) -> int:
        """Sessions amqtt keeps (connected or persistent); used by tests to watch for leaks."""
        return len(self.broker.sessions) if self.broker is not None else 0


# -- the `client-registry serve` command -------------------------------------------------------------------
# Young-generation size for the `serve` process (gc.set_threshold's first argument; Python's default is 700).
# Every MQTT connection leaves ~200 objects in reference cycles (amqtt's Session and its `transitions` state
# machine), which only the cyclic GC frees. With the default threshold a connection's objects are promoted while
# it is still open (50 concurrent connects live ~50 ms), so they die in the oldest generation, and a full
# collection walks the whole heap (150-200 ms each, every ~200 connects: half the CPU of a warm connect). With a
# larger young generation they are freed while still young, at a cost proportional to the garbage only.
SERVE_GC_THRESHOLD = (5_000, 10, 10)


def tune_gc() -> None:
    """Process-wide GC tuning for a process that runs the server and nothing else (`client-registry serve`).

    Not applied by EmbeddedServer itself: an embedding application owns its process's GC policy (the
    dashboard sets its own)."""
    gc.set_threshold(*SERVE_GC_THRESHOLD)


def stderr_log(line: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    sys.stderr.flush()


async def _serve(reg: Any, mqtt_bind: str, http_bind: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with EmbeddedServer(reg, mqtt_bind, http_bind, log=stderr_log) as srv:
            where = getattr(reg, "data_dir", None)
            stderr_log(f"client-registry serving: mqtt {srv.mqtt_host}:{srv.mqtt_port}, "
                       f"http {srv.http_host}:{srv.http_port}, database {getattr(reg, 'location', '?')}"
                       + (f", console credentials in {where}" if where is not None else ""))
            await stop.wait()
            stderr_log("client-registry shutting down")
    except ServerError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    stderr_log("client-registry stopped")
    return 0


def serve_main(db: str | None, mqtt_bind: str = DEFAULT_MQTT_BIND, http_bind: str = DEFAULT_HTTP_BIND) -> int:
    from store import StoreError, open_registry

    try:
        parse_bind(mqtt_bind, 1883)
        parse_bind(http_bind, 8080)
    except ServerError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 2
    try:
        reg = open_registry(db)
    except StoreError as exc:
        sys.stderr.write(f"client-registry: {exc}\n")
        return 1
    tune_gc()
    try:
        return asyncio.run(_serve(reg, mqtt_bind, http_bind))
    finally:
        reg.close()
