"""The requests table holds a bounded window of the requests (RequestsTable.WINDOW rows), paged from the
database; what it does not hold is said on screen. Real SQLite file, no broker (the changelog is polled)."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from store import open_registry
from tui.app import RegistryApp
from tui.screens.modals import GrantModal
from tui.widgets.requests_table import RequestsTable

from .conftest import wait_for

N = 45


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(RequestsTable, "WINDOW", 20)
    monkeypatch.setattr(RequestsTable, "STEP", 10)


@pytest.fixture
def filled(reg, small_window):
    reg.unlock(300, actor="test")
    for i in range(N):
        res = reg.record_attempt(f"dev-{i:03d}", "secret-1", f"cid-{i}", f"10.0.{i}.1:5000", "mqtt")
        assert res.accepted, res.reason
    return reg


def table(app) -> RequestsTable:
    return app.screen_stack[0].requests_table


def info(app) -> Static:
    return app.screen_stack[0].query_one("#window-info", Static)


def names(app) -> list[str]:
    return [r.username for r in table(app).shown_items()]


async def test_window_is_capped_and_says_so(filled):
    app = RegistryApp(filled)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert table(app).row_count == 20 and table(app).total == N
        assert names(app) == [f"dev-{i:03d}" for i in range(44, 24, -1)]  # newest first
        assert info(app).display
        assert "rows 1–20 of 45 requests" in str(info(app).render())
        assert app.screen_stack[0].header_state.pending == N  # the header counts all of them


async def test_paging_past_either_end(filled):
    order = [r.username for r in filled.requests(include_all=True)]
    app = RegistryApp(filled)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        t = table(app)
        await pilot.press("ctrl+end")
        assert t.window_start == N - 20 and t.cursor_item().username == order[-1]
        assert "rows 26–45 of 45" in str(info(app).render())
        await pilot.press("ctrl+home")
        assert t.window_start == 0 and t.cursor_item().username == order[0]
        for _ in range(19):
            await pilot.press("down")
        assert t.window_start == 0 and t.cursor_item().username == order[19]
        await pilot.press("down")  # past the last row: the window moves, the cursor goes on
        assert t.window_start == 10 and t.row_count == 20
        assert t.cursor_item().username == order[20]
        await pilot.press("up", *["up"] * 10)  # back above the first row
        assert t.window_start == 0 and t.cursor_item().username == order[9]


async def test_filter_finds_requests_beyond_the_window(filled):
    app = RegistryApp(filled)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "dev-003" not in names(app)
        await pilot.press("slash", *"dev-00", "enter")
        assert names(app) == [f"dev-{i:03d}" for i in range(9, -1, -1)]
        assert not info(app).display  # all ten matches are shown
        await pilot.press("escape")  # the focus is back on the table: clears the filter
        assert table(app).filter == "" and table(app).row_count == 20 and info(app).display


async def test_live_request_enters_a_full_window_and_the_oldest_row_leaves(filled, db_path):
    app = RegistryApp(filled)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        other = open_registry(db_path)  # another process: the broker recording an attempt
        other.record_attempt("late-device", "secret-1", "cid-late", "10.1.0.1:5000", "mqtt")
        other.close()
        await wait_for(pilot, lambda: "late-device" in names(app), message="the new request")
        assert names(app)[0] == "late-device" and table(app).row_count == 20
        assert "dev-025" not in names(app) and table(app).total == N + 1
        assert "of 46 requests" in str(info(app).render())


async def test_selection_survives_paging_and_is_granted(filled):
    app = RegistryApp(filled)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        t = table(app)
        await pilot.press("space")  # dev-044
        await pilot.press("ctrl+end")
        assert t.window_start > 0 and "dev-044" not in names(app)
        await pilot.press("g")
        assert isinstance(app.screen, GrantModal)
        await pilot.press("enter")
        await wait_for(pilot, lambda: filled.user("dev-044") is not None, message="dev-044 granted")
        assert [r.username for r in filled.requests() if r.username == "dev-044"] == []
        assert t.selected == set()
