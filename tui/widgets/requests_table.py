"""The Requests view: devices waiting for the operator, live."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from store import RequestView
from store.certificate_text import request_identity
from store.durations import ago
from store.request_filter import BY_RULE, request_matches, request_order_key, shown_label
from store.views import CONFLICT, REKEY, ROTATION

from ..safe import name_text, safe_text
from .base_table import Column, OrderedTable

STATUS_STYLE = {
    "pending": "bold yellow",
    CONFLICT: "bold #ff6b6b",
    REKEY: "bold #ff6b6b",
    ROTATION: "bold #ff6b6b",
    "granted": "#5fd75f",
    BY_RULE: "bold #5fd7ff",
    "denied": "#ff8787",
    "expired": "dim",
}


def granting_rule(req: Any) -> str | None:
    """The approval rule that granted this request, if one did (z undoes what it admitted)."""
    return req.deciding_rule if req is not None and req.status == "granted" else None


class RequestsTable(OrderedTable):
    """Pending first, newest first. The cursor stays on its row while rows arrive.

    The table holds a bounded *window* of the requests: at most ``WINDOW`` rows, from position ``window_start``
    of the database's order (``Registry.request_page``), so opening 100,000 requests costs one page. Moving
    past the last row (``down``, ``pagedown``, ``ctrl+end``) loads the next rows from the database, moving
    above the first one loads the previous ones; the filter is a database query too. ``total`` is how many
    requests (matching the filter) exist, and ``window_text()`` says what part of them is shown.
    """

    class GrantRequested(Message):
        """Grant these pending requests (the screen asks for permissions first)."""

        def __init__(self, targets: list[RequestView]) -> None:
            super().__init__()
            self.targets = targets

    class DenyRequested(Message):
        """Deny these pending requests (the screen asks first)."""

        def __init__(self, targets: list[RequestView]) -> None:
            super().__init__()
            self.targets = targets

    class MatchRequested(Message):
        """Select the pending requests whose name matches a glob (the screen asks for it, the store matches)."""

    class UndoRuleRequested(Message):
        """Undo what the approval rule that granted this request admitted in this window (the screen asks)."""

        def __init__(self, rule: str) -> None:
            super().__init__()
            self.rule = rule

    class DetailsRequested(Message):
        def __init__(self, request: RequestView) -> None:
            super().__init__()
            self.request = request

    class PageRequested(Message):
        """Read the window from ``offset``; put the cursor on ``cursor`` and then move it (``then``)."""

        def __init__(self, offset: int, cursor: str | None = None, then: str | None = None) -> None:
            super().__init__()
            self.offset = offset
            self.cursor = cursor
            self.then = then

    class SelectionChanged(Message):
        """The selection changed (the screen shows "N selected")."""

    WINDOW = 1000  # rows held at most
    STEP = 500  # rows the window moves by when paging

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_select", "Select", id="select",
                tooltip="Select or unselect the request under the cursor (the cursor stays)"),
        Binding("a", "select_pending", "All", id="select-all", tooltip="Select every pending request shown"),
        Binding("plus", "select_matching", "Match", id="select-matching",
                tooltip="Select every pending request whose name matches a pattern (sensor-*), beyond the rows shown"),
        Binding("g", "grant", "Grant", id="grant",
                tooltip="Grant the selection (or the request under the cursor): asks for permissions and roles"),
        Binding("d", "deny", "Deny", id="deny",
                tooltip="Deny the selection (or the request under the cursor), asks first"),
        Binding("z", "undo_rule", "Undo rule", show=False, id="undo-rule",
                tooltip="On a request an approval rule granted (by rule): remove every user that rule admitted in "
                        "this window (asks first)"),
        Binding("enter", "details", "Details", show=False, id="details",
                tooltip="Every field of the request (its id, context, requested permissions) and its history"),
    ]

    COLUMNS: ClassVar[list[Column]] = [
        Column("mark", " ", 1),
        Column("username", "username", 8, flex=0.4),
        Column("client_id", "client id", 6, flex=0.25),
        Column("peer", "peer", 12, min_total=76, flex=0.35),  # what the operator checks: shown from 80 columns
        Column("source", "src", 4, min_total=100),
        Column("attempts", "att", 3, min_total=100),
        Column("first_seen", "first", 5, min_total=110),
        Column("last_seen", "last", 5),
        Column("pairing_code", "code", 6),
        Column("status", "status", 8),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.selected: set[str] = set()
        self.selected_views: dict[str, Any] = {}  # the selected requests, also those paged out of the window
        self.window_start = 0  # position of the first row in the database's order
        self.total = 0  # requests matching the filter, in the database

    # -- the window ------------------------------------------------------------------------------
    def show_page(self, items: list[Any], total: int, offset: int, cursor: str | None = None) -> None:
        """Replace the rows with one page from the database; the cursor goes to ``cursor`` if shown."""
        self.window_start, self.total = offset, total
        for req in items:
            if str(req.id) in self.selected:
                self.selected_views[str(req.id)] = req
        self.model = {str(r.id): r for r in items}
        keep = cursor if cursor is not None else self.cursor_key()
        self.rebuild()
        self._restore_cursor(keep)

    def held(self) -> int:
        """Rows in the window."""
        return self.row_count

    def truncated(self) -> bool:
        return self.window_start > 0 or self.window_start + self.held() < self.total

    def window_text(self) -> str:
        """"rows 1-1,000 of 10,000 ..." when the table does not hold every (matching) request, else ""."""
        if not self.truncated():
            return ""
        what = "matching requests" if self.filter else "requests"
        held = self.held()
        first = self.window_start + 1 if held else self.window_start
        text = f"rows {first:,}–{self.window_start + held:,} of {self.total:,} {what}"
        hints = []
        if self.window_start > 0:
            hints.append("↑ at the top: newer")
        if self.window_start + held < self.total:
            hints.append("↓ at the bottom: older")
        return text + " (pending first, newest first)" + (" · " + ", ".join(hints) if hints else "")

    def upsert_window(self, items: dict[str, Any], removed: list[str], total: int) -> bool:
        """Apply changed requests to the window; returns False if the window should be reloaded instead
        (a row left a window that has more rows beyond it)."""
        for key, req in items.items():
            if key in self.selected:
                self.selected_views[key] = req
        shown = [self.order_key(self.model[key]) for key in (self._order[0], self._order[-1])] if self._order else []
        first = shown[0] if shown and self.window_start > 0 else None
        more_below = self.window_start + self.held() < self.total
        last = shown[-1] if shown and more_below else None
        inside: dict[str, Any] = {}
        gone = list(removed)
        for key, req in items.items():
            k = self.order_key(req)
            if (first is not None and k < first) or (last is not None and k > last):
                if key in self.model:
                    gone.append(key)
            else:
                inside[key] = req
        self.total = total
        if more_below and any(key in self.model for key in gone):
            return False
        self.upsert(inside, removed=gone, limit=self.WINDOW)
        return True

    def matches(self, req: Any) -> bool:
        """The filter matches it as ``Registry.request_page`` matches in the database (store.request_filter)."""
        return request_matches(req, self.filter)

    def page(self, offset: int, cursor: str | None = None, then: str | None = None) -> None:
        """Ask the screen for another window (read in a worker); ``then`` is the move to make once it is here."""
        self.post_message(self.PageRequested(max(0, offset), cursor, then))

    def after_page(self, then: str | None) -> None:
        """The cursor move that asked for a new window, made in it."""
        move = {"down": super().action_cursor_down, "up": super().action_cursor_up,
                "page_down": super().action_page_down, "page_up": super().action_page_up,
                "top": super().action_scroll_top, "bottom": super().action_scroll_bottom}.get(then or "")
        if move is not None:
            move()

    def action_cursor_down(self) -> None:
        if self.row_count and self.cursor_row == self.row_count - 1 and self.window_start + self.row_count < self.total:
            return self.page(self.window_start + self.STEP, cursor=self.cursor_key(), then="down")
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.cursor_row == 0 and self.window_start > 0:
            return self.page(self.window_start - self.STEP, cursor=self.cursor_key(), then="up")
        super().action_cursor_up()

    def action_page_down(self) -> None:
        if self.cursor_row + self.page_height() >= self.row_count and self.window_start + self.row_count < self.total:
            return self.page(self.window_start + self.STEP, cursor=self.cursor_key(), then="page_down")
        super().action_page_down()

    def action_page_up(self) -> None:
        if self.cursor_row - self.page_height() < 0 and self.window_start > 0:
            return self.page(self.window_start - self.STEP, cursor=self.cursor_key(), then="page_up")
        super().action_page_up()

    def action_scroll_top(self) -> None:
        if self.window_start > 0:
            return self.page(0, then="top")
        super().action_scroll_top()

    def action_scroll_bottom(self) -> None:
        if self.window_start + self.row_count < self.total:
            return self.page(self.total - self.WINDOW, then="bottom")
        super().action_scroll_bottom()

    def now(self) -> float:
        return self.app.clock()

    # -- rendering ---------------------------------------------------------------------------
    def row_cells(self, req: Any) -> dict[str, Any]:
        key = str(req.id)
        label = shown_label(req)
        identity = request_identity(req)
        now = self.now()
        return {
            "mark": Text("●", style="bold cyan") if key in self.selected else Text(" "),
            "username": name_text(req.username),  # ⚠ and the odd characters lit for a look-alike name
            "client_id": safe_text(req.client_id),
            "peer": safe_text(req.peer),
            # a certificate request says how it identifies (csr: over HTTP; cert: presented over TLS)
            "source": Text(identity or str(req.source), style="bold cyan" if identity else ""),
            "attempts": Text(str(req.attempts), justify="right"),
            "first_seen": Text(ago(req.first_seen, now), justify="right"),
            "last_seen": Text(ago(req.last_seen, now), justify="right"),
            "pairing_code": Text(str(req.pairing_code or ""), style="bold"),
            "status": Text(label, style=STATUS_STYLE.get(label, "")),
        }

    def order_key(self, req: Any) -> Any:
        return request_order_key(req)

    def refresh_ages(self) -> None:
        self.refresh_visible_cells()

    # -- selection ------------------------------------------------------------------------------
    def _refresh_mark(self, key: str) -> None:
        self.refresh_row(key)

    def selected_item(self, key: str) -> Any:
        return self.model.get(key) or self.selected_views.get(key)

    def prune_selection(self) -> None:
        """Drop selected requests that are no longer pending (decided elsewhere)."""
        for key in list(self.selected):
            req = self.selected_item(key)
            if req is None or req.status != "pending":
                self.selected.discard(key)
                self.selected_views.pop(key, None)
                self._refresh_mark(key)

    def clear_selection(self) -> bool:
        if not self.selected:
            return False
        old, self.selected = self.selected, set()
        self.selected_views = {}
        for key in old:
            self._refresh_mark(key)
        self.update_bindings()
        self.post_message(self.SelectionChanged())
        return True

    def targets(self) -> list[Any]:
        """What grant/deny act on: the pending selection, else the pending row under the cursor."""
        if self.selected:
            items = [r for r in map(self.selected_item, self.selected) if r is not None]
            return sorted((r for r in items if r.status == "pending"), key=lambda r: -r.id)
        req = self.cursor_item()
        return [req] if req is not None and req.status == "pending" else []

    # -- actions ----------------------------------------------------------------------------------
    def unavailable(self, action: str) -> str | None:
        if action in ("grant", "deny") and not self.targets():
            return "no pending request is selected or under the cursor"
        if action == "toggle_select":
            req = self.cursor_item()
            if req is None:
                return "no request under the cursor"
            if req.status != "pending":
                return f"the request under the cursor is {shown_label(req)}, not pending"
        if action == "select_pending" and not any(r.status == "pending" for r in self.model.values()):
            return "no pending request in the table"
        if action == "details" and self.cursor_item() is None:
            return "no request under the cursor"
        if action == "undo_rule" and granting_rule(self.cursor_item()) is None:
            return "the request under the cursor was not granted by an approval rule"
        return None

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        req = self.cursor_item()
        if key is None or req is None or req.status != "pending":
            return
        if key in self.selected:
            self.selected.discard(key)
            self.selected_views.pop(key, None)
        else:
            self.selected.add(key)
            self.selected_views[key] = req
        self._refresh_mark(key)  # the cursor stays: space toggles, j/down moves
        self.update_bindings()
        self.post_message(self.SelectionChanged())

    def action_select_pending(self) -> None:
        for key in list(self.rows):
            req = self.model.get(key)
            if req is not None and req.status == "pending" and key not in self.selected:
                self.selected.add(key)
                self.selected_views[key] = req
                self._refresh_mark(key)
        self.update_bindings()
        self.post_message(self.SelectionChanged())

    def action_select_matching(self) -> None:
        self.post_message(self.MatchRequested())

    def select_requests(self, requests: list[Any]) -> int:
        """Add these pending requests to the selection (also those outside the rows held); how many were new."""
        added = 0
        for req in requests:
            key = str(req.id)
            if req.status == "pending" and key not in self.selected:
                self.selected.add(key)
                self.selected_views[key] = req
                if key in self.model:
                    self._refresh_mark(key)
                added += 1
        self.update_bindings()
        self.post_message(self.SelectionChanged())
        return added

    def action_grant(self) -> None:
        targets = self.targets()
        if targets:
            self.post_message(self.GrantRequested(targets))

    def action_deny(self) -> None:
        targets = self.targets()
        if targets:
            self.post_message(self.DenyRequested(targets))

    def action_undo_rule(self) -> None:
        rule = granting_rule(self.cursor_item())
        if rule is not None:
            self.post_message(self.UndoRuleRequested(rule))

    def action_details(self) -> None:
        req = self.cursor_item()
        if req is not None:
            self.post_message(self.DetailsRequested(req))
