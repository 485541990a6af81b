"""The ``?`` help screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

KEYS = [
    ("Everywhere", [
        ("u", "unlock for 5 minutes / lock now"),
        ("U", "unlock for a duration you type"),
        ("1 2 3, tab", "Requests, Users, Audit"),
        ("/", "filter the view by text (enter keeps it, esc clears)"),
        ("esc", "clear the selection, then the filter"),
        ("ctrl+p", "command palette: every action by name"),
        ("?", "this help"),
        ("q", "quit"),
    ]),
    ("Requests", [
        ("space", "select / unselect the request under the cursor"),
        ("a", "select every pending request shown"),
        ("g", "grant the selection (or the row): asks for permissions"),
        ("d", "deny the selection (or the row), after confirmation"),
        ("enter", "details: every field, context, history"),
    ]),
    ("Users", [
        ("p", "edit permissions (PATTERN=ACCESS …)"),
        ("x", "disable / enable"),
        ("delete", "remove (after confirmation)"),
        ("enter", "details and history"),
    ]),
]

ABOUT = (
    "Devices knock by connecting with a username that does not exist yet. While the registry is UNLOCKED, "
    "each attempt becomes a pending request; compare its pairing code with the one the device shows, then "
    "grant it. Granted users start with no permissions unless you give a template such as "
    "devices/{username}/#=readWrite. Status 'conflict' means two passwords were tried for one name."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for section, keys in KEYS:
            table.add_row(Text(section, style="bold underline"), "")
            for key, what in keys:
                table.add_row(key, what)
        with Vertical(id="help"):
            yield Label("client-registry — keys", classes="title")
            with VerticalScroll(id="help-scroll"):
                yield Static(table)
                yield Static(Text("\n" + ABOUT, style="dim"))

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
