"""The Roles view: named sets of permissions that users hold besides their own (store/roles.py)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from store import RoleView
from store.durations import ago

from ..safe import safe_text
from .base_table import Column, OrderedTable
from .users_table import format_permissions


class RolesTable(OrderedTable):
    class RoleMessage(Message):
        def __init__(self, role: RoleView) -> None:
            super().__init__()
            self.role = role

    class AddRequested(Message):
        """Create a role (the screen asks for its name)."""

    class PermissionsRequested(RoleMessage):
        """Edit this role's permissions (every member's, at once)."""

    class RemoveRequested(RoleMessage):
        """Remove this role (the screen asks first, naming its members)."""

    class DetailsRequested(RoleMessage):
        pass

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "add_role", "New role", id="role-add", tooltip="Create a role (a named set of permissions)"),
        Binding("p", "edit_permissions", "Permissions", id="role-permissions",
                tooltip="Edit the role's permissions: every member's change at once"),
        Binding("delete", "remove", "Remove", id="role-remove",
                tooltip="Remove the role (asks first, naming its members)"),
        Binding("enter", "details", "Details", show=False, id="role-details",
                tooltip="The role's permissions, members and history"),
    ]

    COLUMNS: ClassVar[list[Column]] = [
        Column("name", "role", 8, flex=0.3),
        Column("members", "members", 7),
        Column("permissions", "permissions", 11, flex=0.7),
        Column("created", "created", 7, min_total=76),
        Column("by", "by", 10, min_total=100),
    ]

    def row_cells(self, role: Any) -> dict[str, Any]:
        return {
            "name": safe_text(role.name),
            "members": Text(str(role.members), justify="right"),
            "permissions": safe_text(format_permissions(role.permissions), limit=200),
            "created": Text(ago(role.created_at, self.app.clock()), justify="right"),
            "by": safe_text(role.created_by, limit=24),
        }

    def order_key(self, role: Any) -> Any:
        return role.name.lower(), role.name

    def filter_text(self, role: Any) -> str:
        return " ".join((role.name, format_permissions(role.permissions), str(role.created_by)))

    def refresh_ages(self) -> None:
        self.refresh_visible_cells()

    def unavailable(self, action: str) -> str | None:
        if action in ("edit_permissions", "remove", "details") and self.cursor_item() is None:
            return "no role under the cursor"
        return None

    def _post(self, message_type: type) -> None:
        role = self.cursor_item()
        if role is not None:
            self.post_message(message_type(role))

    def action_add_role(self) -> None:
        self.post_message(self.AddRequested())

    def action_edit_permissions(self) -> None:
        self._post(self.PermissionsRequested)

    def action_remove(self) -> None:
        self._post(self.RemoveRequested)

    def action_details(self) -> None:
        self._post(self.DetailsRequested)
