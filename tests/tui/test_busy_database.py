"""A database another process holds locked never freezes the dashboard: the store work runs in workers, the
keys keep working and a "database busy" line says what is waiting. Real SQLite file, a second connection
holding BEGIN IMMEDIATE (as another process's long write would)."""

from __future__ import annotations

import sqlite3
import time

from textual.widgets import ContentSwitcher, Static

from tui.app import RegistryApp

from .conftest import loaded, wait_for


def record_notices(app) -> list[str]:
    """Every notice the app posts, as it posts it: one on screen for 8 s may be gone when a slowed test looks."""
    posted: list[str] = []
    notify = app.notify

    def recording(message, *args, **kwargs):
        posted.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = recording
    return posted


def busy_line(app) -> str:
    line = app.screen_stack[0].query_one("#busy", Static)
    return str(line.render()) if line.display else ""


async def test_locked_database_leaves_keys_responsive_with_a_busy_line(reg, db_path):
    app = RegistryApp(reg)
    notices = record_notices(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        dash = app.screen_stack[0]
        switcher = dash.query_one(ContentSwitcher)
        other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing for 10 s
        locked_at = time.monotonic()
        try:
            await pilot.press("u")
            await wait_for(pilot, lambda: dash.writing is not None, message="the unlock waits for the lock")
            await wait_for(pilot, lambda: "database busy" in busy_line(app), message="busy line")
            assert "unlock" in busy_line(app)
            for key, view in (("2", "users"), ("3", "audit"), ("1", "requests"), ("tab", "users")):
                await pilot.press(key)
                assert switcher.current == view  # handled at once, while the write is still blocked
            assert dash.writing is not None
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: app.screen is not dash, message="help opens")
            await pilot.press("escape")
            # the busy timeout (5 s) ends the wait: one clear line, nothing changed, the app still runs
            await wait_for(pilot, lambda: dash.writing is None, timeout=15, message="the write gave up")
            assert any("locked" in notice for notice in notices), notices
            assert "database busy" in busy_line(app)
            assert not reg.status().unlocked
            while time.monotonic() - locked_at < 10:  # the rest of the 10 s: keys still work
                await pilot.press("3")
                assert switcher.current == "audit"
                await pilot.press("1")
                assert switcher.current == "requests"
                await pilot.pause(0.2)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await pilot.press("u")  # the lock is gone: the same key works
        await wait_for(pilot, lambda: dash.header_state.unlocked, message="unlocked")
        assert reg.status().unlocked
        await wait_for(pilot, lambda: busy_line(app) == "", message="busy line gone")
