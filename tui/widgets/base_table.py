"""A DataTable that keeps its rows ordered and its cursor on the same row."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from importlib.metadata import PackageNotFoundError, version

from textual._two_way_dict import TwoWayDict
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import Row, RowKey


# OrderedTable reads and writes DataTable's private state (row locations, render caches, the update count) as
# this release of Textual keeps it; another release may keep it differently.
TEXTUAL_VERSION = "8.2.8"


def textual_problem() -> str | None:
    """One line when the installed Textual is not the release the dashboard was built against."""
    try:
        found = version("textual")
    except PackageNotFoundError:
        return "Textual is not installed: pip install -e . (it pins textual==" + TEXTUAL_VERSION + ")"
    if found != TEXTUAL_VERSION:
        return (f"the dashboard needs Textual {TEXTUAL_VERSION} (its tables use that release's internals), "
                f"found {found}: pip install textual=={TEXTUAL_VERSION}")
    return None


class Column:
    def __init__(self, key: str, label: str, width: int | None, min_total: int = 0, flex: float = 0.0):
        self.key = key
        self.label = label
        self.width = width
        self.min_total = min_total  # only shown when the table is at least this wide
        self.flex = flex  # share of the spare width (for flexible columns, width is the minimum)


class OrderedTable(DataTable):
    """Rows are identified by a string key; the table keeps a model and a filter.

    Subclasses say how to render a row (``row_cells``), how to order rows
    (``order_key``) and what text a filter matches (``filter_text``).
    """

    COLUMNS: list[Column] = []

    # Moving, as in k9s, lazygit and htop (DataTable's own home/end scroll sideways, which these tables never need).
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="row-down", tooltip="Move down a row"),
        Binding("k", "cursor_up", "Up", show=False, id="row-up", tooltip="Move up a row"),
        Binding("home", "scroll_top", "First row", show=False, id="first-row",
                tooltip="First row (the newest); also ctrl+home"),
        Binding("end", "scroll_bottom", "Last row", show=False, id="last-row",
                tooltip="Last row (the oldest); also ctrl+end"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.model: dict[str, Any] = {}
        self.filter = ""
        self.unseen = 0  # rows that arrived above the cursor while it was not on the first row (the "N new" hint)
        self._layout_width = -1
        self._shown_columns: list[Column] = []
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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row == 0 and self.unseen:
            self.unseen = 0
            self.post_message(self.UnseenChanged())
        self.update_bindings()

    class UnseenChanged(Message):
        """The "N new above" count changed (``unseen``)."""

    # -- layout --------------------------------------------------------------------------
    def on_resize(self) -> None:
        self.relayout()

    def relayout(self, force: bool = False) -> None:
        width = self.size.width
        if not width:
            return  # not laid out yet (or hidden): built on the first resize
        if width == self._layout_width and not force:
            return
        self._layout_width = width
        shown = [c for c in self.COLUMNS if width >= c.min_total]
        fixed = sum(c.width or 0 for c in shown)
        padding = 2 * self.cell_padding * len(shown)
        spare = max(0, width - 2 - fixed - padding)
        flex_total = sum(c.flex for c in shown) or 1.0
        widths = {c.key: (c.width or 0) + (int(spare * c.flex / flex_total) if c.flex else 0) for c in shown}
        if [c.key for c in shown] == [c.key for c in self._shown_columns] and all(
            c.key in self.columns for c in shown
        ):
            if any(self.columns[c.key].width != widths[c.key] for c in shown):
                # same columns, other widths: resize them in place instead of re-adding every row
                for c in shown:
                    self.columns[c.key].width = widths[c.key]
                self._require_update_dimensions = True
                self._update_count += 1
                self.refresh(layout=True)
            return
        self._shown_columns = shown
        self.clear(columns=True)
        for c in shown:
            self.add_column(c.label, width=widths[c.key], key=c.key)
        self.rebuild()

    # -- model -----------------------------------------------------------------------------
    def matches(self, item: Any) -> bool:
        return not self.filter or self.filter.lower() in self.filter_text(item).lower()

    def shown_items(self) -> list[Any]:
        """The items on display, top to bottom (filtered and ordered)."""
        return [self.model[self._row_locations.get_key(i).value] for i in range(self.row_count)]

    def cursor_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the (just emptied) table
            return None

    def cursor_item(self) -> Any:
        key = self.cursor_key()
        return self.model.get(key) if key is not None else None

    def _cells_for(self, item: Any) -> list[Any]:
        cells = self.row_cells(item)
        return [cells.get(c.key, "") for c in self._shown_columns]

    def rebuild(self) -> None:
        """Re-create every row from the model (on load, filter change or relayout)."""
        keep = self.cursor_key()
        self.clear()
        if not self._shown_columns:
            return
        items = sorted((i for i in self.model.items() if self.matches(i[1])), key=lambda kv: self.order_key(kv[1]))
        self._bulk_add((key, self._cells_for(item)) for key, item in items)
        self._restore_cursor(keep)

    def _bulk_add(self, keyed_cells: Iterable[tuple[str, list[Any]]]) -> None:
        """``add_row`` for many rows at once, into an empty table.

        ``add_row`` re-validates the cursor and queues every cell to be measured (for auto-width
        columns); every column here has a fixed width, so 10,000 rows need neither. This relies on
        DataTable internals (pinned by the textual version range); it falls back to ``add_row``
        if they are not there.
        """
        needed = ("_row_locations", "_data", "rows", "_require_update_dimensions", "_update_count")
        if self.row_count or not all(hasattr(self, name) for name in needed):
            for key, cells in keyed_cells:
                self.add_row(*cells, key=key)
            return
        columns = [c.key for c in self.ordered_columns]
        locations, data, rows = self._row_locations, self._data, self.rows
        for index, (key, cells) in enumerate(keyed_cells):
            row_key = RowKey(key)
            locations[row_key] = index
            data[row_key] = dict(zip(columns, cells))
            rows[row_key] = Row(row_key, 1, None, False)
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        self.check_idle()
        self.refresh()

    def load(self, items: dict[str, Any]) -> None:
        self.model = dict(items)
        self.rebuild()

    def upsert(self, items: dict[str, Any], removed: Iterable[str] = ()) -> None:
        """Add or update some rows (and drop ``removed``), keeping order and cursor.

        Follow mode: with the cursor on the first row, a row that arrives above it takes the cursor (the view
        follows the newest); anywhere else the cursor stays on its row and ``unseen`` counts the rows that
        arrived above it."""
        keep = self.cursor_key()
        follow = self.row_count == 0 or self.cursor_row == 0
        before = self.cursor_row
        arrived = [key for key in items if key not in self.rows]
        changed = False
        for key in removed:
            self.model.pop(key, None)
            if key in self.rows:
                self.remove_row(key)
                changed = True
        for key, item in items.items():
            self.model[key] = item
            shown = key in self.rows
            if not self.matches(item):
                if shown:
                    self.remove_row(key)
                    changed = True
                continue
            if not self._shown_columns:
                continue
            cells = self._cells_for(item)
            if shown:
                for column, value in zip(self._shown_columns, cells):
                    self.update_cell(key, column.key, value)
            else:
                self.add_row(*cells, key=key)
            changed = True
        if changed:
            self._sort_by_model()
            if follow and arrived and self.row_count:
                self.move_cursor(row=0, animate=False)
                self.scroll_to(y=0, animate=False)
            else:
                self._restore_cursor(keep)
                above = sum(1 for key in arrived if key in self.rows and self.get_row_index(key) < self.cursor_row)
                if above and self.cursor_row > 0:
                    self.unseen += above
                    self.post_message(self.UnseenChanged())
                elif before != self.cursor_row and self.cursor_row == 0 and self.unseen:
                    self.unseen = 0
                    self.post_message(self.UnseenChanged())

    def unseen_text(self) -> str:
        return f"{self.unseen} new above · home: go to the newest" if self.unseen else ""

    def drop_rows(self, keys: list[str]) -> None:
        """Remove many rows at once (``remove_row`` renumbers every row, once per call)."""
        keep = self.cursor_key()
        for key in keys:
            self.model.pop(key, None)
            row_key = RowKey(key)
            if row_key in self.rows:
                del self.rows[row_key]
                del self._data[row_key]
        self._require_update_dimensions = True
        self._sort_by_model()
        self.cursor_coordinate = self.cursor_coordinate  # re-validated against the new row count
        self._restore_cursor(keep)

    def _sort_by_model(self) -> None:
        order = sorted(self._data.keys(), key=lambda rk: self.order_key(self.model[rk.value]))
        self._row_locations = TwoWayDict({rk: i for i, rk in enumerate(order)})
        self._update_count += 1
        self.refresh()

    def _restore_cursor(self, key: str | None) -> None:
        if self.row_count == 0:
            return
        if key is not None and key in self.rows:
            self.move_cursor(row=self.get_row_index(key), animate=False)
        elif self.cursor_row >= self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    def set_cell(self, key: str | RowKey, column: str, value: Any) -> None:
        """``update_cell`` for one cell, leaving the other rows' render caches alone.

        ``update_cell`` bumps the table's update count, which is part of every cache key: the next frame
        re-renders every visible cell (and rebuilds the row offsets). Here the cell is skipped when its
        value is unchanged, else only the caches of its row are dropped. Relies on DataTable internals
        (pinned by the textual version range); falls back to ``update_cell`` if they are not there.
        """
        row_key = key if isinstance(key, RowKey) else RowKey(key)
        row = self._data.get(row_key)
        if row is None or column not in self.columns:
            return
        if row.get(column) == value:
            return
        caches = ("_cell_render_cache", "_row_render_cache", "_row_renderable_cache", "_line_cache")
        if not all(hasattr(self, name) for name in caches):
            self.update_cell(row_key, column, value)
            return
        row[column] = value
        index = self._row_locations.get(row_key)
        for cache in (self._cell_render_cache, self._row_render_cache):
            for cache_key in [k for k in cache.keys() if k[0] == row_key]:
                cache.discard(cache_key)
        for cache_key in [k for k in self._row_renderable_cache.keys() if k[1] == index]:
            self._row_renderable_cache.discard(cache_key)
        self._line_cache.clear()  # keyed by screen line: cheap to re-assemble from the row caches
        if index is not None:
            self.refresh_row(index)

    def refresh_column_cells(self, column: str, render: Callable[[Any], Any]) -> None:
        """Re-render one column for the rows on screen (relative times kept fresh)."""
        if column not in self.columns or self.row_count == 0:
            return
        top = int(self.scroll_y)
        height = max(1, self.size.height)
        for index in range(top, min(self.row_count, top + height)):
            row_key: RowKey = self._row_locations.get_key(index)
            if row_key is None:
                continue
            item = self.model.get(row_key.value)
            if item is not None:
                self.set_cell(row_key, column, render(item))
