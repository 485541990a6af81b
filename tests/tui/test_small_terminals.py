"""A 60x20 terminal: dialogs keep their input and buttons in sight (the listing scrolls instead), also after
an error message takes rows."""

from __future__ import annotations

from tui.app import RegistryApp
from tui.screens.modals import GrantModal

from .conftest import loaded, wait_for


async def test_grant_dialog_buttons_stay_on_a_short_screen(reg):
    reg.unlock(300)
    for i in range(12):
        assert reg.record_attempt(f"sensor-{i}", "secret-1", f"c{i}", "10.0.0.1:1", "mqtt").accepted
    app = RegistryApp(reg)
    async with app.run_test(size=(60, 20)) as pilot:
        await loaded(pilot)
        await pilot.press("a", "g")
        await wait_for(pilot, lambda: isinstance(app.screen, GrantModal), message="grant dialog")

        def in_sight() -> bool:
            button = app.screen.query_one("#ok").region
            return button.bottom <= app.screen.size.height and app.screen.query_one("#template").region.height == 3

        await wait_for(pilot, in_sight, message="the Grant button on screen")
        await pilot.press(*"x/#=everything", "enter")  # an error message takes rows
        await wait_for(pilot, lambda: "access must be one of" in str(app.screen.query_one("#error").render()),
                       message="the error")
        await wait_for(pilot, in_sight, message="the Grant button still on screen")
