"""Small dialogs. Each only collects an answer and ``dismiss``es with it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from store import RequestView
from store.device_text import printable
from store.durations import MINUTE, UNLOCK_DEFAULT, parse_duration
from store.topics import ACCESS_VALUES
from store.validation import PERMISSION_EXAMPLE, parse_permissions

from ..safe import name_text, safe_text

TEMPLATE_EXAMPLE = PERMISSION_EXAMPLE


def format_permissions(perms: Sequence[tuple[str, str]]) -> str:
    return " ".join(f"{p}={a}" for p, a in perms)


@dataclass(frozen=True)
class GrantChoice:
    permissions: list[tuple[str, str]]
    force: bool = False
    include_requested: bool = False
    template: str = ""  # as typed, remembered for the operator's next grant
    roles: tuple[str, ...] = ()  # in the order given, remembered for the operator's next grant


def parse_role_names(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """``"sensors, plant-readers"`` -> the role names in order; ValueError naming an unknown one."""
    names = tuple(dict.fromkeys(n for n in re.split(r"[\s,]+", text.strip()) if n))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no role named {unknown[0]!r}" + (f" (roles: {', '.join(known)})" if known else
                                                            " (there are no roles yet: 4, then n)"))
    return names


class DialogCheckbox(Checkbox, inherit_bindings=False):
    """A checkbox in a dialog: space ticks it, enter confirms the dialog (Textual's Checkbox toggles on enter
    too, so ticking Force and pressing enter used to untick it and leave the dialog open)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_button", "Toggle", show=False, id="dialog-toggle",
                tooltip="Tick or untick the checkbox (Force, requested permissions)"),
        Binding("enter", "screen.ok", "Confirm", show=False, id="dialog-confirm",
                tooltip="Confirm the dialog, also from a checkbox"),
    ]


class ErrorLabel(Label):
    """A dialog's error line: when its message takes more rows, the dialog's listing gives them up (the
    dialog is at its full height already, so only this label's size changes)."""

    def on_resize(self) -> None:
        fit = getattr(self.screen, "fit_listing", None)
        if fit is not None:
            self.screen.call_after_refresh(fit)


