"""Snapshots of the main views at 60x20, 80x24 and 120x40 with a fixed clock (tui/demo.py builds the data).

Update after an intended change with: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

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


async def steady_cursor(pilot):
    """The focused input's cursor blinks every 0.5 s: a snapshot taken later than that (a loaded machine) caught
    it hidden. Stop the blink with the cursor shown: a key shows it again (``Input._restart_blink``)."""
    focused = pilot.app.focused
    if isinstance(focused, Input):
        focused.cursor_blink = False
        await pilot.press("end")  # where typing left it, or at 0 in an empty input


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
        await steady_cursor(pilot)
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


@pytest.fixture
def many(tmp_path):
    """50 pending requests named sensor-*: 49 devices, and a second password for sensor-03 (a conflict)."""
    from tui.demo import DemoClock

    clock = DemoClock()
    reg = build_demo(str(tmp_path / "registry.db"), clock)[0]
    for i in range(49):
        clock.advance(1)
        reg.record_attempt(f"sensor-{i:02d}", "sensor-secret", f"fw-{i}", f"10.0.1.{i}:4000", "mqtt")
    clock.advance(1)
    reg.record_attempt("sensor-03", "another-secret", "fw-x", "10.0.9.9:4000", "mqtt")
    yield reg, clock
    reg.close()


async def grant_dialog_in_sight(pilot, *keys):
    """Open the grant dialog on what ``keys`` selected; wait until its buttons are on screen (the listing
    shrinks after a layout, and again after an error message takes rows)."""
    await connected(pilot)
    await pilot.press(*keys)
    # The match runs in a worker: once its "N pending requests match" notice is up (the selection is made
    # then), clear it, or it would cover the dialog's corner (a notice cleared too early came back later).
    await wait_for(pilot, lambda: any(" match " in str(n.message) for n in pilot.app._notifications),
                   message="the match notice")
    pilot.app.clear_notifications()
    await pilot.press("g")
    await wait_for(pilot, lambda: pilot.app.screen.query("#ok"), message="the grant dialog")

    def in_sight() -> bool:
        screen = pilot.app.screen
        return all(screen.query_one(f"#{b}").region.bottom <= screen.size.height - 1 for b in ("ok", "cancel")) \
            and screen.query_one("#template").region.height == 3

    await wait_for(pilot, in_sight, message="the input and buttons on screen")
    return in_sight


@pytest.mark.parametrize("selected", [5, 50])
def test_grant_dialog_of_many_at_60x20(snap_compare, many, selected):
    """Issue 16: the input and the Grant/Cancel buttons in sight, and "N more" for what is not listed."""
    pattern = "sensor-4[4-8]" if selected == 5 else "sensor-*"

    async def run_before(pilot):
        await grant_dialog_in_sight(pilot, "+", *pattern, "enter")
        await steady_cursor(pilot)
        await pilot.pause()

    assert snap_compare(make_app(*many), run_before=run_before, terminal_size=(60, 20))


def test_grant_dialog_with_a_conflict_error_at_60x20(snap_compare, many):
    async def run_before(pilot):
        in_sight = await grant_dialog_in_sight(pilot, "+", *"sensor-*", "enter")
        await pilot.press("enter")  # a conflict among them, Force not ticked: the error takes rows
        await wait_for(pilot, lambda: "tick Force" in str(pilot.app.screen.query_one("#error").render()),
                       message="the conflict error")
        await wait_for(pilot, in_sight, message="the buttons still on screen")
        await steady_cursor(pilot)
        await pilot.pause()

    assert snap_compare(make_app(*many), run_before=run_before, terminal_size=(60, 20))


@pytest.mark.parametrize("size", [(60, 20), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_narrow_header_attached_and_users_note(snap_compare, reg, clock, size):
    """Issue 16: the URL after "attached to" and the HTTP address stay on a narrow header (labels go first);
    the Users view's note on who is online (no server runs here) wraps instead of being cut."""
    reg.add_user("historian", "historian-password", actor="cli:ops", how="cli")

    async def run_before(pilot):
        await loaded(pilot)
        dash = pilot.app.screen_stack[0]
        state = dash.header_state
        state.broker_address = "10.20.30.40:1883"
        state.service_broker, state.service_state = "attached to mqtt://10.20.30.40:1883", "running"
        state.service_http = "10.20.30.40:8080"
        dash.set_broker_state("connected")
        await pilot.press("2")
        await wait_for(pilot, lambda: dash.users_table.presence_note(), message="the note on who is online")
        await pilot.pause()

    assert snap_compare(make_app(reg, clock), run_before=run_before, terminal_size=size)
