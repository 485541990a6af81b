"""The main screen: header, the three views, the filter bar and the footer.

No store call runs on the UI thread. Reads go through ``tui.sync.EventSync`` (resync, relayed events with gap
detection, polling) in thread workers that post ``SyncDelta``; changes are queued and run one after another by
a thread worker of the exclusive ``writes`` group, which posts ``WriteDone`` or ``StoreFailed``. The tables post
messages (``RequestsTable.GrantRequested``, ...) that this screen handles with ``@on``; it sets their rows.
While a change waits for a database another process holds, a "database busy" line says so and every key still
works.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input, Label, Static
from textual.worker import get_current_worker

from store import ItemResult, RequestView, RoleView, Status, StoreError
from store.database import BUSY_TIMEOUT_MS
from store.device_text import printable
from store.durations import MINUTE, UNLOCK_DEFAULT

from ..messages import (
    DetailsLoaded,
    GrantDefaults,
    MatchesLoaded,
    PageLoaded,
    PresenceLoaded,
    RelayedEvent,
    StoreFailed,
    SyncDelta,
    Synced,
    WriteDone,
    Writing,
)
from ..read_your_writes import APPLY_TIMEOUT, until_applied
from ..safe import name_text, safe_text
from ..sync import Delta, EventSync, Page, Window, read_page
from ..widgets.audit_table import AuditTable
from ..widgets.base_table import OrderedTable
from ..widgets.fitting_footer import FittingFooter
from ..widgets.requests_table import RequestsTable, granting_rule
from ..widgets.roles_table import RolesTable
from ..widgets.status_header import VIEWS, HeaderState, StatusHeader
from ..widgets.users_table import UsersTable
from .details import DetailsScreen, event_details, request_details, role_details, user_details
from .help import HelpScreen
from .modals import (
    AccessChoice,
    ConfirmModal,
    DurationModal,
    GrantChoice,
    GrantModal,
    PermissionsModal,
    TextModal,
    name_pattern_modal,
)

AUDIT_KEEP = 5000  # the audit view drops older rows beyond this (the CLI `log` has them all)
VIEW_KEYS = [key for key, _ in VIEWS]
BUSY_AFTER = 0.5  # a change waiting this long for the database is said on screen
PRESENCE_EVERY = 2  # ticks (seconds) between reads of who is online, while the Users view shows
T = TypeVar("T")


@dataclass
class PendingWrite:
    op: str
    call: Callable[[], object]
    context: object = None


class DashboardScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "unlock", "Unlock", id="unlock",
                tooltip=f"Unlock the registry for {UNLOCK_DEFAULT // MINUTE} minutes "
                        f"(when open: {UNLOCK_DEFAULT // MINUTE} minutes from now)"),
        Binding("U", "unlock_for", "Unlock for…", show=False, id="unlock-for",
                tooltip="Unlock the registry for a duration you type"),
        Binding("l", "lock", "Lock", id="lock", tooltip="Lock the registry now"),
        Binding("1", "view('requests')", "Requests", show=False, id="view-requests", tooltip="Show the requests"),
        Binding("2", "view('users')", "Users", show=False, id="view-users", tooltip="Show the users"),
        Binding("3", "view('audit')", "Audit", show=False, id="view-audit", tooltip="Show the audit log"),
        Binding("4", "view('roles')", "Roles", show=False, id="view-roles", tooltip="Show the roles"),
        Binding("tab", "next_view", "Next view", show=False, id="next-view", tooltip="Switch to the next view"),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter the views by text"),
        Binding("escape", "clear", "Clear", show=False, id="clear",
                tooltip="Clear the selection, then the filter"),
        Binding("question_mark", "help", "Help", id="help", tooltip="All keys and what they do"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[RequestView] = []  # what the last grant dialog was opened for
        self.header_state = HeaderState()
        self.status: Status | None = None  # the last read
        self.sync: EventSync | None = None
        self.window = Window()  # what the requests table holds, for the workers (replaced, never mutated)
        self._writes: deque[PendingWrite] = deque()
        self._write_lock = threading.Lock()
        self.writing: tuple[str, float] | None = None  # (op, since): the change running now, for the busy line
        self.busy_failed: tuple[str, float] | None = None  # (message, when) after a change failed on a lock
        self._ticking = False
        self._ticks = 0
        self.loaded = False  # the first resync has been applied
        self.last_template = ""  # the operator's last grant template (Registry.last_template), pre-filled
        self.last_roles: list[str] = []  # and roles (Registry.last_roles)

    # -- composition ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with ContentSwitcher(initial="requests", id="views"):
            yield RequestsTable(id="requests")
            yield UsersTable(id="users")
            yield AuditTable(id="audit")
            yield RolesTable(id="roles")
        yield Static(id="window-info")  # "rows 1-1,000 of 10,000 requests": the table holds a window
        yield Static(id="busy")  # "database busy: ..."
        with Horizontal(id="filter-bar"):
            yield Label("filter ", id="filter-label")
            yield Input(placeholder="text to match (enter: keep, esc: clear)", id="filter")
        yield FittingFooter()

    @property
    def reg(self):
        return self.app.reg

    @property
    def last_event_id(self) -> int:
        return self.sync.last_event_id if self.sync else 0

    @property
    def requests_table(self) -> RequestsTable:
        return self.query_one(RequestsTable)

    @property
    def users_table(self) -> UsersTable:
        return self.query_one(UsersTable)

    @property
    def audit_table(self) -> AuditTable:
        return self.query_one(AuditTable)

    @property
    def roles_table(self) -> RolesTable:
        return self.query_one(RolesTable)

    def view_tables(self) -> list[tuple[str, str, OrderedTable]]:
        """(number key, label, table) of each view, in the order of the header's tabs."""
        return [(str(i), label, self.query_one(f"#{key}", OrderedTable)) for i, (key, label) in enumerate(VIEWS, 1)]

    def current_table(self) -> OrderedTable:
        return self.query_one(f"#{self.query_one(ContentSwitcher).current}", OrderedTable)

    def on_mount(self) -> None:
        self.header_state.embedded = self.app.embedded
        self.header_state.broker = self.app.listener_state
        (self.header_state.service_broker, self.header_state.service_state,
         self.header_state.service_http, self.header_state.service_tls) = self.app.service_status
        self.header_state.broker_address = self.app.mqtt_target.address if self.app.mqtt_target else ""
        self.sync = EventSync(self.reg, on_delta=self.post_delta)
        self.note_window()
        self.resync()  # the tables fill their rows when they first get a size
        self.requests_table.focus()
        self.set_interval(1.0, self.tick, name="tick")
        self.set_interval(0.25, self.refresh_busy, name="busy")

    def post_delta(self, delta: Delta) -> None:
        """EventSync's ``on_delta``, called on a sync worker's thread."""
        self.post_message(SyncDelta(delta))

    # -- reading, in workers -------------------------------------------------------------------------
    def note_window(self) -> None:
        table = self.requests_table
        self.window = Window(table.window_start, table.WINDOW, table.filter or None)

    def resync(self) -> None:
        """Reload everything from the database (start, broker (re)connect)."""
        self._sync("resync")

    def deliver(self, events: list[RelayedEvent]) -> None:
        """Events relayed over MQTT."""
        self._sync("receive", events)

    def sync_from_db(self) -> None:
        """Apply every event after the last one seen (after a local action, when polling)."""
        self._sync("poll")

    @work(thread=True, group="sync", exit_on_error=False)
    def _sync(self, op: str, events: list[RelayedEvent] | None = None) -> None:
        try:
            self.post_store_call(op, partial(self._sync_step, op, events))
        finally:
            self.post_message(Synced(op))

    def _sync_step(self, op: str, events: list[RelayedEvent] | None) -> None:
        """One sync, on a worker thread: EventSync posts the ``SyncDelta``."""
        sync = self.sync
        assert sync is not None  # set on mount, before any worker starts
        if op == "resync":
            actor = self.app.actor
            self.post_message(GrantDefaults(self.reg.last_template(actor), self.reg.last_roles(actor)))
            sync.resync(self.window)
        elif op == "receive":
            sync.receive(events or [], self.window)
        elif op == "tick" and self.header_state.broker == "connected":
            sync.status()  # the relay brings the events (once the broker enforces them)
        else:
            sync.poll(self.window, status=True)

    def post_store_call(self, op: str, call: Callable[[], T], done: Callable[[T], Message] | None = None, *,
                        context: object = None, unless_cancelled: bool = True) -> None:
        """Run a store call on this worker thread, then post ``done(result)``, or ``StoreFailed`` with the
        store's one-line error. ``unless_cancelled``: post nothing once a newer worker of the same exclusive
        group cancelled this one (its answer supersedes)."""
        try:
            result = call()
        except StoreError as exc:
            self.post_message(StoreFailed.of(op, exc, context=context))
            return
        if done is not None and not (unless_cancelled and get_current_worker().is_cancelled):
            self.post_message(done(result))

    @on(GrantDefaults)
    def grant_defaults(self, message: GrantDefaults) -> None:
        self.last_template = message.template or self.last_template
        self.last_roles = message.roles or self.last_roles

    @on(Synced)
    def synced(self, message: Synced) -> None:
        if message.op == "tick":
            self._ticking = False

    @on(SyncDelta)
    def apply_delta(self, message: SyncDelta) -> None:
        delta: Delta = message.delta
        table = self.requests_table
        if delta.page is not None:
            self.show_page(delta.page)
        elif (delta.requests or delta.gone) and (
                delta.total is None or self.window.match != (table.filter or None)
                or not table.upsert_window(delta.requests, delta.gone, delta.total)):
            self.load_requests(table.window_start)  # a row left a window with more rows beyond it
        if delta.users is not None:
            self.users_table.load({u.name: u for u in delta.users})
            self.users_table.update_bindings()
        if delta.roles is not None:
            self.roles_table.load({r.name: r for r in delta.roles})
            self.roles_table.update_bindings()
        audit = self.audit_table
        if delta.full:
            audit.load({str(e.id): e for e in delta.events})
        elif delta.events:
            overflow = len(audit.model) + len(delta.events) - AUDIT_KEEP
            oldest = sorted(audit.model, key=int)[:overflow] if overflow > 0 else []
            audit.upsert({str(e.id): e for e in delta.events}, removed=oldest)
        audit.update_bindings()
        table.prune_selection()
        self.refresh_window_info()
        if delta.status is not None:
            self.status = delta.status
        self.refresh_header()
        table.update_bindings()
        if delta.full:
            self.loaded = True
            self.refresh_bindings()

    def show_page(self, page: Page, cursor: str | None = None) -> None:
        table = self.requests_table
        table.show_page(page.items, page.total, page.offset, cursor=cursor)
        table.prune_selection()
        self.note_window()
        self.refresh_window_info()
        table.update_bindings()

    def load_requests(self, offset: int = 0, cursor: str | None = None, then: str | None = None) -> None:
        """Read one window of requests (from ``offset``, matching the filter) in a worker."""
        table = self.requests_table
        self._load_page(Window(max(0, offset), table.WINDOW, table.filter or None), cursor, then)

    @work(thread=True, exclusive=True, group="page", exit_on_error=False)
    def _load_page(self, window: Window, cursor: str | None, then: str | None) -> None:
        self.post_store_call("page", partial(read_page, self.reg, window), lambda page: PageLoaded(page, cursor, then))

    @on(PageLoaded)
    def page_loaded(self, message: PageLoaded) -> None:
        if message.page.match != (self.requests_table.filter or None):
            return  # the filter changed since: a newer page is on its way
        self.show_page(message.page, message.cursor)
        self.requests_table.after_page(message.then)

    @on(RequestsTable.PageRequested)
    def page_requested(self, message: RequestsTable.PageRequested) -> None:
        self.load_requests(message.offset, message.cursor, message.then)

    @on(OrderedTable.UnseenChanged)
    @on(RequestsTable.SelectionChanged)
    def unseen_changed(self) -> None:
        self.refresh_window_info()

    def refresh_window_info(self) -> None:
        info = self.query_one("#window-info", Static)
        table = self.current_table()
        requests = self.requests_table
        selected = f"{len(requests.selected)} selected" if requests.selected and table is requests else ""
        presence = self.users_table.presence_note() if table is self.users_table else ""
        parts = [selected, table.unseen_text(), table.window_text() if table is requests else "", presence]
        text = " · ".join(p for p in parts if p)
        one_row = info.display and not info.has_class("-wraps")  # then the counts need no layout of the screen
        info.display = bool(text)
        info.set_class(bool(presence), "-wraps")
        if text:
            # a sentence (why nobody shows online) wraps; the counts alone stay one row
            info.update(Text(text, no_wrap=not presence, overflow="fold" if presence else "ellipsis"),
                        layout=not (one_row and not presence))

    # -- changing, in the one writes worker ------------------------------------------------------------
    def write(self, op: str, fn: Callable[..., Any], *args: Any, context: Any = None, **kwargs: Any) -> None:
        """Queue a store change; the writes worker runs the queue in order and posts what happened."""
        self._writes.append(PendingWrite(op, partial(fn, *args, **kwargs), context))
        self._run_writes()

    @work(thread=True, exclusive=True, group="writes", exit_on_error=False)
    def _run_writes(self) -> None:
        # exclusive: a newer worker cancels an older one that may not have started yet; the queue is drained
        # by whichever runs, under one lock, so no change is lost and they apply in the order they were asked.
        with self._write_lock:
            while self._writes:
                self._write(self._writes.popleft())

    def _write(self, pending: PendingWrite) -> None:
        """One change, on the writes worker's thread: ``WriteDone`` or ``StoreFailed``, between two ``Writing``."""
        self.post_message(Writing(pending.op, time.monotonic()))
        try:
            self.post_store_call(pending.op, partial(self._apply, pending.call),
                                 lambda outcome: WriteDone(pending.op, outcome[0], pending.context, outcome[1]),
                                 context=pending.context, unless_cancelled=False)
        except Exception as exc:  # a bug must not end the dashboard, nor stop the queue
            self.post_message(StoreFailed(pending.op, f"{type(exc).__name__}: {exc}", context=pending.context))
        finally:
            self.post_message(Writing(None))

    def _apply(self, call: Callable[[], object]) -> tuple[object, str]:
        """Make a change, then wait until the running server applied it: (result, ``WriteDone.applied``)."""
        result = call()
        # Read your writes: the server applies it now (not at its next poll); "done" is said once the broker
        # enforces it, or that no server did within 1 s.
        try:
            applied = until_applied(self.reg)
        except StoreError:
            applied = "timeout"
        return result, applied

    @on(Writing)
    def writing_changed(self, message: Writing) -> None:
        self.writing = (message.op, message.since) if message.op is not None else None

    @on(WriteDone)
    def write_done(self, message: WriteDone) -> None:
        self.busy_failed = None
        if message.applied == "no_server":
            self.app.notify("No server is running on this registry: the broker gets this change when one starts.",
                            severity="warning", timeout=6, markup=False)
        elif message.applied == "timeout":
            self.app.notify(f"Recorded, but the running server did not apply it within {APPLY_TIMEOUT:g} s "
                            "(see its log).", severity="error", timeout=8, markup=False)
        handler = getattr(self, f"done_{message.op}", None)
        if handler is not None:
            handler(message.result, message.context)
        self.sync_from_db()

    @on(StoreFailed)
    def store_failed(self, message: StoreFailed) -> None:
        if message.busy:
            what = message.op.replace("_", " ")
            self.busy_failed = (f"the {what} was not done: another process held the database for "
                                f"{BUSY_TIMEOUT_MS // 1000} s; press the key again", time.monotonic())
        self.app.notify(printable(message.message, 300), severity="error", timeout=8, markup=False)
        self.refresh_busy()

    def busy_text(self) -> str:
        if self.writing is not None:
            op, since = self.writing
            waited = time.monotonic() - since
            if waited >= BUSY_AFTER:
                return (f"database busy: another process is writing; waiting to {op.replace('_', ' ')} "
                        f"({waited:.0f} s) · every key still works")
        if self.busy_failed is not None:
            text, when = self.busy_failed
            if time.monotonic() - when < 15:
                return f"database busy: {text}"
            self.busy_failed = None
        return ""

    def refresh_busy(self) -> None:
        line = self.query_one("#busy", Static)
        text = self.busy_text()
        if line.display != bool(text):
            line.display = bool(text)
        if text and str(line.render()) != text:
            line.update(Text(text, no_wrap=True, overflow="ellipsis"))

    # -- who is online (Users view) --------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="presence", exit_on_error=False)
    def read_presence(self) -> None:
        self.post_store_call("presence", self.reg.presence, PresenceLoaded)

    @on(PresenceLoaded)
    def presence_loaded(self, message: PresenceLoaded) -> None:
        self.users_table.show_presence(message.snapshot)
        self.refresh_window_info()

    # -- header and clock ---------------------------------------------------------------------------
    def refresh_header(self) -> None:
        status = self.status
        state = self.header_state
        if status is not None:
            now = self.app.clock()
            state.unlocked = bool(status.unlocked and status.unlocked_until and status.unlocked_until > now)
            state.remaining = max(0.0, status.unlocked_until - now) if state.unlocked else 0.0
            state.pending = status.pending
            state.knocking = status.knocking
            state.knocking_capped = status.knocking_capped
            state.throttled = status.throttled
            state.throttled_from = status.throttled_from[0][0] if status.throttled_from else ""
            state.service_problem = status.server_problem or ""
        state.view = self.query_one(ContentSwitcher).current or "requests"
        self.query_one(StatusHeader).show(state)

    def tick(self) -> None:
        self.refresh_header()  # the countdown, from the last status read
        self.current_table().refresh_ages()
        self._ticks += 1
        if self.current_table() is self.users_table and self._ticks % PRESENCE_EVERY == 0:
            self.read_presence()
        if not self._ticking:  # never more than one periodic read at a time, however slow the database
            self._ticking = True
            self._sync("tick")  # read-only: the status, and the changelog (when no broker relays events)

    def set_service_status(self, broker: str, state: str, http: str = "", tls: str = "") -> None:
        self.header_state.service_broker = broker
        self.header_state.service_state = state
        self.header_state.service_http = http
        self.header_state.service_tls = tls
        self.refresh_header()

    def set_broker_state(self, state: str, detail: str = "", retry_in: float | None = None) -> None:
        self.header_state.broker = state
        self.header_state.broker_detail = detail
        self.header_state.retry_in = retry_in
        self.refresh_header()

    # -- window --------------------------------------------------------------------------------------
    def action_unlock(self) -> None:
        self.write("unlock", self.reg.unlock, None, actor=self.app.actor)

    def action_lock(self) -> None:
        self.write("lock", self.reg.lock, actor=self.app.actor)

    def done_unlock(self, status: Status, context: object) -> None:
        self.status = status
        minutes = int((status.remaining + 59) // 60)
        self.app.notify(f"Registry unlocked for {minutes} min: devices may knock now", timeout=3)
        self.refresh_header()
        self.refresh_bindings()

    def done_lock(self, status: Status, context: object) -> None:
        self.status = status
        self.app.notify("Registry locked", timeout=3)
        self.refresh_header()
        self.refresh_bindings()

    def action_unlock_for(self) -> None:
        def done(seconds: int | None) -> None:
            if seconds:
                self.write("unlock", self.reg.unlock, seconds, actor=self.app.actor)

        self.app.push_screen(DurationModal(), done)

    def unavailable(self, action: str) -> str | None:
        if action == "lock" and not self.header_state.unlocked:
            return "the registry is already locked"
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.unavailable(action) else True

    # -- views and filter ------------------------------------------------------------------------------
    def action_view(self, key: str) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = key
        table = self.current_table()
        if table is self.users_table:
            self.read_presence()
        table.refresh_ages()
        self.set_focus(table)  # now, not after the next refresh: the next key must reach this view
        self.refresh_header()
        self.refresh_window_info()
        self.refresh_bindings()

    def action_next_view(self) -> None:
        current = self.query_one(ContentSwitcher).current or "requests"
        self.action_view(VIEW_KEYS[(VIEW_KEYS.index(current) + 1) % len(VIEW_KEYS)])

    def action_filter(self) -> None:
        self.query_one("#filter-bar").display = True
        self.query_one("#filter", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                self.query_one("#filter-bar").display = False
            self.set_focus(self.current_table())

    def set_filter(self, text: str) -> None:
        for table in (self.users_table, self.audit_table, self.roles_table):
            if table.filter != text:
                table.filter = text
                table.rebuild()
        if self.requests_table.filter != text:  # the requests are matched in the database, beyond the window
            self.requests_table.filter = text
            self.load_requests(0)
        self.refresh_bindings()

    def action_clear(self) -> None:
        filter_input = self.query_one("#filter", Input)
        if not filter_input.has_focus and self.requests_table.clear_selection():
            return
        if filter_input.value or self.query_one("#filter-bar").display:
            filter_input.value = ""
            self.set_filter("")
            self.query_one("#filter-bar").display = False
            self.set_focus(self.current_table())

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.app.key_sections()))

    # -- requests ---------------------------------------------------------------------------------------
    @on(RequestsTable.GrantRequested)
    def ask_grant(self, message: RequestsTable.GrantRequested) -> None:
        targets = message.targets

        def done(choice: GrantChoice | None) -> None:
            if choice is not None:
                self.grant(targets, choice)

        self.targets = targets
        known = sorted(self.roles_table.model)
        self.app.push_screen(GrantModal(targets, self.last_template, self.last_roles, known), done)

    def grant(self, targets: list[RequestView], choice: GrantChoice) -> None:
        reg, actor = self.reg, self.app.actor

        def grant_and_remember() -> list[ItemResult]:
            results = reg.grant([r.id for r in targets], choice.permissions, actor=actor, force=choice.force,
                                requested=choice.include_requested, roles=choice.roles)
            if any(r.ok for r in results):
                reg.remember_template(actor, choice.template)
                reg.remember_roles(actor, list(choice.roles))
            return results

        self.last_template = choice.template
        self.last_roles = list(choice.roles)
        self.write("grant", grant_and_remember)

    def done_grant(self, results: list[ItemResult], context: object) -> None:
        self.report(results, "Granted")
        self.requests_table.clear_selection()

    @on(RequestsTable.MatchRequested)
    def ask_pattern(self) -> None:
        def done(pattern: str | None) -> None:
            if pattern:
                self._match_pending(pattern)

        self.app.push_screen(name_pattern_modal(), done)

    @work(thread=True, exclusive=True, group="match", exit_on_error=False)
    def _match_pending(self, pattern: str) -> None:
        self.post_store_call("match", partial(self.reg.pending_matching, pattern),
                             partial(MatchesLoaded, pattern), unless_cancelled=False)

    @on(MatchesLoaded)
    def matches_loaded(self, message: MatchesLoaded) -> None:
        """The bulk grant's preview is the selection itself: marked rows, "N selected", then `g` lists them."""
        pattern = printable(message.pattern, 60)
        if not message.requests:
            self.app.notify(f"no pending request matches {pattern}", severity="warning", timeout=5, markup=False)
            return
        added = self.requests_table.select_requests(message.requests)
        n = len(message.requests)
        self.app.notify(f"{n} pending request{'s' if n != 1 else ''} match {pattern} ({added} newly selected): "
                        "g grants the selection", timeout=5, markup=False)

    @on(RequestsTable.UndoRuleRequested)
    def ask_undo_rule(self, message: RequestsTable.UndoRuleRequested) -> None:
        rule = message.rule
        shown = [r for r in self.requests_table.model.values() if granting_rule(r) == rule]
        body = Text(f"Every user the approval rule {rule} admitted in this window is removed (live sessions "
                    "close) and its request denied, so the same credentials are not admitted again. Among them:\n")
        for req in shown[:20]:
            body.append("  ")
            body.append_text(name_text(req.username, 50))
            body.append(f"  #{req.id}\n", style="dim")
        if len(shown) > 20:
            body.append(f"  … and {len(shown) - 20} more shown\n", style="dim")

        def done(ok: bool | None) -> None:
            if ok:
                self.write("undo_rule", self.reg.revoke_admitted, rule, actor=self.app.actor, context=rule)

        self.app.push_screen(ConfirmModal(f"Undo rule {rule}?", body, "Undo"), done)

    def done_undo_rule(self, removed: list[str], rule: str) -> None:
        counted = "; they still count against its limit in this window" if removed else ""
        self.app.notify(printable(f"Undid rule {rule}: removed {len(removed)} user{'s' if len(removed) != 1 else ''}"
                              f"{counted}", 200),
                        timeout=5, markup=False)

    @on(RequestsTable.DenyRequested)
    def ask_deny(self, message: RequestsTable.DenyRequested) -> None:
        targets = message.targets
        body = Text()
        for i, req in enumerate(targets):
            if i:
                body.append("\n")
            body.append(f"#{req.id} {req.pairing_code} ", style="bold")
            body.append_text(safe_text(req.username, 50))
        n = len(targets)

        def done(ok: bool | None) -> None:
            if ok:
                self.write("deny", self.reg.deny, [r.id for r in targets], actor=self.app.actor)

        self.app.push_screen(ConfirmModal(f"Deny {n} request{'s' if n != 1 else ''}?", body, "Deny"), done)

    def done_deny(self, results: list[ItemResult], context: object) -> None:
        self.report(results, "Denied")
        self.requests_table.clear_selection()

    def report(self, results: list[ItemResult], verb: str) -> None:
        ok = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        if ok:
            names = ", ".join((f"{r.request.username} (#{r.request.id})" if r.request else r.item) for r in ok[:5])
            more = f" and {len(ok) - 5} more" if len(ok) > 5 else ""
            self.app.notify(f"{verb} {len(ok)}: " + printable(names + more, 160), timeout=4, markup=False)
        for r in failed:
            who = r.request.username if r.request else r.item
            self.app.notify(printable(f"{who}: {r.message}", 200), severity="warning", timeout=8, markup=False)

    @on(RequestsTable.DetailsRequested)
    def request_details_wanted(self, message: RequestsTable.DetailsRequested) -> None:
        self._load_details("request", message.request)

    @on(UsersTable.DetailsRequested)
    def user_details_wanted(self, message: UsersTable.DetailsRequested) -> None:
        self._load_details("user", message.user)

    @on(AuditTable.DetailsRequested)
    def event_details_wanted(self, message: AuditTable.DetailsRequested) -> None:
        self._load_details("event", message.event)

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def _load_details(self, kind: str, item: Any) -> None:
        self.post_store_call("details", partial(self._read_details, kind, item),
                             lambda parts: DetailsLoaded(*parts), unless_cancelled=False)

    def _read_details(self, kind: str, item: Any) -> tuple[Text | str, Text]:
        """The details panel's title and body, read fresh on a worker thread."""
        reg = self.reg
        title: Text | str
        if kind == "request":
            fresh = reg.request(item.id) or item
            title = Text(f"Request #{fresh.id} ")
            title.append_text(safe_text(fresh.username, 50))
            body = request_details(fresh, reg.events(subject=fresh.username))
        elif kind == "user":
            fresh = reg.user(item.name) or item
            title = Text("User ")
            title.append_text(safe_text(fresh.name, 50))
            seen = reg.presence()
            body = user_details(fresh, reg.events(subject=fresh.name), seen.of(fresh.name, fresh.created_at),
                                seen.why_not)
        elif kind == "role":
            fresh = reg.role(item.name) or item
            title = Text(f"Role {fresh.name}")
            body = role_details(fresh, reg.role_members(fresh.name), reg.events(subject=fresh.name))
        else:
            title = f"Event #{item.id}"
            body = event_details(item, reg.events(subject=item.subject) if item.subject else [])
        return title, body

    @on(DetailsLoaded)
    def details_loaded(self, message: DetailsLoaded) -> None:
        if self.app.screen is self:  # not over a dialog opened meanwhile
            self.app.push_screen(DetailsScreen(message.title, message.body))

    # -- users --------------------------------------------------------------------------------------------
    @on(UsersTable.PermissionsRequested)
    def ask_permissions(self, message: UsersTable.PermissionsRequested) -> None:
        user = message.user

        def done(choice: AccessChoice | None) -> None:
            if choice is not None:
                self.write("set_permissions", self.reg.set_user_access, user.name, choice.permissions,
                           choice.roles, actor=self.app.actor, context=user.name)

        self.app.push_screen(PermissionsModal(user.name, user.permissions, roles=user.roles,
                                              known_roles=sorted(self.roles_table.model)), done)

    def done_set_permissions(self, changes: int, name: str) -> None:
        if changes:
            self.app.notify(printable(f"Roles and permissions of {name}: {changes} changed", 160), timeout=3,
                            markup=False)

    @on(UsersTable.DisableToggled)
    def toggle_disabled(self, message: UsersTable.DisableToggled) -> None:
        user = message.user
        if user.disabled:
            self.write("enable", self.reg.enable_user, user.name, actor=self.app.actor)
        else:
            self.write("disable", self.reg.disable_user, user.name, actor=self.app.actor)

    @on(UsersTable.RemoveRequested)
    def ask_remove(self, message: UsersTable.RemoveRequested) -> None:
        user = message.user
        body = Text("The user ")
        body.append_text(safe_text(user.name, 60))
        body.append(" and its permissions are deleted; its live sessions are closed.")

        def done(ok: bool | None) -> None:
            if ok:
                self.write("remove", self.reg.remove_user, user.name, actor=self.app.actor)

        self.app.push_screen(ConfirmModal("Remove this user?", body, "Remove"), done)

    # -- roles --------------------------------------------------------------------------------------------
    @on(RolesTable.AddRequested)
    def ask_new_role(self) -> None:
        from store.validation import role_name_problem

        def done(name: str | None) -> None:
            if name:
                self.write("add_role", self.reg.add_role, name, actor=self.app.actor, context=name)

        self.app.push_screen(TextModal("New role", "Create", "e.g. sensors (letters, digits, . _ -)",
                                       check=role_name_problem), done)

    def done_add_role(self, role: RoleView, name: str) -> None:
        self.app.notify(f"Role {name} created: p gives it permissions; grant with it from the grant dialog",
                        timeout=5, markup=False)

    @on(RolesTable.PermissionsRequested)
    def ask_role_permissions(self, message: RolesTable.PermissionsRequested) -> None:
        role = message.role

        def done(choice: AccessChoice | None) -> None:
            if choice is not None:
                self.write("set_role_permissions", self.reg.set_role_permissions, role.name, choice.permissions,
                           actor=self.app.actor, context=role.name)

        self.app.push_screen(PermissionsModal(role.name, role.permissions, owner="role "), done)

    def done_set_role_permissions(self, result: tuple[int, int], name: str) -> None:
        changes, members = result
        if changes:
            # Mosquitto 2.0.11 replaces a role's ACLs without closing sessions: a narrowing applies to the
            # members' next publish and delivery, so nobody is disconnected (docs/ARCHITECTURE.md, Roles).
            self.app.notify(f"Role {name}: {changes} permission{'s' if changes != 1 else ''} changed for "
                            f"{members} member{'s' if members != 1 else ''} at once; no session is disconnected",
                            timeout=5, markup=False)

    @on(RolesTable.RemoveRequested)
    def ask_remove_role(self, message: RolesTable.RemoveRequested) -> None:
        role = message.role
        body = Text(f"The role {role.name} is deleted. ")
        body.append(f"Its {role.members} member{'s' if role.members != 1 else ''} lose its permissions at once "
                    "(each member's live session reconnects once, as its role list changes)." if role.members
                    else "It has no members.")

        def done(ok: bool | None) -> None:
            if ok:
                self.write("remove_role", self.reg.remove_role, role.name, actor=self.app.actor, force=True)

        self.app.push_screen(ConfirmModal("Remove this role?", body, "Remove"), done)

    @on(RolesTable.DetailsRequested)
    def role_details_wanted(self, message: RolesTable.DetailsRequested) -> None:
        self._load_details("role", message.role)
