"""Keeping the dashboard's picture of the registry in step with the database. No widgets, no Textual.

``EventSync`` runs in the dashboard's worker threads and answers with plain data (``Delta``) that the screen
applies to its tables on the UI thread:

- ``resync(window)``: everything, from the database (on start and whenever the listener (re)connects);
- ``receive(events, window)``: events relayed over MQTT, applied in id order; a gap in the ids (or events
  older than the last one seen) means reading what is missing from the database instead;
- ``poll(window)``: every event after the last one seen, from the database (after a local change, or each
  second while no broker relays events).

Every read here is read-only (``expire=False``): a periodic refresh never writes. The methods are serialised by
a lock, so deltas are computed (and posted) in event order whatever thread calls them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from store import Registry, RequestView, RoleView, Status, UserView

from .messages import RelayedEvent

AUDIT_BACKLOG = 500  # events loaded on (re)sync


@dataclass(frozen=True)
class Window:
    """What the requests table holds, as the worker needs to know it: ``size`` rows from ``start`` matching
    ``match``."""

    start: int = 0
    size: int = 1000
    match: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[RequestView]
    total: int
    offset: int
    match: str | None


@dataclass
class Delta:
    """What changed since the last delta. ``full``: replace every table (a resync)."""

    last_event_id: int
    events: list[RelayedEvent] = field(default_factory=list)
    requests: dict[str, RequestView] = field(default_factory=dict)  # changed requests by id (as str)
    gone: list[str] = field(default_factory=list)  # requests that no longer exist
    total: int | None = None  # requests matching the window's filter
    page: Page | None = None  # set when the window must be read again (or on a resync)
    users: list[UserView] | None = None  # every user, when any changed
    roles: list[RoleView] | None = None  # every role, when any (or its members) changed
    status: Status | None = None
    full: bool = False

    @property
    def empty(self) -> bool:
        return not self.events and not self.full


def read_page(reg: Registry, window: Window) -> Page:
    """One window of requests; when it fell off the end (rows were removed), the last one."""
    items, total = reg.request_page(window.size, window.start, match=window.match, expire=False)
    offset = window.start
    if not items and offset > 0 and total:
        offset = max(0, total - window.size)
        items, total = reg.request_page(window.size, offset, match=window.match, expire=False)
    return Page(items, total, offset, window.match)


class EventSync:
    def __init__(self, reg: Registry, backlog: int = AUDIT_BACKLOG, on_delta: Callable[[Delta], None] | None = None):
        self.reg = reg
        self.backlog = backlog
        self.last_event_id = 0
        self.on_delta = on_delta  # called (still under the lock) with every delta, so they are posted in order
        self.synced = False  # until the first resync, events and polls are left to it
        self._lock = threading.Lock()

    def _done(self, delta: Delta | None) -> Delta | None:
        if delta is not None and self.on_delta is not None:
            self.on_delta(delta)
        return delta

    def resync(self, window: Window) -> Delta:
        with self._lock:
            reg = self.reg
            last = reg.last_event_id()  # read first: anything later arrives as an event
            page = read_page(reg, window)
            users = reg.users()
            roles = reg.roles()
            events = [RelayedEvent.from_view(e) for e in reg.events(since=max(0, last - self.backlog))
                      if e.id <= last]
            self.last_event_id = last
            self.synced = True
            delta = Delta(last, events=events, page=page, total=page.total, users=users, roles=roles,
                          status=reg.status(expire=False), full=True)
            return self._done(delta)

    def receive(self, events: Iterable[RelayedEvent], window: Window) -> Delta | None:
        with self._lock:
            fresh = sorted((e for e in events if e.id > self.last_event_id), key=lambda e: e.id)
            if not fresh or not self.synced:
                return None
            expected = self.last_event_id + 1
            if not all(e.id == expected + i for i, e in enumerate(fresh)):
                fresh = self._from_db()  # a gap: some events were not relayed to us
            return self._done(self._delta(fresh, window))

    def poll(self, window: Window, status: bool = True) -> Delta | None:
        """What happened since the last event seen; with ``status``, a delta (with the status) even when no
        event happened."""
        with self._lock:
            if not self.synced:
                return None
            fresh = self._from_db()
            if not fresh and not status:
                return None
            return self._done(self._delta(fresh, window))

    def status(self) -> Delta:
        """Only the registry's status (the header), no event."""
        with self._lock:
            return self._done(Delta(self.last_event_id, status=self.reg.status(expire=False)))

    def _from_db(self) -> list[RelayedEvent]:
        return [RelayedEvent.from_view(e) for e in self.reg.events(since=self.last_event_id)]

    def _delta(self, events: list[RelayedEvent], window: Window) -> Delta:
        reg = self.reg
        delta = Delta(self.last_event_id, events=events)
        request_ids: set[int] = set()
        reload_requests = users_changed = roles_changed = False
        for ev in events:
            kind = ev.kind
            if kind.startswith("request."):
                rid = ev.detail.get("request_id")
                if kind in ("request.conflict", "request.expired") or not isinstance(rid, int):
                    reload_requests = True  # touches rows the event does not name
                else:
                    request_ids.add(rid)
                if kind == "request.granted":
                    users_changed = True
            elif kind.startswith(("user.", "permission.")):
                users_changed = True
            elif kind.startswith("role."):
                roles_changed = True
        if reload_requests:
            delta.page = read_page(reg, window)
            delta.total = delta.page.total
        elif request_ids:
            for rid in request_ids:
                view = reg.request(rid)
                if view is None:
                    delta.gone.append(str(rid))
                else:
                    delta.requests[str(rid)] = view
            delta.total = reg.request_count(window.match)
        if users_changed:
            delta.users = reg.users()
        if users_changed or roles_changed:  # a user's roles, a grant or a removal change the member counts
            delta.roles = reg.roles()
        delta.status = reg.status(expire=False)
        if events:
            self.last_event_id = max(self.last_event_id, max(e.id for e in events))
            delta.last_event_id = self.last_event_id
        return delta