class Dialog(ModalScreen):
    """Shared look and keys: escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="dialog-cancel", tooltip="Cancel: close the dialog, nothing changes"),
    ]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id == "ok":
            self.action_ok()

    def action_ok(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def show_error(self, message: str) -> None:
        self.query_one("#error", Label).update(Text(message))  # its rows come from the listing (ErrorLabel)

    LISTING_ROWS = 8  # the most rows a listing shows before it scrolls
    SHORT = 24  # below this many rows dialogs drop their blank rows and draw buttons one row tall

    def on_resize(self) -> None:
        self.set_class(self.size.height < self.SHORT, "-short")
        self.call_after_refresh(self.fit_listing)

    def on_screen_resume(self) -> None:  # a dialog opened at its size gets no resize of its own
        self.on_resize()

    @staticmethod
    def listing(body: Text) -> ComposeResult:
        """A list that scrolls in as few rows as fit, and a line saying how many it cannot show."""
        with VerticalScroll(classes="listing"):
            yield Static(body)
        yield Label("", classes="more")

    def fit_listing(self) -> None:
        """On a short terminal the listing scrolls in fewer rows, so the input and buttons stay in sight, and
        the line under it says how many it cannot show ("… 46 more")."""
        for listing in self.query(".listing"):
            dialog = listing.parent  # clipped to the screen: count its parts, not its height
            more = dialog.query_children(".more").first(Label)
            chrome = dialog.outer_size.height - dialog.content_size.height
            others = chrome + listing.styles.margin.height + sum(
                child.outer_size.height + child.styles.margin.height
                for child in dialog.children if child is not listing and child is not more and child.display)
            lines = listing.virtual_size.height
            room = self.size.height - others
            rows = max(1, min(self.LISTING_ROWS, room, lines))
            if rows < lines:  # the "more" line takes a row of the listing's
                rows = max(1, min(rows, room - 1))
            if listing.styles.max_height is None or listing.styles.max_height.value != rows:
                listing.styles.max_height = rows
            self._say_more(listing, more, rows)
            if not listing.has_class("-watched"):
                listing.add_class("-watched")
                self.watch(listing, "scroll_y", lambda _y, listing=listing, more=more: self._say_more(
                    listing, more, int(listing.styles.max_height.value)), init=False)

    def _say_more(self, listing, more: Label, rows: int) -> None:
        lines = listing.virtual_size.height
        hidden = max(0, lines - rows - round(listing.scroll_y))
        more.display = lines > rows or not self.has_class("-short")  # else it is a blank row
        more.update("" if lines <= rows else f"… {hidden} more (scroll the list)" if hidden else "(end of the list)")

    @staticmethod
    def buttons(ok_label: str, ok_variant: str = "primary") -> ComposeResult:
        with Horizontal(classes="buttons"):
            yield Button(ok_label, variant=ok_variant, id="ok")
            yield Button("Cancel", id="cancel")


class GrantModal(Dialog):
    """Lists the requests to grant and asks for an optional permission template."""

    def __init__(self, targets: Sequence[RequestView], template: str = "", roles: Sequence[str] = (),
                 known_roles: Sequence[str] = ()) -> None:
        super().__init__()
        self.targets = list(targets)
        self.template = template  # pre-filled: the operator's last template (Registry.last_template)
        self.known_roles = list(known_roles)
        self.roles = [r for r in roles if r in self.known_roles]  # the operator's last roles that still exist

    def compose(self) -> ComposeResult:
        n = len(self.targets)
        with Vertical(classes="dialog", id="grant-dialog"):
            yield Label(f"Grant {n} request{'s' if n != 1 else ''}", classes="title")
            listing = Text(no_wrap=True, overflow="ellipsis")  # one row a request: "N more" counts requests
            for i, req in enumerate(self.targets):
                if i:
                    listing.append("\n")
                listing.append(f"{req.pairing_code} ", style="bold")
                listing.append_text(name_text(req.username, 40))
                listing.append(f"  #{req.id} {req.source}", style="dim")
                if req.needs_force:
                    listing.append(f"  {req.label}", style="bold #ff6b6b")
                if req.requested_permissions:
                    listing.append("  asks for permissions", style="cyan")
                if getattr(req, "requested_roles", None):
                    listing.append("  asks for roles ", style="cyan")
                    listing.append(printable(", ".join(req.requested_roles), 60), style="cyan")
            yield from self.listing(listing)
            yield Label("Check each pairing code against the device's display.", classes="hint")
            yield Label("Permissions (optional, {username} allowed):")
            yield Input(value=self.template, placeholder=f"none; e.g. {TEMPLATE_EXAMPLE}", id="template")
            if self.known_roles:
                yield Label(Text(f"Roles, in order (of {', '.join(self.known_roles)}):", overflow="ellipsis",
                                 no_wrap=True))
                yield Input(value=", ".join(self.roles), placeholder="none; e.g. " + self.known_roles[0], id="roles")
            yield ErrorLabel("", id="error", classes="error")
            if any(r.requested_permissions or getattr(r, "requested_roles", None) for r in self.targets):
                yield DialogCheckbox("Also grant the permissions and roles the device asked for", value=True,
                                     id="requested")
            if any(r.needs_force for r in self.targets):
                rekey = any(getattr(r, "rekey", False) for r in self.targets)
                rotation = any(getattr(r, "rotation", False) for r in self.targets)
                yield DialogCheckbox("Force: the new password replaces the user's" if rekey else
                                     "Force: the new certificate replaces the user's" if rotation else
                                     "Force: this password wins, its rivals are denied", value=False, id="force")
            yield from self.buttons("Grant", "success")

    def on_mount(self) -> None:
        self.query_one("#template", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_ok()

    def action_ok(self) -> None:
        try:
            perms = parse_permissions(self.query_one("#template", Input).value)
            roles = parse_role_names(self.query_one("#roles", Input).value, self.known_roles) if self.query(
                "#roles") else ()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        force = bool(self.query("#force") and self.query_one("#force", Checkbox).value)
        requested = bool(self.query("#requested") and self.query_one("#requested", Checkbox).value)
        conflicting = [r for r in self.targets if r.needs_force]
        if conflicting and not force:  # the dialog stays open with what was typed
            ids = ", ".join(f"#{r.id}" for r in conflicting[:5])
            self.show_error(
                f"{ids}: another password was tried for this name (or it is a user's); tick Force (tab, space) "
                "to grant it, or cancel")
            return
        self.dismiss(GrantChoice(perms, force=force, include_requested=requested,
                                 template=self.query_one("#template", Input).value, roles=roles))


class ConfirmModal(Dialog):
    """Yes or no. ``y``/enter confirm, ``n``/escape cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "ok", "Yes", id="confirm-yes", tooltip="Yes (as enter on the confirm button)"),
        Binding("n", "cancel", "No", id="confirm-no", tooltip="No (as escape)"),
    ]

    def __init__(self, title: str, body: Text | str, ok_label: str = "Confirm", ok_variant: str = "error") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.ok_label = ok_label
        self.ok_variant = ok_variant

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield from self.listing(self.body if isinstance(self.body, Text) else Text(self.body))
            yield from self.buttons(self.ok_label, self.ok_variant)

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_ok(self) -> None:
        self.dismiss(True)


