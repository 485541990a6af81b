"""Bulk approval in the dashboard: `+` asks for a name pattern, the store selects every pending request it
matches (also beyond the rows the table holds), the selection is the preview, and `g` grants exactly it."""

from __future__ import annotations

from tui.app import RegistryApp
from tui.screens.modals import GrantModal

from .conftest import loaded, wait_for


async def test_plus_selects_by_pattern_and_g_grants_the_selection(reg):
    reg.unlock(300)
    for name in ("sensor-1", "sensor-2", "sensor-3", "pump-1", "s\u0435nsor-9"):  # the last: Cyrillic е
        assert reg.record_attempt(name, "secret-1", f"cid-{name}", "10.0.0.7:5000", "mqtt").accepted
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.screen_stack[0].requests_table
        await pilot.press("plus")
        await pilot.press(*"sensor-*", "enter")
        await wait_for(pilot, lambda: len(table.selected) == 3, message="three selected")
        assert sorted(table.selected_item(k).username for k in table.selected) == ["sensor-1", "sensor-2", "sensor-3"]
        await pilot.press("plus")
        await pilot.press(*"valve-*", "enter")
        await wait_for(pilot, lambda: any("no pending request matches valve-*" in str(n.message)
                                          for n in app._notifications), message="said: nothing matches")
        assert len(table.selected) == 3
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GrantModal), message="grant dialog")
        assert len(app.screen.targets) == 3
        await pilot.press("enter")
        await wait_for(pilot, lambda: {u.name for u in reg.users()} == {"sensor-1", "sensor-2", "sensor-3"},
                       message="granted")
        assert sorted(r.username for r in reg.requests()) == ["pump-1", "s\u0435nsor-9"]
