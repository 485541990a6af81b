"""The Requests view: devices waiting for the operator, live."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding

from ..safe import ago, safe_text
from .base_table import Column, OrderedTable

STATUS_STYLE = {
    "pending": "bold yellow",
    "conflict": "bold red",
    "granted": "green",
    "denied": "red",
    "expired": "dim",
}


def status_label(req: Any) -> str:
    if req.status == "pending" and req.conflict:
        return "conflict"
    return req.status


class RequestsTable(OrderedTable):
    """Pending first, newest first. The cursor stays on its row while rows arrive."""

    BINDINGS = [
        Binding("space", "toggle_select", "Select", tooltip="Select or unselect the request under the cursor"),
        Binding("a", "select_pending", "All", tooltip="Select every pending request shown"),
        Binding("g", "grant", "Grant", tooltip="Grant the selection (or the request under the cursor)"),
        Binding("d", "deny", "Deny", tooltip="Deny the selection (or the request under the cursor)"),
        Binding("enter", "details", "Details", show=False, tooltip="Every field and the history of the request"),
    ]

    COLUMNS = [
        Column("mark", " ", 1),
        Column("username", "username", 8, flex=0.55),
        Column("client_id", "client id", 6, flex=0.45),
        Column("peer", "peer", 21, min_total=110),
        Column("source", "src", 4),
        Column("attempts", "att", 3),
        Column("first_seen", "first", 5, min_total=100),
        Column("last_seen", "last", 5),
        Column("pairing_code", "code", 6),
        Column("status", "status", 8),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.selected: set[str] = set()

    def now(self) -> float:
        return self.app.clock()

    # -- rendering ---------------------------------------------------------------------------
    def row_cells(self, req: Any) -> dict[str, Any]:
        key = str(req.id)
        label = status_label(req)
        now = self.now()
        return {
            "mark": Text("●", style="bold cyan") if key in self.selected else Text(" "),
            "username": safe_text(req.username),
            "client_id": safe_text(req.client_id),
            "peer": safe_text(req.peer),
            "source": Text(str(req.source)),
            "attempts": Text(str(req.attempts), justify="right"),
            "first_seen": Text(ago(req.first_seen, now), justify="right"),
            "last_seen": Text(ago(req.last_seen, now), justify="right"),
            "pairing_code": Text(str(req.pairing_code or ""), style="bold"),
            "status": Text(label, style=STATUS_STYLE.get(label, "")),
        }

    def order_key(self, req: Any) -> Any:
        return (0 if req.status == "pending" else 1, -req.id)

    def filter_text(self, req: Any) -> str:
        return " ".join(
            str(x)
            for x in (req.username, req.client_id, req.peer, req.source, req.pairing_code, status_label(req))
        )

    def refresh_ages(self) -> None:
        now = self.now()
        self.refresh_column_cells("last_seen", lambda r: Text(ago(r.last_seen, now), justify="right"))
        self.refresh_column_cells("first_seen", lambda r: Text(ago(r.first_seen, now), justify="right"))

    # -- selection ------------------------------------------------------------------------------
    def _refresh_mark(self, key: str) -> None:
        if key in self.rows and "mark" in self.columns:
            mark = Text("●", style="bold cyan") if key in self.selected else Text(" ")
            self.update_cell(key, "mark", mark)

    def prune_selection(self) -> None:
        """Drop selected requests that are no longer pending (decided elsewhere)."""
        for key in list(self.selected):
            req = self.model.get(key)
            if req is None or req.status != "pending":
                self.selected.discard(key)
                self._refresh_mark(key)

    def clear_selection(self) -> bool:
        if not self.selected:
            return False
        old, self.selected = self.selected, set()
        for key in old:
            self._refresh_mark(key)
        self.refresh_bindings()
        return True

    def targets(self) -> list[Any]:
        """What grant/deny act on: the pending selection, else the pending row under the cursor."""
        if self.selected:
            items = [self.model[k] for k in self.selected if k in self.model]
            return sorted((r for r in items if r.status == "pending"), key=lambda r: -r.id)
        req = self.cursor_item()
        return [req] if req is not None and req.status == "pending" else []

    # -- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("grant", "deny"):
            return True if self.targets() else None
        if action == "toggle_select":
            req = self.cursor_item()
            return True if req is not None and req.status == "pending" else None
        if action == "select_pending":
            return True if any(r.status == "pending" for r in self.model.values()) else None
        if action == "details":
            return True if self.cursor_item() is not None else None
        return True

    def on_data_table_row_highlighted(self, event: OrderedTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        req = self.cursor_item()
        if key is None or req is None or req.status != "pending":
            return
        if key in self.selected:
            self.selected.discard(key)
        else:
            self.selected.add(key)
        self._refresh_mark(key)
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)
        self.refresh_bindings()

    def action_select_pending(self) -> None:
        for key in self.rows:
            req = self.model.get(key.value)
            if req is not None and req.status == "pending" and key.value not in self.selected:
                self.selected.add(key.value)
                self._refresh_mark(key.value)
        self.refresh_bindings()

    def action_grant(self) -> None:
        targets = self.targets()
        if targets:
            self.screen.ask_grant(targets)

    def action_deny(self) -> None:
        targets = self.targets()
        if targets:
            self.screen.ask_deny(targets)

    def action_details(self) -> None:
        req = self.cursor_item()
        if req is not None:
            self.screen.show_request_details(req)
