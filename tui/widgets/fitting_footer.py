"""Textual's footer, fitted to the terminal: when every key does not fit on the line, the least needed ones
leave the footer first (they stay in help, `?`, and the palette), so `? Help` and `q Quit` are never cut."""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Actions whose keys leave the footer first, in this order, when the line is too narrow.
DROP_ORDER = ("command_palette", "select_pending", "lock", "toggle_select", "filter", "select_matching",
              "unlock", "toggle_disabled", "remove", "edit_permissions", "deny")


def key_width(key: FooterKey) -> int:
    """Cells a compact footer key takes: key, a space, description, a margin (the palette's: border, padding)."""
    extra = 3 if "-command-palette" in key.classes else 2
    return cell_len(key.key_display) + cell_len(key.description) + extra


class FittingFooter(Footer):
    def __init__(self) -> None:
        super().__init__(compact=True)
        self._fitted_width = 0

    def compose(self):
        widgets = list(super().compose())
        width = self.size.width or self.app.size.width
        self._fitted_width = width
        for action in DROP_ORDER:
            if sum(key_width(w) for w in widgets if isinstance(w, FooterKey)) <= width:
                break
            widgets = [w for w in widgets if not (isinstance(w, FooterKey) and w.action == action)]
        yield from widgets

    def on_resize(self) -> None:
        if self.size.width != self._fitted_width:
            self.call_after_refresh(self.recompose)
