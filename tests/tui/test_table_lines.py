"""The table of our own (tui/widgets/base_table.py): a new row renders that row only, and the cursor keeps
its row (and its line of the screen) when rows arrive above it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import ClassVar

from textual.app import App, ComposeResult

from tui.widgets.base_table import Column, OrderedTable

from .conftest import wait_for


class Items(OrderedTable):
    COLUMNS: ClassVar[list[Column]] = [Column("name", "name", 10, flex=1.0), Column("n", "n", 4)]

    def row_cells(self, item):
        return {"name": item["name"], "n": str(item["n"])}

    def order_key(self, item):
        return -item["n"]  # newest (highest) first, as the requests

    def filter_text(self, item):
        return item["name"]


class One(App):
    def compose(self) -> ComposeResult:
        yield Items(id="items")


def items(*ns):
    return {str(n): {"name": f"item-{n}", "n": n} for n in ns}


@asynccontextmanager
async def hundred_rows():
    app = One()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(Items)
        table.load(items(*range(100)))
        await pilot.pause()
        yield pilot, table


def counting(table):
    rendered = []
    render = table._render_row

    def count(cells, *args):
        rendered.append(cells.get("name"))
        return render(cells, *args)

    table._render_row = count
    return rendered


async def test_a_new_row_renders_that_row_alone():
    async with hundred_rows() as (pilot, table):
        rendered = counting(table)
        table.upsert(items(100))  # on the first row: the view follows, the cursor takes the new row
        await wait_for(pilot, lambda: rendered, message="a frame")
        await pilot.pause()
        # the new row (under the cursor) and the row the cursor left; the rows pushed down come from the cache
        assert sorted(rendered) == ["item-100", "item-99"]
        table.move_cursor(row=3)
        await pilot.pause()
        rendered.clear()
        table.upsert(items(101))  # the cursor keeps its line: the new row is above the screen, nothing to draw
        table.upsert({"50": {"name": "item-50 renamed", "n": 50}})  # below the screen: nothing to draw
        await pilot.pause()
        assert rendered == [] and table.cursor_key() == "97"


async def test_the_cursor_keeps_its_row_and_line_when_rows_arrive_above():
    async with hundred_rows() as (pilot, table):
        table.move_cursor(row=20)  # scrolled: the cursor's row is somewhere on screen
        await pilot.pause()
        key, line = table.cursor_key(), table.cursor_row - table.scroll_y
        table.upsert(items(100, 101, 102))
        await pilot.pause()
        assert table.cursor_key() == key and table.cursor_row == 23
        assert table.cursor_row - table.scroll_y == line
        assert table.unseen == 3 and table.unseen_text().startswith("3 new above")
        await pilot.press("home")
        assert table.cursor_row == 0 and table.unseen == 0
        table.upsert(items(103))  # on the first row the view follows the newest
        await pilot.pause()
        assert table.cursor_key() == "103" and table.unseen == 0
