"""The Roles view (4) and roles in the grant dialog, driven by keys as an operator does: create a role, give
it permissions, grant devices with it (the operator's last roles pre-filled next time), see its members, and
remove it (asks, naming the members)."""

from __future__ import annotations

from tui.app import RegistryApp
from tui.screens.details import DetailsScreen
from tui.screens.modals import ConfirmModal, GrantModal, PermissionsModal, TextModal

from .conftest import loaded, wait_for


async def test_roles_view_and_grant_with_a_role(reg):
    reg.unlock(300)
    for name in ("sensor-1", "sensor-2"):
        assert reg.record_attempt(name, "secret-1", f"cid-{name}", "10.0.0.7:5000", "mqtt").accepted
    app = RegistryApp(reg, actor="alice@dashboard")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        dash = app.screen_stack[0]
        await pilot.press("4")
        assert dash.current_table() is dash.roles_table
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, TextModal), message="new role dialog")
        await pilot.press(*"bad/name", "enter")
        await wait_for(pilot, lambda: "role name" in str(app.screen.query_one("#error").render()).lower(),
                       message="a bad name refused in the dialog")
        await pilot.press(*["backspace"] * 8, *"sensors", "enter")
        await wait_for(pilot, lambda: "sensors" in dash.roles_table.model, message="role listed")
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PermissionsModal), message="permission editor")
        await pilot.press(*"devices/{username}/#=readWrite plant/#=read", "enter")
        await wait_for(pilot, lambda: len(dash.roles_table.model["sensors"].permissions) == 2, message="saved")

        await pilot.press("1", "a", "g")
        await wait_for(pilot, lambda: isinstance(app.screen, GrantModal), message="grant dialog")
        await pilot.press("tab", *"sensors")  # template empty; the roles field
        await pilot.press("enter")
        await wait_for(pilot, lambda: {u.name for u in reg.users()} == {"sensor-1", "sensor-2"}, message="granted")
        assert all(reg.user(n).roles == ["sensors"] for n in ("sensor-1", "sensor-2"))
        assert reg.authorize("sensor-1", "publish", "devices/sensor-1/t")
        assert not reg.authorize("sensor-1", "publish", "devices/sensor-2/t")
        assert reg.last_roles("alice@dashboard") == ["sensors"]
        await wait_for(pilot, lambda: dash.roles_table.model["sensors"].members == 2, message="member count")

        assert reg.record_attempt("sensor-3", "secret-1", "cid-3", "10.0.0.7:5001", "mqtt").accepted
        await wait_for(pilot, lambda: any(r.username == "sensor-3" for r in dash.requests_table.model.values()),
                       message="sensor-3 listed")
        await pilot.press("home", "g")
        await wait_for(pilot, lambda: isinstance(app.screen, GrantModal), message="grant dialog again")
        assert app.screen.query_one("#roles").value == "sensors"  # the last roles, pre-filled
        await pilot.press("escape")

        await pilot.press("4", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), message="role details")
        await pilot.press("escape", "delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), message="remove asks")
        assert "2 members lose its permissions" in str(app.screen.body)
        await pilot.press("y")
        await wait_for(pilot, lambda: "sensors" not in dash.roles_table.model, message="role removed")
        assert reg.user("sensor-1").roles == []
