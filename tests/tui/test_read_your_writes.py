"""A dashboard change is done once the running server applied it to the broker, or says that no server did."""

from __future__ import annotations

from tui.app import RegistryApp

from .conftest import loaded, wait_for


async def test_without_a_server_a_change_says_the_broker_gets_it_later(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("u")  # unlock: a change
        await wait_for(pilot, lambda: reg.status().unlocked, message="the unlock")
        await wait_for(pilot, lambda: any("No server is running on this registry" in str(n.message)
                                          for n in app._notifications), message="the one-line warning")
