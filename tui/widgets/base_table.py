"""A table of our own: ordered rows with string keys, a row cursor that stays on its row, and lines rendered
once per row change.

Built on Textual's Line API (a ``ScrollView`` whose ``render_line`` draws one line, as Toolong draws its log
lines) with public API only. Each row's line is cached by (row key, revision of that row, layout, cursor on
it, focus): a row that arrives re-renders that row alone; the rows it pushes down are drawn from the cache.
DataTable, which this replaced, keyed its cell cache on one counter that every ``add_row`` bumped, so every
batch re-rendered every visible cell (docs/benchmarks.md, the dashboard section).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CELL_PADDING = 1  # blank cells left and right of every cell


class Column:
    def __init__(self, key: str, label: str, width: int | None, min_total: int = 0, flex: float = 0.0):
        self.key = key
        self.label = label
        self.width = width
        self.min_total = min_total  # only shown when the table is at least this wide
        self.flex = flex  # share of the spare width (for flexible columns, width is the minimum)


def column_widths(columns: list[Column], width: int) -> dict[str, int]:
    """The columns shown at ``width`` and their widths: narrow tables drop the columns whose ``min_total``
    they do not reach; the spare width goes to the flexible ones by their share."""
    shown = [c for c in columns if width >= c.min_total]
    fixed = sum(c.width or 0 for c in shown)
    spare = max(0, width - 2 - fixed - 2 * CELL_PADDING * len(shown))  # 2: the scrollbar and a margin
    flex_total = sum(c.flex for c in shown) or 1.0
    return {c.key: (c.width or 0) + (int(spare * c.flex / flex_total) if c.flex else 0) for c in shown}


def _looks(cells: dict[str, Any]) -> list:
    """What cells look like (``Text.__eq__`` compares the text and its spans, not its style)."""
    return [(k, v.plain, v.style, v.spans, v.justify) if isinstance(v, Text) else (k, v) for k, v in cells.items()]


class OrderedTable(ScrollView, can_focus=True):
    """Rows are identified by a string key; the table keeps a model and a filter.

    Subclasses say how to render a row (``row_cells``), how to order rows (``order_key``) and what text a
    filter matches (``filter_text``, or ``matches`` itself).
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"ordered-table--header", "ordered-table--cursor"}

    # The looks of Textual's DataTable, which these tables were until they outgrew it.
    DEFAULT_CSS = """
    OrderedTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        overflow-x: auto;
        overflow-y: auto;
        &:focus {
            background-tint: $foreground 5%;
            & > .ordered-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .ordered-table--header {
                background-tint: $foreground 5%;
            }
        }
        & > .ordered-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .ordered-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .ordered-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    COLUMNS: ClassVar[list[Column]] = []

    # Moving, as in k9s, lazygit and htop; the arrows and page keys as in every table.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("ctrl+home", "scroll_top", "First row", show=False),
        Binding("ctrl+end", "scroll_bottom", "Last row", show=False),
        Binding("j", "cursor_down", "Down", show=False, id="row-down", tooltip="Move down a row"),
        Binding("k", "cursor_up", "Up", show=False, id="row-up", tooltip="Move up a row"),
        Binding("home", "scroll_top", "First row", show=False, id="first-row",
                tooltip="First row (the newest); also ctrl+home"),
        Binding("end", "scroll_bottom", "Last row", show=False, id="last-row",
                tooltip="Last row (the oldest); also ctrl+end"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model: dict[str, Any] = {}
        self.filter = ""
        self.unseen = 0  # rows that arrived above the cursor while it was not on the first row (the "N new" hint)
        self.cursor_row = 0
        self._order: list[str] = []  # keys of the rows shown, top to bottom
        self._index: dict[str, int] | None = {}  # key -> position in _order (rebuilt when needed)
        self._revision: dict[str, int] = {}  # key -> revision of its row: bumped when what it shows changes
        self._next_revision = 0
        self._cells: dict[str, tuple[int, dict[str, Any]]] = {}  # key -> (revision, row_cells) last rendered
        self._widths: dict[str, int] = {}  # the columns shown and their widths
        self._layout = 0  # bumped when the columns, the width or the styles change: every line is redrawn
        self._lines: LRUCache[tuple, Strip] = LRUCache(4096)
        self._binding_state: tuple | None = None

    # -- to override -----------------------------------------------------------------
    def row_cells(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    def order_key(self, item: Any) -> Any:
        raise NotImplementedError

    def filter_text(self, item: Any) -> str:
        raise NotImplementedError

    # -- footer ------------------------------------------------------------------------------
    def update_bindings(self) -> None:
        """``refresh_bindings()``, but only when one of this table's actions changed between enabled and
        disabled: a refresh makes the footer recompose its keys, too costly for every cursor move."""
        state = tuple(self.check_action(b.action, ()) for b in self.BINDINGS if isinstance(b, Binding))
        if state != self._binding_state:
            self._binding_state = state
            self.refresh_bindings()

    def unavailable(self, action: str) -> str | None:
        """Why ``action`` cannot run now (for the footer, the palette and the help), or None."""
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.unavailable(action) else True

    class UnseenChanged(Message):
        """The "N new above" count changed (``unseen``)."""

    # -- rows, as the screen and the tests see them ----------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def rows(self) -> dict[str, int]:
        """The keys of the rows shown (``key in table.rows``), each with its position."""
        if self._index is None:
            self._index = {key: i for i, key in enumerate(self._order)}
        return self._index

    def get_row_index(self, key: str) -> int:
        return self.rows[key]

    def row_key(self, index: int) -> str | None:
        return self._order[index] if 0 <= index < len(self._order) else None

    def get_cell(self, key: str, column: str) -> Any:
        """What the row of ``key`` shows in ``column`` now."""
        return self._row_cells(key).get(column, "")

    def matches(self, item: Any) -> bool:
        return not self.filter or self.filter.lower() in self.filter_text(item).lower()

    def shown_items(self) -> list[Any]:
        """The items on display, top to bottom (filtered and ordered)."""
        return [self.model[key] for key in self._order]

    def cursor_key(self) -> str | None:
        return self.row_key(self.cursor_row)

    def cursor_item(self) -> Any:
        key = self.cursor_key()
        return self.model.get(key) if key is not None else None

    # -- the model --------------------------------------------------------------------------------
    def load(self, items: dict[str, Any]) -> None:
        self.model = dict(items)
        self.rebuild()

    def rebuild(self) -> None:
        """Order and filter every row of the model again (on load or a filter change)."""
        keep = self.cursor_key()
        self._set_order(key for key, item in self.model.items() if self.matches(item))
        for key in self.model:
            self._touch(key)  # the item may be a new object under an old key
        self._restore_cursor(keep)
        self.refresh()

    def upsert(self, items: dict[str, Any], removed: Iterable[str] = (), limit: int | None = None) -> None:
        """Add or update some rows (and drop ``removed``), keeping order and cursor; with ``limit``, the rows
        beyond the first ``limit`` leave the table (and the model).

        Follow mode: with the cursor on the first row, a row that arrives above it takes the cursor (the view
        follows the newest); anywhere else the cursor stays on its row (and on its line of the screen) and
        ``unseen`` counts the rows that arrived above it."""
        keep = self.cursor_key()
        follow = self.row_count == 0 or self.cursor_row == 0
        before = self.cursor_row
        shown = self.rows
        arrived = [key for key in items if key not in shown]
        changed = False
        for key in removed:
            if self.model.pop(key, None) is not None or key in shown:
                changed = True
            self._forget(key)
        keys = set(shown).difference(removed)
        for key, item in items.items():
            self.model[key] = item
            self._touch(key)
            if self.matches(item):
                keys.add(key)
            else:
                keys.discard(key)
            changed = True
        if not changed:
            return
        self._set_order(keys, limit)
        if follow and arrived and self.row_count:
            self.cursor_row = 0
            self.scroll_to(y=0, animate=False, immediate=True)
            self._cursor_moved(before)
        else:
            self._restore_cursor(keep, keep_line=True)
            above = sum(1 for key in arrived if key in self.rows and self.rows[key] < self.cursor_row)
            if above and self.cursor_row > 0:
                self.unseen += above
                self.post_message(self.UnseenChanged())
            elif before != self.cursor_row and self.cursor_row == 0 and self.unseen:
                self.unseen = 0
                self.post_message(self.UnseenChanged())
        self.refresh()

    def unseen_text(self) -> str:
        return f"{self.unseen} new above · home: go to the newest" if self.unseen else ""

    def refresh_row(self, key: str) -> None:
        """Draw the row of ``key`` again (what it shows changed outside its item: a selection mark)."""
        if key in self.model:
            self._touch(key)
            index = self.rows.get(key)
            if index is not None:
                self._refresh_index(index)

    def refresh_visible_cells(self) -> None:
        """Ask the rows on screen what they show now (relative times, presence) and draw again only those
        whose cells changed."""
        top = int(self.scroll_y)
        for index in range(top, min(self.row_count, top + self._visible_rows())):
            key = self._order[index]
            cached = self._cells.get(key)
            if cached is None:
                continue  # not drawn yet: it is read when drawn
            cells = self.row_cells(self.model[key])
            if _looks(cells) != _looks(cached[1]):
                self._touch(key)
                self._cells[key] = (self._revision[key], cells)
                self._refresh_index(index)

    def _touch(self, key: str) -> None:
        self._next_revision += 1
        self._revision[key] = self._next_revision

    def _forget(self, key: str) -> None:
        self._revision.pop(key, None)
        self._cells.pop(key, None)

    def _set_order(self, keys: Iterable[str], limit: int | None = None) -> None:
        model, order_key = self.model, self.order_key
        self._order = sorted(keys, key=lambda key: order_key(model[key]))
        if limit is not None and len(self._order) > limit:
            for key in self._order[limit:]:
                model.pop(key, None)
                self._forget(key)
            del self._order[limit:]
        self._index = None
        self._size_to_rows()

    def _size_to_rows(self) -> None:
        """The scrollable size: one line per row, + 1 for the header. A change of it is a layout of the whole
        screen, so a table out of sight (another view) catches up when it is shown."""
        if self.display:
            self.virtual_size = Size(self._content_width(), len(self._order) + 1)

    def on_show(self) -> None:
        self._size_to_rows()

    def _row_cells(self, key: str) -> dict[str, Any]:
        revision = self._revision.get(key, 0)
        cached = self._cells.get(key)
        if cached is None or cached[0] != revision:
            cached = (revision, self.row_cells(self.model[key]))
            self._cells[key] = cached
        return cached[1]

    # -- the cursor ---------------------------------------------------------------------------------
    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        before = self.cursor_row
        self.cursor_row = max(0, min(row, self.row_count - 1))
        self.scroll_to_cursor()
        self._cursor_moved(before)

    def scroll_to_cursor(self) -> None:
        top, visible = int(self.scroll_y), self._visible_rows()
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def _cursor_moved(self, before: int) -> None:
        if before != self.cursor_row:
            self._refresh_index(before)
            self._refresh_index(self.cursor_row)
        if self.cursor_row == 0 and self.unseen:
            self.unseen = 0
            self.post_message(self.UnseenChanged())
        self.update_bindings()

    def _restore_cursor(self, key: str | None, keep_line: bool = False) -> None:
        """The cursor back on the row of ``key`` (else on the last row if it fell off the end); with
        ``keep_line`` the view scrolls with it, so the row stays on its line of the screen."""
        before = self.cursor_row
        if self.row_count == 0:
            self.cursor_row = 0
        elif key is not None and key in self.rows:
            self.cursor_row = self.rows[key]
        elif self.cursor_row >= self.row_count:
            self.cursor_row = self.row_count - 1
        if keep_line and self.cursor_row != before:
            self.scroll_to(y=max(0, self.scroll_y + self.cursor_row - before), animate=False, immediate=True)
        self.scroll_to_cursor()
        self._cursor_moved(before)

    def _visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)  # - 1: the header

    def page_height(self) -> int:
        return self._visible_rows()

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self.cursor_row + 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self.cursor_row - 1)

    def action_page_down(self) -> None:
        self.move_cursor(row=self.cursor_row + self.page_height())

    def action_page_up(self) -> None:
        self.move_cursor(row=self.cursor_row - self.page_height())

    def action_scroll_top(self) -> None:
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self.move_cursor(row=self.row_count - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:  # not the header
            self.move_cursor(row=int(self.scroll_y) + event.y - 1)

    # -- layout and drawing -------------------------------------------------------------------------
    def on_resize(self) -> None:
        self.relayout()

    def relayout(self, force: bool = False) -> None:
        width = self.size.width
        if not width:
            return  # not laid out yet (or hidden): built on the first resize
        widths = column_widths(self.COLUMNS, width)
        if widths != self._widths or force:
            self._widths = widths
            self._size_to_rows()
        self._redraw_all()

    def _content_width(self) -> int:
        return sum(w + 2 * CELL_PADDING for w in self._widths.values())

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._redraw_all()

    def on_focus(self) -> None:
        self._redraw_all()

    def on_blur(self) -> None:
        self._redraw_all()

    def _redraw_all(self) -> None:
        self._layout += 1
        self._lines.clear()
        self.refresh()

    def _refresh_index(self, index: int) -> None:
        y = index + 1 - int(self.scroll_y)  # + 1: the header
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        if y == 0:
            strip = self._lines.get(("header", self._layout, width))
            if strip is None:
                style = self.rich_style + self.get_component_rich_style("ordered-table--header")
                strip = self._render_row({c.key: Text(c.label) for c in self.COLUMNS}, style, Style.null(), width)
                self._lines[("header", self._layout, width)] = strip
        else:
            index = scroll_y + y - 1
            key = self.row_key(index)
            if key is None:
                return Strip.blank(width, self.rich_style)
            cursor = index == self.cursor_row
            cache_key = (key, self._revision.get(key, 0), self._layout, width, cursor)
            strip = self._lines.get(cache_key)
            if strip is None:
                style = self.rich_style
                post = Style.null()
                if cursor:
                    cursor_style = self.get_component_rich_style("ordered-table--cursor")
                    style += cursor_style
                    post = Style.from_color(color=cursor_style.color)  # the cursor's colour wins over the cell's
                strip = self._render_row(self._row_cells(key), style, post, width)
                self._lines[cache_key] = strip
        return strip.crop(scroll_x, scroll_x + width) if scroll_x or strip.cell_length > width else strip

    def _render_row(self, cells: dict[str, Any], style: Style, post: Style, width: int) -> Strip:
        """One line: every shown cell cut or padded to its column (as a one-line Rich render of it would be),
        in one Text rendered once (a Rich render per cell cost ~5 ms a row)."""
        row = Text(no_wrap=True, end="")
        pad = " " * CELL_PADDING
        for key, cell_width in self._widths.items():
            cell = cells.get(key, "")
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            text.truncate(cell_width, overflow=text.overflow or "fold")
            gap = " " * max(0, cell_width - text.cell_len)
            row.append(pad)
            if text.justify == "right":
                row.append(gap)
                row.append_text(text)
            else:
                row.append_text(text)
                row.append(gap)
            row.append(pad)
        segments = Segment.apply_style(row.render(self.app.console), style=style, post_style=post or None)
        return Strip(segments).extend_cell_length(max(width, self.virtual_size.width), style)
