"""The event relay: Event rows (written by any process) -> the broker's projection, then MQTT messages.

It polls ``Registry.events(since=...)`` every ``interval`` seconds (default 0.1 s, so an event written by another
process is out well within 250 ms of its commit), and at once when :meth:`EventRelay.wake` is called (the plugins and
the HTTP API call it after a decision of this process that wrote an event). The reads run in the relay's own one-thread
executor. For each event it drops the Registry's cached answers the event changed (``invalidate_for``), lets the broker
apply the batch (``apply``: one batch of account changes for the registry plugin; revocation disconnects there) and then
publishes each with QoS 1 as JSON to ``$registry/v1/events/<kind>``: when a dashboard sees ``request.granted`` the
device's next CONNECT already succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from store.event_topics import EVENTS_PREFIX

log = logging.getLogger(__name__)

NOTE_UNDER_LOAD = 0.05
NOTE_EVERY = 2.0  # seconds: "this server is alive and has applied up to event N" (Registry.note_applied)
_SECRET_WORDS = ("password", "hash", "hmac", "fingerprint", "secret")


def _scrub(value: Any) -> Any:
    """Belt and braces: the store never puts secrets in details; drop anything that is named like one."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if not any(word in str(k).lower() for word in _SECRET_WORDS)}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def event_payload(event: Any) -> bytes:
    body = {
        "id": event.id,
        "time": event.time,
        "actor": event.actor,
        "kind": event.kind,
        "subject": event.subject,
        "detail": _scrub(event.detail or {}),
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode()


class EventRelay:
    def __init__(self, reg: Any, publish: Callable[[str, bytes], None],
                 apply: Callable[[list[Any]], Awaitable[Any]],
                 interval: float = 0.1, executor: Executor | None = None,
                 in_step: Callable[[], bool] = lambda: True) -> None:
        self.reg = reg
        self.publish = publish
        self.apply = apply
        self.interval = interval
        self.last_id = 0
        # Read your writes: the last event the broker really has. After a batch the broker did not take,
        # nothing counts as applied until ``in_step`` (the plugin agrees with the store again: a reconcile).
        self.applied_id = 0
        self.in_step = in_step
        self._task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._own_pool = executor is None
        self._pool: Executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="cr-relay")
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()  # one reader of the changelog at a time: events are handled in id order
        self._noted_at = 0.0
        self._housekept_at = 0.0
        self._unnoted = False  # events applied since the last note
        self._noted_id = 0
        self._woken = False  # another process (or this one) asked: note at once

    def wake(self, *, waited_for: bool = False) -> None:
        """Read the changelog now instead of at the next poll (call on the event loop, after the commit).
        ``waited_for``: another process waits to read its write (say what is applied at once)."""
        self._woken = self._woken or waited_for
        self._wake.set()

    async def _read(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, **kwargs))

    async def start(self, since: int | None = None) -> None:
        """Follow the changelog after event ``since`` (default: the newest now). A server passes the newest
        id it saw before its full load of the accounts: an event committed between that read and this start
        is applied too, not left for the next reconcile while `wait_applied` would call it applied."""
        self.last_id = await self._read(self.reg.last_event_id) if since is None else since
        self.applied_id = self.last_id
        self._task = asyncio.create_task(self._run(), name="client-registry-relay")
        self._beat_task = asyncio.create_task(self._beat(), name="client-registry-alive")

    async def stop(self) -> None:
        for task in (self._task, self._beat_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._beat_task = None
        if self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        failing = False
        while True:
            self._wake.clear()  # before the read: a wake during the read makes the next wait return at once
            try:
                handled = await self.catch_up()
                await self._housekeep()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database briefly locked / unreachable: say so once, keep trying
                if not failing:
                    log.warning(f"relay cannot read events: {exc}")
                failing = True
                await asyncio.sleep(1.0)
                continue
            if not handled:
                try:
                    async with asyncio.timeout(min(self.interval, NOTE_EVERY)):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _beat(self) -> None:
        """That this server is alive, noted on its own when catch_up has not for NOTE_EVERY s: catch_up may
        wait up to 10 s for the plugin to take a batch (COMMAND_TIMEOUT), or behind the housekeeping in the
        relay's thread, and a server silent for SERVER_ALIVE (5 s) looks gone to every other process."""
        while True:
            await asyncio.sleep(NOTE_EVERY / 2)
            if time.monotonic() - self._noted_at < NOTE_EVERY:
                continue
            try:
                await asyncio.to_thread(self.reg.note_alive)  # not the relay's thread: it may be the one busy
            except Exception as exc:  # the database is locked or away: the relay says so
                log.debug(f"cannot note that the server is alive: {exc}")

    async def catch_up(self) -> int:
        """Handle the events committed so far (up to 500); returns how many. Callers that must act after
        every earlier change was applied (a password handed over after `user passwd`) await it first."""
        async with self._turn:
            events = await self._read(self.reg.events, since=self.last_id, limit=500)
            if events:
                await self.handle(events)
                self.last_id = events[-1].id
            if self.in_step():
                self.applied_id = self.last_id
            now = time.monotonic()
            # Read your writes: say what is applied, at once when asked (a CLI waits), else at most every
            # 50 ms under load (each note is a write transaction that a device's attempt would wait for).
            self._unnoted = self._unnoted or bool(events) or self.applied_id != self._noted_id
            if (self._unnoted and (self._woken or now - self._noted_at >= NOTE_UNDER_LOAD)) \
                    or now - self._noted_at >= NOTE_EVERY:
                await self._read(self.reg.note_applied, event_id=self.applied_id)
                self._noted_at, self._unnoted, self._woken = now, False, False
                self._noted_id = self.applied_id
            return len(events)

    async def _housekeep(self) -> None:
        """The registry's housekeeping (a window that ran out, a WAL scrub left due) at most every NOTE_EVERY s,
        from the relay's own loop: never on a caller's catch_up (a device's grant waits for that one)."""
        now = time.monotonic()
        if now - self._housekept_at >= NOTE_EVERY:
            await self._read(self.reg.housekeeping)
            self._housekept_at = now

    async def handle(self, events: list[Any]) -> None:
        """Apply a batch of events to the broker (one batch of changes), then publish each."""
        for event in events:
            self.reg.invalidate_for(str(event.kind), event.subject)
        try:
            await self.apply(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker is away or refused: reconcile corrects it soon
            log.warning(f"relay events #{events[0].id}-#{events[-1].id}: not applied to the broker yet: {exc}")
        for event in events:
            self.publish(EVENTS_PREFIX + event.kind, event_payload(event))
