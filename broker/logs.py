"""The server's log: stdlib ``logging``, a logger per module under ``broker``, and where its lines go.

Whoever runs a server decides: ``serve`` prints every line on stderr, stamped (``cli``'s serve command,
:func:`broker.server.serve_main`); an embedder passes ``EmbeddedServer(log=callable)`` and gets the text of
each line of that server (:class:`ServerLines`: the dashboard keeps them in memory, never on its terminal).
Device strings are escaped where a line is written (``broker.log_text``), so every destination gets them
escaped."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable

ROOT = logging.getLogger("broker")

# The server whose code is running: set by EmbeddedServer.start(), inherited by the tasks and threads
# (asyncio.to_thread) it starts; unset in threads of no server in particular (paho's).
serving: contextvars.ContextVar[object | None] = contextvars.ContextVar("broker_serving", default=None)


def enable() -> None:
    """Let INFO lines reach the handlers (the root logger's default WARNING would drop them)."""
    if ROOT.level == logging.NOTSET or ROOT.level > logging.INFO:
        ROOT.setLevel(logging.INFO)


class ServerLines(logging.Handler):
    """The lines of one server (and of no server in particular), their text only, handed to ``sink``; whatever
    ``sink`` raises is ignored: an embedder's log must never break a decision."""

    def __init__(self, sink: Callable[[str], None], owner: object) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.owner = owner

    def filter(self, record: logging.LogRecord) -> bool:
        return serving.get() in (None, self.owner) and bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # an embedder's log must never break a decision
            self.sink(record.getMessage())
