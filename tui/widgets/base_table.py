"""A DataTable that keeps its rows ordered and its cursor on the same row."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from textual._two_way_dict import TwoWayDict
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


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

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.model: dict[str, Any] = {}
        self.filter = ""
        self._layout_width = -1
        self._shown_columns: list[Column] = []

    # -- to override -----------------------------------------------------------------
    def row_cells(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    def order_key(self, item: Any) -> Any:
        raise NotImplementedError

    def filter_text(self, item: Any) -> str:
        raise NotImplementedError

    # -- layout --------------------------------------------------------------------------
    def on_resize(self) -> None:
        self.relayout()

    def relayout(self, force: bool = False) -> None:
        width = self.size.width or 80
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
            self.columns[c.key].width == widths[c.key] for c in shown if c.key in self.columns
        ):
            return
        self._shown_columns = shown
        self.clear(columns=True)
        for c in shown:
            self.add_column(c.label, width=widths[c.key], key=c.key)
        self.rebuild()

    # -- model -----------------------------------------------------------------------------
    def matches(self, item: Any) -> bool:
        return not self.filter or self.filter.lower() in self.filter_text(item).lower()

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
        for key, item in items:
            self.add_row(*self._cells_for(item), key=key)
        self._restore_cursor(keep)

    def load(self, items: dict[str, Any]) -> None:
        self.model = dict(items)
        self.rebuild()

    def upsert(self, items: dict[str, Any], removed: Iterable[str] = ()) -> None:
        """Add or update some rows (and drop ``removed``), keeping order and cursor."""
        keep = self.cursor_key()
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
                self.update_cell(row_key, column, render(item))
