"""Approval rules as the operator sees them: an auto-granted request says "by rule", `z` on it undoes what that
rule admitted in this window (asks first); and a user's roles show in the Users view and its editor."""

from __future__ import annotations

from tui.app import RegistryApp
from tui.screens.modals import ConfirmModal, PermissionsModal

from .conftest import loaded, wait_for


async def test_by_rule_marker_and_z_undoes_the_rule(reg):
    reg.add_role("sensors")
    reg.role_permit("sensors", "plant/#", "read")
    reg.add_rule("sensor-*", name="install", roles=["sensors"], limit=5, actor="alice")
    reg.unlock(300)
    for name in ("sensor-1", "sensor-2", "pump-1"):
        assert reg.record_attempt(name, "secret-1", f"cid-{name}", "10.0.0.7:5000", "mqtt").outcome in (
            "granted", "pending")
    assert {u.name for u in reg.users()} == {"sensor-1", "sensor-2"}
    app = RegistryApp(reg, actor="bob@dashboard")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        dash = app.screen_stack[0]
        table = dash.requests_table
        labels = {r.username: str(table.row_cells(r)["status"]) for r in table.model.values()}
        assert labels == {"sensor-1": "by rule", "sensor-2": "by rule", "pump-1": "pending"}
        await pilot.press("z")  # the cursor is on pump-1 (pending first): not a rule's grant
        assert not isinstance(app.screen, ConfirmModal)
        await pilot.press("j", "z")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), message="undo asks")
        assert "install" in app.screen.title_text and "sensor-1" in str(app.screen.body)
        await pilot.press("y")
        await wait_for(pilot, lambda: reg.users() == [], message="the rule's users removed")
        await wait_for(pilot, lambda: all(r.status == "denied" for r in table.model.values()
                                          if r.username.startswith("sensor")), message="their requests denied")


async def test_users_view_shows_roles_and_the_editor_changes_them(reg):
    reg.add_role("sensors")
    reg.add_role("cameras")
    reg.add_user("plc-7", "secret-7")
    reg.add_user_role("plc-7", "sensors")
    app = RegistryApp(reg)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        dash = app.screen_stack[0]
        await pilot.press("2")
        users = dash.users_table
        await wait_for(pilot, lambda: "plc-7" in users.model, message="user listed")
        assert str(users.row_cells(users.model["plc-7"])["permissions"]).startswith("sensors")
        while users.cursor_item().name != "plc-7":
            await pilot.press("j")
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PermissionsModal), message="editor")
        assert app.screen.query_one("#roles").value == "sensors"
        await pilot.press("tab", *["backspace"] * 7, *"cameras, sensors", "enter")
        await wait_for(pilot, lambda: reg.user("plc-7").roles == ["sensors", "cameras"], message="roles saved")
