"""Typed messages posted by worker threads: the listener's to the app, the dashboard's workers to their screen.

A worker never touches widgets or sets attributes of a screen: it only posts these (``post_message`` is
thread-safe) and the app or screen reacts on its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.message import Message

from store import BusyError, EventView, PresenceSnapshot, RequestView

if TYPE_CHECKING:  # tui.sync imports RelayedEvent from here
    from .sync import Delta, Page


@dataclass(frozen=True)
class RelayedEvent:
    """One event as relayed on ``$registry/v1/events/<kind>`` (or read from the DB)."""

    id: int
    time: float
    actor: str
    kind: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RelayedEvent:
        detail = payload.get("detail")
        return cls(
            id=int(payload["id"]),
            time=float(payload.get("time") or 0.0),
            actor=str(payload.get("actor") or ""),
            kind=str(payload.get("kind") or ""),
            subject=str(payload.get("subject") or ""),
            detail=detail if isinstance(detail, dict) else {},
        )

    @classmethod
    def from_view(cls, view: EventView) -> RelayedEvent:
        return cls(
            id=int(view.id),
            time=float(view.time),
            actor=str(view.actor or ""),
            kind=str(view.kind),
            subject=str(view.subject or ""),
            detail=dict(view.detail or {}),
        )


class ListenerState(Message):
    """The listener's connection changed.

    ``state`` is one of ``connecting``, ``connected``, ``retrying``, ``refused``, ``stopped``.
    """

    def __init__(self, state: str, detail: str = "", retry_in: float | None = None) -> None:
        super().__init__()
        self.state = state
        self.detail = detail
        self.retry_in = retry_in


class ServiceStatus(Message):
    """The registry service's retained status (``$registry/v1/status``): which broker it drives, and
    whether the service is running or stopped, where its HTTP API serves ("" when it has none) and its TLS
    listener (``mqtts://HOST:PORT``, "" when none). State "absent": the broker carries no such status, so no
    registry service is behind it."""

    def __init__(self, broker: str, state: str, http: str = "", tls: str = "") -> None:
        super().__init__()
        self.broker = broker
        self.state = state
        self.http = http
        self.tls = tls


class EventsBatch(Message):
    """Events received from the relay during the last ~250 ms, in arrival order."""

    def __init__(self, events: list[RelayedEvent]) -> None:
        super().__init__()
        self.events = events


# -- the dashboard's workers: results of store calls, posted from worker threads ---------------------------------
class SyncDelta(Message):
    """What changed in the registry (``tui.sync.Delta``), in event order."""

    def __init__(self, delta: Delta) -> None:
        super().__init__()
        self.delta = delta


class PageLoaded(Message):
    """A window of requests read for paging or a new filter; ``then`` is the cursor move that asked for it."""

    def __init__(self, page: Page, cursor: str | None, then: str | None) -> None:
        super().__init__()
        self.page = page
        self.cursor = cursor
        self.then = then


class WriteDone(Message):
    """A change went through the store. ``op`` names it (``grant``, ``deny``, ``unlock``, ...); ``result`` is
    what the store returned; ``context`` is what the screen attached when it asked; ``applied`` is whether the
    running server applied it to the broker (``Registry.wait_applied``: applied, no_server, timeout)."""

    def __init__(self, op: str, result: object, context: object = None, applied: str = "applied") -> None:
        super().__init__()
        self.op = op
        self.result = result
        self.context = context
        self.applied = applied


class StoreFailed(Message):
    """A store call was refused or the database could not be used; ``busy``: another process holds its lock."""

    def __init__(self, op: str, message: str, busy: bool = False, context: object = None) -> None:
        super().__init__()
        self.op = op
        self.message = message
        self.busy = busy
        self.context = context

    @classmethod
    def of(cls, op: str, exc: Exception, context: object = None) -> StoreFailed:
        """The message for a StoreError raised by ``op`` (busy when it is a BusyError)."""
        return cls(op, str(exc), busy=isinstance(exc, BusyError), context=context)


class DetailsLoaded(Message):
    """The details panel's content, read from the store."""

    def __init__(self, title: Text | str, body: Text) -> None:
        super().__init__()
        self.title = title
        self.body = body


class MatchesLoaded(Message):
    """The pending requests a name pattern matched (Registry.pending_matching)."""

    def __init__(self, pattern: str, requests: list[RequestView]) -> None:
        super().__init__()
        self.pattern = pattern
        self.requests = requests


class PresenceLoaded(Message):
    """Who is online (``store.PresenceSnapshot``), read for the Users view."""

    def __init__(self, snapshot: PresenceSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class GrantDefaults(Message):
    """The operator's last grant template and roles (``Registry.last_template``, ``last_roles``), read on a
    resync to pre-fill the grant dialog; empty when none is remembered."""

    def __init__(self, template: str, roles: list[str]) -> None:
        super().__init__()
        self.template = template
        self.roles = roles


class Writing(Message):
    """The writes worker started a change (``op``), or finished the one it ran (``op`` None); ``since`` is when
    it started (``time.monotonic``), for the "database busy" line."""

    def __init__(self, op: str | None, since: float = 0.0) -> None:
        super().__init__()
        self.op = op
        self.since = since


class Synced(Message):
    """A sync worker finished (``op``: resync, receive, poll, tick), whether or not the store answered."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
