"""The Audit view: the event log, newest first."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from store.durations import ago

from ..messages import RelayedEvent
from ..safe import safe_text
from .base_table import Column, OrderedTable

KIND_WIDTH = len("user.password_changed")  # the longest event kind: kinds are never cut
KIND_STYLE = {
    "request.granted": "#5fd75f",
    "request.denied": "#ff8787",
    "request.conflict": "bold #ff6b6b",
    "user.removed": "#ff8787",
    "user.disabled": "#ff8787",
    "registry.unlocked": "bold yellow",
    "registry.locked": "yellow",
}


def detail_summary(detail: dict) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str) if detail else ""


class AuditTable(OrderedTable):
    class DetailsRequested(Message):
        def __init__(self, event: RelayedEvent) -> None:
            super().__init__()
            self.event = event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "details", "Details", show=False, id="event-details",
                tooltip="The event and the history of its subject"),
    ]

    COLUMNS: ClassVar[list[Column]] = [
        Column("id", "#", 5, min_total=76),
        Column("age", "age", 5),
        Column("actor", "actor", 8, flex=0.25),
        Column("kind", "kind", KIND_WIDTH),
        Column("subject", "subject", 8, flex=0.35),
        Column("detail", "detail", 6, flex=0.4, min_total=76),
    ]

    def row_cells(self, ev: Any) -> dict[str, Any]:
        return {
            "id": Text(str(ev.id), justify="right"),
            "age": Text(ago(ev.time, self.app.clock()), justify="right"),
            "actor": safe_text(ev.actor, limit=40),
            "kind": Text(ev.kind, style=KIND_STYLE.get(ev.kind, "")),
            "subject": safe_text(ev.subject),
            "detail": safe_text(detail_summary(ev.detail), limit=200),
        }

    def order_key(self, ev: Any) -> Any:
        return -ev.id

    def filter_text(self, ev: Any) -> str:
        return " ".join((ev.actor, ev.kind, ev.subject, detail_summary(ev.detail)))

    def refresh_ages(self) -> None:
        self.refresh_visible_cells()

    def unavailable(self, action: str) -> str | None:
        if action == "details" and self.cursor_item() is None:
            return "no event under the cursor"
        return None

    def action_details(self) -> None:
        ev = self.cursor_item()
        if ev is not None:
            self.post_message(self.DetailsRequested(ev))
