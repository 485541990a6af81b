"""The ``?`` help screen: generated from the bindings (a remapped key shows as remapped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

ABOUT = (
    "Devices knock by connecting with a username that does not exist yet. While the registry is UNLOCKED, "
    "each attempt becomes a pending request; compare its pairing code with the one the device shows, then "
    "grant it. Granted users start with no permissions unless you give a template such as "
    "devices/{username}/#=readWrite. Status 'conflict' means two passwords were tried for one name: the grant "
    "dialog then offers Force (tab to it, space ticks it), which grants this one and denies its rivals. "
    "The tables follow the newest rows while the cursor is on the first row; elsewhere the cursor stays and "
    "a line says how many rows arrived above it."
)

Section = tuple[str, Sequence[tuple[str, str, str]]]  # (title, [(keys, what, binding id or "")])


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="help-close", tooltip="Close this help"),
        Binding("question_mark", "close", "Close", show=False, id="help-close-help", tooltip="Close this help"),
        Binding("q", "close", "Close", show=False, id="help-close-q", tooltip="Close this help"),
    ]

    def __init__(self, sections: Sequence[Section] = ()) -> None:
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(ratio=1)
        table.add_column(style="dim", no_wrap=True)  # the id a keymap.toml line names
        for i, (section, keys) in enumerate(self.sections):
            if i:
                table.add_row("", "", "")
            table.add_row(Text(section, style="bold underline"), "", Text("id (keymap)", style="dim underline")
                          if i == 0 else "")
            for key, what, binding_id in keys:
                table.add_row(key, what, binding_id)
        with Vertical(id="help"):
            yield Label("client-registry — keys (escape, ? or q closes)", classes="title")
            with VerticalScroll(id="help-scroll"):
                yield Static(table)
                yield Static(Text("\n" + ABOUT, style="dim"))

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
