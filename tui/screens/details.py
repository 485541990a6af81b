"""The details panel: every field of a request, user or event, and its history."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from store import EventView, RequestView, RoleView, UserPresence, UserView
from store.certificate_text import certificate_fields, user_binding
from store.device_text import printable

from ..messages import RelayedEvent
from ..safe import LOOKALIKE_MARKER, LOOKALIKE_STYLE, name_text, safe_text, stamp


def field_lines(pairs: Iterable[tuple[str, Any]]) -> Text:
    text = Text()
    for label, value in pairs:
        if isinstance(label, Text):  # a styled label, right-aligned as the others
            text.append(" " * max(0, 20 - len(label)))
            text.append_text(label)
            text.append("  ")
        else:
            text.append(f"{label:>20}  ", style="bold")
        if isinstance(value, Text):
            text.append_text(value)
        else:
            text.append_text(safe_text(value, limit=400))
        text.append("\n")
    return text


def json_block(value: Any) -> Text:
    """Pretty JSON of device-supplied data, escaped line by line."""
    text = Text()
    for line in json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str).splitlines():
        text.append("    ")
        text.append(printable(line, limit=300))
        text.append("\n")
    return text


def history(events: Iterable[EventView]) -> Text:
    text = Text()
    for ev in events:
        text.append(f"  #{ev.id:<6} {stamp(ev.time)}  ", style="dim")
        text.append(f"{ev.kind:<22}", style="bold")
        text.append_text(safe_text(ev.actor, 30))
        if ev.detail:
            text.append("  ")
            detail = json.dumps(ev.detail, ensure_ascii=False, sort_keys=True, default=str)
            text.append(printable(detail, 120), style="dim")
        text.append("\n")
    if not text:
        text.append("  (no events)\n", style="dim")
    return text


def name_marks_lines(marks: Iterable[str]) -> list[tuple[str, Any]]:
    """A look-alike name's marks (store.names), one line each, under a "⚠ look-alike" label."""
    label = Text(f"{LOOKALIKE_MARKER} look-alike", style=LOOKALIKE_STYLE)
    return [(label if i == 0 else "", safe_text(mark, limit=400, style=LOOKALIKE_STYLE))
            for i, mark in enumerate(marks)]


def request_details(req: RequestView, events: Iterable[EventView]) -> Text:
    status = req.status + (" (re-key: a new password for an existing user; granting it replaces the user's)"
                           if getattr(req, "rekey", False) else
                           " (rotation: another certificate for an existing user; granting it binds the user to it)"
                           if getattr(req, "rotation", False) else
                           " (conflict: another password was tried for this name)" if req.conflict else "")
    text = field_lines([
        ("request", f"#{req.id}"),
        ("username", name_text(req.username, limit=400)),
        *name_marks_lines(getattr(req, "marks", ())),
        ("pairing code", Text(req.pairing_code or "", style="bold")),
        ("status", status),
        ("source", req.source),
        ("client id", req.client_id),
        ("peer", req.peer),
        ("attempts", req.attempts),
        ("first seen", stamp(req.first_seen)),
        ("last seen", stamp(req.last_seen)),
        ("decided by", req.decided_by or "—"),
        ("decided at", stamp(req.decided_at)),
        *certificate_fields(req),  # what to compare with the device before granting (escaped: safe_text)
    ])
    text.append("\nRequested permissions\n", style="bold underline")
    if req.requested_permissions:
        text.append_text(json_block(req.requested_permissions))
    else:
        text.append("    none\n", style="dim")
    text.append("\nContext\n", style="bold underline")
    if req.context:
        text.append_text(json_block(req.context))
    else:
        text.append("    none\n", style="dim")
    text.append("\nHistory\n", style="bold underline")
    text.append_text(history(events))
    return text


def presence_lines(presence: UserPresence, why_not: str | None) -> list[tuple[str, Any]]:
    """Online or not, and the last connection and disconnection the broker reported."""
    if presence.online is None:
        online = f"unknown ({why_not})" if why_not else "unknown"
    elif presence.online:
        online = Text(f"yes ({presence.sessions} session{'s' if presence.sessions != 1 else ''})", style="bold green")
    else:
        online = "no"
    never = "never" if presence.ever_connected is False else "unknown"
    return [
        ("online", online),
        ("last connected", stamp(presence.last_connected) if presence.last_connected else never),
        ("last disconnected", stamp(presence.last_disconnected) if presence.last_disconnected else "—"),
    ]


def user_details(user: UserView, events: Iterable[EventView], presence: UserPresence | None = None,
                 why_not: str | None = None) -> Text:
    perms = "\n".join(f"{p} = {a}" for p, a in user.permissions) or "none"
    text = field_lines([
        ("name", user.name),
        ("admin", "yes" if user.admin else "no"),
        ("disabled", "yes" if user.disabled else "no"),
        ("roles", ", ".join(getattr(user, "roles", None) or []) or "none"),
        *(presence_lines(presence, why_not) if presence is not None else []),
        ("created", stamp(user.created_at)),
        ("created by", user.created_by),
        ("created how", user.created_how),
        *([("certificate", f"{binding}: {user.certificate}")] if (binding := user_binding(user)) else []),
    ])
    text.append("\nPermissions\n", style="bold underline")
    for line in perms.splitlines():
        text.append("    ")
        text.append(printable(line, 300))
        text.append("\n")
    text.append("\nHistory\n", style="bold underline")
    text.append_text(history(events))
    return text


def role_details(role: RoleView, members: list[str], events: Iterable[EventView]) -> Text:
    text = field_lines([
        ("role", role.name),
        ("members", str(len(members))),
        ("created", stamp(role.created_at)),
        ("created by", role.created_by),
    ])
    text.append("\nPermissions (every member's; {username} and {client_id} filled per member)\n",
                style="bold underline")
    for pattern, access in role.permissions or [("none", "")]:
        text.append("    ")
        text.append(printable(f"{pattern} = {access}" if access else pattern, 300))
        text.append("\n")
    text.append("\nMembers\n", style="bold underline")
    for name in members[:200] or ["none"]:
        text.append("    ")
        text.append_text(name_text(name, 80))
        text.append("\n")
    if len(members) > 200:
        text.append(f"    … and {len(members) - 200} more (the Users view lists every user's roles)\n", style="dim")
    text.append("\nHistory\n", style="bold underline")
    text.append_text(history(events))
    return text


def event_details(ev: RelayedEvent, events: Iterable[EventView]) -> Text:
    text = field_lines([
        ("event", f"#{ev.id}"),
        ("time", stamp(ev.time)),
        ("actor", ev.actor),
        ("kind", ev.kind),
        ("subject", ev.subject),
    ])
    text.append("\nDetail\n", style="bold underline")
    text.append_text(json_block(ev.detail or {}))
    text.append("\nHistory of the subject\n", style="bold underline")
    text.append_text(history(events))
    return text


class DetailsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="details-close", tooltip="Close the details"),
        Binding("enter", "close", "Close", show=False, id="details-close", tooltip="Close the details"),
        Binding("q", "close", "Close", show=False, id="details-close", tooltip="Close the details"),
    ]

    def __init__(self, title: Text | str, body: Text) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="details"):
            yield Label(self.title_text, classes="title")
            with VerticalScroll(id="details-scroll"):
                yield Static(self.body, id="details-body")

    def on_mount(self) -> None:
        self.query_one("#details-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
