"""The Users view."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from store import PresenceSnapshot, UserView
from store.certificate_text import user_binding
from store.device_text import printable
from store.durations import ago, last_connected

from ..safe import safe_text
from .base_table import Column, OrderedTable


def format_permissions(perms: list[tuple[str, str]]) -> str:
    return ", ".join(f"{p}={a}" for p, a in perms) if perms else "—"


def access_text(user: Any) -> Text:
    """A user's roles (in its order, in cyan) and then its own permissions."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for role in getattr(user, "roles", None) or []:
        text.append_text(safe_text(role, limit=64, style="cyan"))
        text.append(" ")
    if user.permissions or not text:
        text.append_text(safe_text(format_permissions(user.permissions), limit=200))
    return text


def how_word(how: str) -> str:
    """``registration-mqtt`` -> ``mqtt``: how the user came to be, in a word."""
    return str(how).removeprefix("registration-")


class UsersTable(OrderedTable):
    class UserMessage(Message):
        def __init__(self, user: UserView) -> None:
            super().__init__()
            self.user = user

    class PermissionsRequested(UserMessage):
        """Edit this user's permissions."""

    class DisableToggled(UserMessage):
        """Disable this user (or enable it, when it is disabled)."""

    class RemoveRequested(UserMessage):
        """Remove this user (the screen asks first)."""

    class DetailsRequested(UserMessage):
        pass

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "edit_permissions", "Permissions", id="permissions",
                tooltip="Edit the user's roles and own topic permissions"),
        Binding("x", "toggle_disabled", "Disable", id="disable", tooltip="Disable or enable the user"),
        Binding("delete", "remove", "Remove", id="remove", tooltip="Remove the user (asks first)"),
        Binding("enter", "details", "Details", show=False, id="user-details",
                tooltip="Every field and the history of the user"),
    ]

    COLUMNS: ClassVar[list[Column]] = [
        Column("name", "name", 10, flex=0.45),
        Column("flags", "flags", 8),
        Column("connected", "connected", 9),
        Column("permissions", "roles, permissions", 18, flex=0.35),
        Column("how", "how", 7, min_total=100),
        Column("created", "created", 7, min_total=100),  # under 100 columns "connected" matters more
        Column("by", "by", 8, min_total=100, flex=0.2),
    ]

    presence: PresenceSnapshot | None = None  # the last read (the screen refreshes it while this view shows)

    def presence_cell(self, user: Any) -> Text:
        """``● online``, or when it last connected (``3m ago``, ``never``, ``unknown``)."""
        if self.presence is None:
            return Text("")
        seen = self.presence.of(user.name, user.created_at)
        if seen.online:
            return Text("● online", style="bold green")
        word = last_connected(seen, self.app.clock())
        return Text(word, style="dim" if word in ("never", "unknown") else "")

    def show_presence(self, snapshot: PresenceSnapshot) -> None:
        self.presence = snapshot
        self.refresh_visible_cells()

    def presence_note(self) -> str:
        """Why nobody shows online, when the broker's connections are not watched now."""
        if self.presence is None or self.presence.watched:
            return ""
        return f"who is online is unknown: {self.presence.why_not}"

    def row_cells(self, user: Any) -> dict[str, Any]:
        flags = []
        if user.admin:
            flags.append(("admin", "bold magenta"))
        if user.disabled:
            flags.append(("disabled", "bold #ff6b6b"))
        binding = user_binding(user)
        if binding:
            flags.append((binding, "bold cyan"))
        flag_text = Text()
        for i, (word, style) in enumerate(flags):
            if i:
                flag_text.append(" ")
            flag_text.append(word, style=style)
        return {
            "name": safe_text(user.name),
            "flags": flag_text,
            "connected": self.presence_cell(user),
            "permissions": access_text(user),
            "how": safe_text(how_word(user.created_how), limit=12),
            "created": Text(ago(user.created_at, self.app.clock()), justify="right"),
            "by": safe_text(user.created_by, limit=24),
        }

    def order_key(self, user: Any) -> Any:
        return (printable(user.name, None).lower(), user.name)

    def filter_text(self, user: Any) -> str:
        return " ".join((user.name, *(getattr(user, "roles", None) or []), format_permissions(user.permissions),
                         "admin" if user.admin else "",
                         "disabled" if user.disabled else "", str(user.created_how), str(user.created_by)))

    def refresh_ages(self) -> None:
        self.refresh_visible_cells()

    def unavailable(self, action: str) -> str | None:
        user = self.cursor_item()
        if action in ("edit_permissions", "toggle_disabled", "remove", "details") and user is None:
            return "no user under the cursor"
        if action in ("toggle_disabled", "remove") and user is not None and user.name == self.app.login_name:
            return f"{user.name} is the dashboard's own broker login: disabling or removing it cuts the live feed"
        return None

    def _post(self, message_type: type) -> None:
        user = self.cursor_item()
        if user is not None:
            self.post_message(message_type(user))

    def action_edit_permissions(self) -> None:
        self._post(self.PermissionsRequested)

    def action_toggle_disabled(self) -> None:
        self._post(self.DisableToggled)

    def action_remove(self) -> None:
        self._post(self.RemoveRequested)

    def action_details(self) -> None:
        self._post(self.DetailsRequested)
