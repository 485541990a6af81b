"""The main screen: header, the three views, the filter bar and the footer.

It owns the mapping from registry state to tables: a full resync (on start
and whenever the listener (re)connects), and incremental application of
events by id (from the relay, or read back from the database after a local
action or when a gap in ids is seen).
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Input, Label, Static

from ..messages import RelayedEvent
from ..safe import clean, safe_text
from ..widgets.audit_table import AuditTable
from ..widgets.base_table import OrderedTable
from ..widgets.requests_table import RequestsTable
from ..widgets.status_header import VIEWS, HeaderState, StatusHeader
from ..widgets.users_table import UsersTable
from .details import DetailsScreen, event_details, request_details, user_details
from .help import HelpScreen
from .modals import ConfirmModal, DurationModal, GrantChoice, GrantModal, PermissionsModal

AUDIT_BACKLOG = 500  # events loaded on (re)sync
AUDIT_KEEP = 5000  # the audit view drops older rows beyond this (the CLI `log` has them all)
VIEW_KEYS = [key for key, _ in VIEWS]


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("u", "toggle_lock", "(Un)lock", tooltip="Unlock the registry for 5 minutes, or lock it now"),
        Binding("U", "unlock_for", "Unlock for…", show=False, tooltip="Unlock the registry for a duration you type"),
        Binding("1", "view('requests')", "Requests", show=False, tooltip="Show the requests"),
        Binding("2", "view('users')", "Users", show=False, tooltip="Show the users"),
        Binding("3", "view('audit')", "Audit", show=False, tooltip="Show the audit log"),
        Binding("tab", "next_view", "Next view", show=False, tooltip="Switch to the next view"),
        Binding("slash", "filter", "Filter", tooltip="Filter the views by text"),
        Binding("escape", "clear", "Clear", show=False, tooltip="Clear the selection, then the filter"),
        Binding("question_mark", "help", "Help", tooltip="All keys and what they do"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.last_event_id = 0
        self.targets: list[Any] = []  # what the last grant dialog was opened for
        self.header_state = HeaderState()

    # -- composition ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with ContentSwitcher(initial="requests", id="views"):
            yield RequestsTable(id="requests")
            yield UsersTable(id="users")
            yield AuditTable(id="audit")
        yield Static(id="window-info")  # "rows 1-1,000 of 10,000 requests": the table holds a window
        with Horizontal(id="filter-bar"):
            yield Label("filter ", id="filter-label")
            yield Input(placeholder="text to match (enter: keep, esc: clear)", id="filter")
        yield Footer(compact=True)

    @property
    def reg(self):
        return self.app.reg

    @property
    def requests_table(self) -> RequestsTable:
        return self.query_one(RequestsTable)

    @property
    def users_table(self) -> UsersTable:
        return self.query_one(UsersTable)

    @property
    def audit_table(self) -> AuditTable:
        return self.query_one(AuditTable)

    def current_table(self) -> OrderedTable:
        return self.query_one(f"#{self.query_one(ContentSwitcher).current}", OrderedTable)

    def on_mount(self) -> None:
        self.header_state.embedded = self.app.embedded
        self.header_state.broker = self.app.listener_state
        self.header_state.service_broker, self.header_state.service_state = self.app.service_status
        self.header_state.broker_address = self.app.mqtt_target.address if self.app.mqtt_target else ""
        self.app.call_registry(self.full_resync)  # the tables fill their rows when they first get a size
        self.requests_table.focus()
        self.set_interval(1.0, self.tick, name="tick")

    # -- syncing with the store ---------------------------------------------------------------------
    def full_resync(self) -> None:
        """Reload everything from the database (start, broker (re)connect)."""
        reg = self.reg
        last = reg.last_event_id()  # read first: anything later arrives as an event
        self.load_requests(self.requests_table.window_start)
        self.users_table.load({u.name: u for u in reg.users()})
        backlog = reg.events(since=max(0, last - AUDIT_BACKLOG))
        self.audit_table.load({str(e.id): RelayedEvent.from_view(e) for e in backlog if e.id <= last})
        self.last_event_id = last
        self.refresh_header()
        self.refresh_bindings()

    def load_requests(self, offset: int = 0, cursor: str | None = None) -> None:
        """Read one window of requests (from ``offset``, matching the filter) from the database."""
        table = self.requests_table
        items, total = self.reg.request_page(table.WINDOW, offset, match=table.filter or None)
        if not items and offset > 0 and total:  # the window fell off the end (rows were removed): last page
            offset = max(0, total - table.WINDOW)
            items, total = self.reg.request_page(table.WINDOW, offset, match=table.filter or None)
        table.show_page(items, total, offset, cursor=cursor)
        table.prune_selection()
        self.refresh_window_info()
        table.update_bindings()

    def refresh_window_info(self) -> None:
        info = self.query_one("#window-info", Static)
        text = self.requests_table.window_text() if self.query_one(ContentSwitcher).current == "requests" else ""
        info.display = bool(text)
        if text:
            info.update(Text(text, no_wrap=True, overflow="ellipsis"))

    def sync_from_db(self) -> None:
        """Apply every event after the last one seen (after a local action, on a gap, when polling)."""
        events = [RelayedEvent.from_view(e) for e in self.reg.events(since=self.last_event_id)]
        if events:
            self.apply(events)

    def receive(self, events: Iterable[RelayedEvent]) -> None:
        """Events relayed over MQTT: applied in id order; a gap in ids means reading from the DB."""
        fresh = sorted((e for e in events if e.id > self.last_event_id), key=lambda e: e.id)
        if not fresh:
            return
        expected = self.last_event_id + 1
        contiguous = all(e.id == expected + i for i, e in enumerate(fresh))
        if contiguous:
            self.apply(fresh)
        else:
            self.sync_from_db()

    def apply(self, events: list[RelayedEvent]) -> None:
        reg = self.reg
        request_ids: set[int] = set()
        reload_requests = users_changed = False
        for ev in events:
            kind = ev.kind
            if kind.startswith("request."):
                rid = ev.detail.get("request_id")
                if kind in ("request.conflict", "request.expired") or not isinstance(rid, int):
                    reload_requests = True
                else:
                    request_ids.add(rid)
                if kind == "request.granted":
                    users_changed = True
            elif kind.startswith(("user.", "permission.")):
                users_changed = True
        table = self.requests_table
        if not reload_requests and request_ids:
            found, gone = {}, []
            for rid in request_ids:
                view = reg.request(rid)
                if view is None:
                    gone.append(str(rid))
                else:
                    found[str(rid)] = view
            total = reg.request_count(table.filter or None)
            reload_requests = not table.upsert_window(found, gone, total)
        if reload_requests:
            self.load_requests(table.window_start)
        table.prune_selection()
        self.refresh_window_info()
        if users_changed:
            self.users_table.load({u.name: u for u in reg.users()})
        audit = self.audit_table
        overflow = len(audit.model) + len(events) - AUDIT_KEEP
        oldest = sorted(audit.model, key=int)[:overflow] if overflow > 0 else []
        audit.upsert({str(e.id): e for e in events}, removed=oldest)
        self.last_event_id = max(self.last_event_id, max(e.id for e in events))
        self.refresh_header()
        table.update_bindings()
        self.audit_table.update_bindings()
        if users_changed:
            self.users_table.update_bindings()

    # -- header and clock ---------------------------------------------------------------------------
    def refresh_header(self) -> None:
        status = self.app.call_registry(self.reg.status)
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
        state.view = self.query_one(ContentSwitcher).current or "requests"
        self.query_one(StatusHeader).show(state)

    def tick(self) -> None:
        if self.header_state.broker != "connected":
            self.app.call_registry(self.sync_from_db)  # no live events: poll the changelog
        self.refresh_header()
        self.current_table().refresh_ages()

    def set_service_status(self, broker: str, state: str) -> None:
        self.header_state.service_broker = broker
        self.header_state.service_state = state
        self.refresh_header()

    def set_broker_state(self, state: str, detail: str = "", retry_in: float | None = None) -> None:
        self.header_state.broker = state
        self.header_state.broker_detail = detail
        self.header_state.retry_in = retry_in
        self.refresh_header()

    # -- window --------------------------------------------------------------------------------------
    def action_toggle_lock(self) -> None:
        status = self.app.call_registry(self.reg.status)  # fresh: the window may have closed since the last tick
        if status is None:
            return
        if status.unlocked:
            self.app.call_registry(self.reg.lock, actor=self.app.actor)
            self.app.notify("Registry locked", timeout=3)
        else:
            self.unlock(None)
        self.after_change()

    def unlock(self, seconds: int | None) -> None:
        status = self.app.call_registry(self.reg.unlock, seconds, actor=self.app.actor)
        if status is not None:
            minutes = int((status.remaining + 59) // 60)
            self.app.notify(f"Registry unlocked for {minutes} min: devices may knock now", timeout=3)

    def action_unlock_for(self) -> None:
        def done(seconds: int | None) -> None:
            if seconds:
                self.unlock(seconds)
                self.after_change()

        self.app.push_screen(DurationModal(), done)

    def after_change(self) -> None:
        from broker.plugin_socket import SOCKET_NAME, wake

        wake(self.reg.companion(SOCKET_NAME))  # the server applies it to the broker now, not at its next poll
        self.app.call_registry(self.sync_from_db)
        self.refresh_header()

    # -- views and filter ------------------------------------------------------------------------------
    def action_view(self, key: str) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = key
        table = self.current_table()
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
        for table in (self.users_table, self.audit_table):
            if table.filter != text:
                table.filter = text
                table.rebuild()
        if self.requests_table.filter != text:  # the requests are matched in the database, beyond the window
            self.requests_table.filter = text
            self.app.call_registry(self.load_requests, 0)
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
        self.app.push_screen(HelpScreen())

    # -- requests ---------------------------------------------------------------------------------------
    def ask_grant(self, targets: list[Any]) -> None:
        def done(choice: GrantChoice | None) -> None:
            if choice is not None:
                self.grant(targets, choice)

        self.targets = targets
        self.app.push_screen(GrantModal(targets), done)

    def grant(self, targets: list[Any], choice: GrantChoice) -> None:
        results = []
        template = [f"{p}={a}" for p, a in choice.permissions]
        plain = [r for r in targets if not (choice.include_requested and r.requested_permissions)]
        asked = [r for r in targets if choice.include_requested and r.requested_permissions]
        if plain:
            results += self.app.call_registry(
                self.reg.grant, [r.id for r in plain], template, actor=self.app.actor, force=choice.force) or []
        for req in asked:
            perms = [f"{p.get('resource')}={p.get('operation')}" for p in req.requested_permissions
                     if isinstance(p, dict)] + template
            results += self.app.call_registry(
                self.reg.grant, [req.id], perms, actor=self.app.actor, force=choice.force) or []
        self.report(results, "Granted")
        self.requests_table.clear_selection()
        self.after_change()

    def ask_deny(self, targets: list[Any]) -> None:
        body = Text()
        for i, req in enumerate(targets):
            if i:
                body.append("\n")
            body.append(f"{req.pairing_code} ", style="bold")
            body.append_text(safe_text(req.username, 50))
        n = len(targets)

        def done(ok: bool | None) -> None:
            if ok:
                results = self.app.call_registry(self.reg.deny, [r.id for r in targets], actor=self.app.actor) or []
                self.report(results, "Denied")
                self.requests_table.clear_selection()
                self.after_change()

        self.app.push_screen(ConfirmModal(f"Deny {n} request{'s' if n != 1 else ''}?", body, "Deny"), done)

    def report(self, results: list[Any], verb: str) -> None:
        ok = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        if ok:
            names = ", ".join(r.request.username if r.request else r.item for r in ok[:5])
            more = f" and {len(ok) - 5} more" if len(ok) > 5 else ""
            self.app.notify(f"{verb} {len(ok)}: " + clean(names + more, 120), timeout=4, markup=False)
        for r in failed:
            who = r.request.username if r.request else r.item
            self.app.notify(clean(f"{who}: {r.message}", 200), severity="warning", timeout=8, markup=False)

    def show_request_details(self, req: Any) -> None:
        fresh = self.reg.request(req.id) or req
        events = [e for e in self.reg.events(subject=fresh.username)]
        title = Text("Request ")
        title.append_text(safe_text(fresh.username, 50))
        self.app.push_screen(DetailsScreen(title, request_details(fresh, events)))

    # -- users --------------------------------------------------------------------------------------------
    def show_user_details(self, user: Any) -> None:
        fresh = self.reg.user(user.name) or user
        title = Text("User ")
        title.append_text(safe_text(fresh.name, 50))
        self.app.push_screen(DetailsScreen(title, user_details(fresh, self.reg.events(subject=fresh.name))))

    def show_event_details(self, ev: Any) -> None:
        events = self.reg.events(subject=ev.subject) if ev.subject else []
        self.app.push_screen(DetailsScreen(f"Event #{ev.id}", event_details(ev, events)))

    def ask_permissions(self, user: Any) -> None:
        def done(perms: list[tuple[str, str]] | None) -> None:
            if perms is None:
                return
            old = {p: a for p, a in user.permissions}
            new = dict(perms)
            for pattern in old:
                if pattern not in new or new[pattern] != old[pattern]:
                    self.app.call_registry(self.reg.forbid, user.name, pattern, actor=self.app.actor)
            for pattern, access in new.items():
                if old.get(pattern) != access:
                    self.app.call_registry(self.reg.permit, user.name, pattern, access, actor=self.app.actor)
            self.after_change()

        self.app.push_screen(PermissionsModal(user.name, user.permissions), done)

    def toggle_disabled(self, user: Any) -> None:
        if user.disabled:
            self.app.call_registry(self.reg.enable_user, user.name, actor=self.app.actor)
        else:
            self.app.call_registry(self.reg.disable_user, user.name, actor=self.app.actor)
        self.after_change()

    def ask_remove(self, user: Any) -> None:
        body = Text("The user ")
        body.append_text(safe_text(user.name, 60))
        body.append(" and its permissions are deleted; its live sessions are closed.")

        def done(ok: bool | None) -> None:
            if ok:
                self.app.call_registry(self.reg.remove_user, user.name, actor=self.app.actor)
                self.after_change()

        self.app.push_screen(ConfirmModal("Remove this user?", body, "Remove"), done)
