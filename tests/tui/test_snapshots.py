"""Snapshots of the main views at 60x20, 80x24 and 120x40 with a fixed clock (tui/demo.py builds the data).

Update after an intended change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from tui.app import RegistryApp
from tui.demo import build_demo

from .conftest import loaded, wait_for

SIZES = [(60, 20), (80, 24), (120, 40)]


@pytest.fixture
def demo(tmp_path):
    reg, clock = build_demo(str(tmp_path / "registry.db"))
    yield reg, clock
    reg.close()


def make_app(reg, clock):
    return RegistryApp(reg, clock=clock, actor="alice@dashboard")


async def connected(pilot):
    await loaded(pilot)
    dash = pilot.app.screen_stack[0]
    dash.header_state.broker_address = "127.0.0.1:1883"
    dash.set_broker_state("connected")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_requests_view(snap_compare, demo, size):
    async def run_before(pilot):
        await connected(pilot)
        await pilot.press("down", "down", "space")
        await pilot.pause()

    assert snap_compare(make_app(*demo), run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_users_view(snap_compare, demo, size):
    async def run_before(pilot):
        await connected(pilot)
        await pilot.press("2")
        dash = pilot.app.screen_stack[0]
        await wait_for(pilot, lambda: dash.users_table.presence is not None, message="who is online")
        await pilot.pause()

    assert snap_compare(make_app(*demo), run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_audit_view(snap_compare, demo, size):
    async def run_before(pilot):
        await connected(pilot)
        await pilot.press("3")
        await pilot.pause()

    assert snap_compare(make_app(*demo), run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grant_dialog(snap_compare, demo, size):
    async def run_before(pilot):
        await connected(pilot)
        await pilot.press("a", "g", *"devices/{username}/#=readWrite")
        await pilot.pause()

    assert snap_compare(make_app(*demo), run_before=run_before, terminal_size=size)


def test_locked_disconnected_with_details(snap_compare, demo):
    reg, clock = demo

    async def run_before(pilot):
        await loaded(pilot)
        reg.lock(actor="alice@dashboard")
        dash = pilot.app.screen_stack[0]
        dash.header_state.broker_address = "127.0.0.1:1883"
        dash.set_broker_state("retrying", "Connection refused", retry_in=4)
        dash.sync_from_db()
        await wait_for(pilot, lambda: not dash.header_state.unlocked, message="locked")
        await pilot.press("enter")
        await wait_for(pilot, lambda: pilot.app.screen is not dash, message="details")
        await pilot.pause()

    assert snap_compare(make_app(reg, clock), run_before=run_before, terminal_size=(80, 24))
