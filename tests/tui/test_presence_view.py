"""The Users view shows who is online and when each user last connected, read from a real server's records
while a real device connects and leaves."""

from __future__ import annotations

from rich.text import Text

from tests.broker.clients import Paho
from tests.broker.conftest import ServerThread
from tui.app import RegistryApp

from .conftest import loaded, wait_for


def cell(table, name: str) -> str:
    if name not in table.rows:
        return ""
    value = table.get_cell(name, "connected")
    assert isinstance(value, Text)  # never markup
    return value.plain


async def test_users_view_follows_a_device_online_and_offline(db_path, reg):
    server = ServerThread(db_path).start()
    try:
        server.add_device(reg, "sensor-9", "secret-9")
        app = RegistryApp(reg, actor="alice@dashboard")
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("2")
            dash = app.screen_stack[0]
            users = dash.users_table
            await wait_for(pilot, lambda: cell(users, "sensor-9") == "never", message="never connected")
            device = Paho(server.mqtt_port, "sensor-9", "secret-9", client_id="esp-9").connect()
            try:
                await wait_for(pilot, lambda: cell(users, "sensor-9") == "● online", message="online")
                users.move_cursor(row=users.get_row_index("sensor-9"))
                await pilot.press("enter")  # the details say it too
                await wait_for(pilot, lambda: app.screen is not dash, message="details")
                body = app.screen.body.plain
                assert "online  yes (1 session)" in body and "last connected  20" in body
                await pilot.press("escape")
            finally:
                device.close()
            await wait_for(pilot, lambda: cell(users, "sensor-9") in ("now", "1s ago", "2s ago", "3s ago"),
                           message="offline, connected moments ago")
            assert not str(dash.query_one("#window-info").render())  # watched: no note
    finally:
        server.stop()


async def test_without_a_server_who_is_online_is_unknown(reg):
    reg.add_user("sensor-8", "secret-8", actor="test")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: cell(dash.users_table, "sensor-8") == "unknown", message="unknown")
        note = str(dash.query_one("#window-info").render())
        assert "who is online is unknown: no server is running on this registry" in note
