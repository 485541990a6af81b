"""Running the server (broker/) inside the dashboard's process, on its own thread and event loop.

The dashboard draws on the terminal from its own asyncio loop; the embedded
broker gets a separate thread and loop so a flood of CONNECTs cannot stall
key handling. It opens its own Registry on the same database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from typing import Any


class EmbeddedBroker:
    """``EmbeddedBroker(open_reg, mqtt_bind, http_bind).start()`` … ``.stop()``."""

    def __init__(self, open_reg: Callable[[], Any], mqtt_bind: str, http_bind: str | None,
                 *, start_timeout: float = 30.0) -> None:
        self.open_reg = open_reg
        self.mqtt_bind = mqtt_bind
        self.http_bind = http_bind
        self.start_timeout = start_timeout
        # The server's lines (broker/logs.py routes them here), never printed: the TUI owns the tty.
        self.log: collections.deque[str] = collections.deque(maxlen=1000)
        self.srv: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        from broker.server import EmbeddedServer  # only needed when embedding

        self._stop = asyncio.Event()
        reg = None
        try:
            reg = self.open_reg()
            async with EmbeddedServer(reg, self.mqtt_bind, self.http_bind, log=self.log.append,
                                      outlive=False) as srv:
                self.srv = srv
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the starter
            self._error = exc
            self._ready.set()
        finally:
            if reg is not None:
                reg.close()

    def start(self) -> EmbeddedBroker:
        self._thread.start()
        self._ready.wait(self.start_timeout)
        if self._error is not None:
            raise self._error
        if self.srv is None:
            raise RuntimeError("embedded broker did not start in time")
        return self

    @property
    def mqtt_port(self) -> int:
        return self.srv.mqtt_port

    @property
    def http_port(self) -> int | None:
        return self.srv.http_port

    @property
    def console(self) -> Any:
        return self.srv.console

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