class DurationModal(Dialog):
    """How long to unlock for."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Unlock the registry for…", classes="title")
            yield Input(value=str(UNLOCK_DEFAULT // MINUTE), placeholder="minutes, or 90s / 10m / 2h", id="duration")
            yield ErrorLabel("", id="error", classes="error")
            yield from self.buttons("Unlock")

    def on_mount(self) -> None:
        self.query_one("#duration", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_ok()

    def action_ok(self) -> None:
        try:
            seconds = parse_duration(self.query_one("#duration", Input).value)
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.dismiss(seconds)


@dataclass(frozen=True)
class AccessChoice:
    permissions: list[tuple[str, str]]
    roles: tuple[str, ...] | None = None  # None: roles were not edited (a role's own permissions)


class PermissionsModal(Dialog):
    """Edit a user's roles and permissions (or a role's permissions) as ``PATTERN=ACCESS`` words."""

    def __init__(self, username: str, permissions: Sequence[tuple[str, str]], owner: str = "",
                 roles: Sequence[str] | None = None, known_roles: Sequence[str] = ()) -> None:
        super().__init__()
        self.username = username
        self.permissions = list(permissions)
        self.owner = owner  # "role " for a role
        self.roles = roles  # a user's roles, in order (None: no roles field)
        self.known_roles = list(known_roles)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            title = Text(f"Permissions of {self.owner}")
            title.append_text(safe_text(self.username, 40))
            yield Label(title, classes="title")
            yield Label(f"PATTERN=ACCESS words ({', '.join(ACCESS_VALUES)}); empty: none.")
            yield Input(value=format_permissions(self.permissions), placeholder=TEMPLATE_EXAMPLE, id="permissions")
            if self.roles is not None:
                known = ", ".join(self.known_roles) or "none yet: 4, then n"
                yield Label(Text(f"Roles, in order (of {known}):", overflow="ellipsis", no_wrap=True))
                yield Input(value=", ".join(self.roles), placeholder="none", id="roles")
            yield ErrorLabel("", id="error", classes="error")
            yield from self.buttons("Save")

    def on_mount(self) -> None:
        self.query_one("#permissions", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_ok()

    def action_ok(self) -> None:
        try:
            perms = parse_permissions(self.query_one("#permissions", Input).value)
            roles = None if self.roles is None else parse_role_names(self.query_one("#roles", Input).value,
                                                                      [*self.known_roles, *self.roles])
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.dismiss(AccessChoice(perms, roles))


class TextModal(Dialog):
    """One line of text (a name pattern, a role's name); ``check`` returns why a value is refused, or None."""

    def __init__(self, title: str, ok_label: str, placeholder: str = "", check=None) -> None:
        super().__init__()
        self.title_text = title
        self.ok_label = ok_label
        self.placeholder = placeholder
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Input(placeholder=self.placeholder, id="text")
            yield ErrorLabel("", id="error", classes="error")
            yield from self.buttons(self.ok_label)

    def on_mount(self) -> None:
        self.query_one("#text", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_ok()

    def action_ok(self) -> None:
        value = self.query_one("#text", Input).value.strip()
        problem = "write something, or escape to cancel" if not value else (self.check(value) if self.check else None)
        if problem:
            self.show_error(problem)
            return
        self.dismiss(value)


def name_pattern_modal() -> TextModal:
    return TextModal("Select pending requests whose name matches", "Select",
                     "e.g. sensor-*  (* any text, ? one character, [0-9] one of)")
