"""Fixtures: a real EmbeddedServer (Debian's Mosquitto supervised, the registry plugin, the relay, the HTTP
API) on ephemeral 127.0.0.1 ports, run in its own thread and event loop so that tests can drive it with
blocking clients (paho, mosquitto_pub/sub subprocesses, urllib)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from broker.plugin_socket import wake
from broker.server import EmbeddedServer
from broker.signing import open_signing_registry
from store import open_registry
from tests.waits import wait_until


class ServerThread:
    def __init__(self, db: str, **server_kwargs) -> None:
        self.db = db
        self.server_kwargs = server_kwargs  # more EmbeddedServer keywords, e.g. relay_interval
        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.srv: EmbeddedServer | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.reg = open_signing_registry(self.db)  # as serve opens it: a CSR granted here is signed
        try:
            async with EmbeddedServer(self.reg, "127.0.0.1:0", "127.0.0.1:0", log=self.lines.append,
                                      **self.server_kwargs) as srv:
                self.srv = srv
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            self.reg.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro, timeout: float = 10):
        """Run a coroutine on the server's loop (e.g. srv.reconcile()) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def mqtt_port(self) -> int:
        return self.srv.mqtt_port

    @property
    def http_port(self) -> int:
        return self.srv.http_port

    @property
    def console(self):
        return self.srv.console

    def applied(self, reg) -> None:
        """Wait until the server applied every change committed so far (through ``reg``, another process's
        Registry) to the broker: e.g. an unlock, which the plugin must know before it reports attempts."""
        from tests.broker.plugin_state import applied

        wait_until(lambda: applied(self.srv, reg), message="the server to apply the changes")

    def add_device(self, reg, name: str, password: str, **kwargs) -> None:
        """A user added as `client-registry user add` does it (the store only: the plugin checks the store's
        own verifier, no password is handed to the server), then the CLI's wake; its broker account exists
        once the server applied the change."""
        reg.add_user(name, password, actor="test", **kwargs)
        wake(self.srv.socket_path)
        wait_until(lambda: self.srv.accounts.has_account(name), message=f"{name}'s broker account")


@pytest.fixture
def admin_reg(db_path):
    """A second Registry on the same file, as the CLI or a dashboard in another process would have."""
    reg = open_registry(db_path)
    yield reg
    reg.close()


class Lines(logging.Handler):
    """The text of every record a logger (and its children) writes, as a list: what a server's log would show."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def broker_log() -> Iterator[list[str]]:
    """The lines the broker's loggers write during the test (a part used without a server)."""
    from broker import logs

    handler = Lines()
    before = logs.ROOT.level
    logs.ROOT.setLevel(logging.INFO)
    logs.ROOT.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logs.ROOT.removeHandler(handler)
        logs.ROOT.setLevel(before)


@pytest.fixture
def server(db_path, admin_reg) -> Iterator[ServerThread]:
    st = ServerThread(db_path).start()
    yield st
    st.stop()


