"""Pilot tests of the key flows against a real SQLite file (no broker: the changelog is polled)."""

from __future__ import annotations

from textual.widgets import ContentSwitcher, Input

from store import open_registry
from tui.app import RegistryApp
from tui.screens.details import DetailsScreen
from tui.screens.help import HelpScreen
from tui.screens.modals import ConfirmModal, DurationModal, GrantModal, PermissionsModal

from .conftest import loaded, run_from_palette, wait_for


def knock(reg, name, password="secret-1", client_id=None, peer="10.0.0.7:50000", **kw):
    res = reg.record_attempt(name, password, client_id or f"cid-{name}", peer, kw.pop("source", "mqtt"), **kw)
    assert res.accepted, res.reason
    return res


def rows(app):
    return app.screen_stack[0].requests_table.shown_items()


async def test_u_unlocks_or_extends_and_l_locks(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        header = app.screen_stack[0].header_state
        assert not header.unlocked
        assert app.screen.active_bindings["l"].enabled is False  # nothing to lock
        await pilot.press("u")
        await wait_for(pilot, lambda: header.unlocked, message="unlocked shown")
        assert reg.status().unlocked and 295 < header.remaining <= 300
        first = reg.status().unlocked_until
        await pilot.press("u")  # again: extends (5 minutes from now), never locks
        await wait_for(pilot, lambda: reg.status().unlocked_until > first, message="extended")
        assert header.unlocked
        await pilot.press("l")
        await wait_for(pilot, lambda: not header.unlocked, message="locked shown")
        assert not reg.status().unlocked


async def test_unlock_for_a_typed_duration(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("U")
        assert isinstance(app.screen, DurationModal)
        await pilot.press("ctrl+a", "ctrl+k", *"90s", "enter")
        await wait_for(pilot, lambda: reg.status().unlocked, message="unlocked")
        assert 85 < reg.status().remaining <= 90
        await pilot.press("l")  # lock again
        await wait_for(pilot, lambda: not reg.status().unlocked, message="locked")
        await pilot.press("U")
        await pilot.press("ctrl+a", "ctrl+k", *"xyz", "enter")
        assert isinstance(app.screen, DurationModal)  # refused input keeps the dialog open
        await pilot.press("escape")
        assert not reg.status().unlocked


async def test_request_appears_then_select_and_grant_with_template(reg, db_path):
    reg.unlock(300, actor="test")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        other = open_registry(db_path)  # another process: the broker recording attempts
        knock(other, "sensor-a")
        knock(other, "sensor-b")
        await wait_for(pilot, lambda: len(rows(app)) == 2, message="two requests")
        assert [r.username for r in rows(app)] == ["sensor-b", "sensor-a"]  # newest first
        await pilot.press("space", "j", "space")  # space toggles in place; j moves
        assert app.screen_stack[0].requests_table.selected == {str(r.id) for r in rows(app)}
        await pilot.press("g")
        assert isinstance(app.screen, GrantModal)
        await pilot.press(*"devices/{username}/#=readWrite", "enter")
        await wait_for(pilot, lambda: all(r.status == "granted" for r in rows(app)), message="granted")
        assert other.authorize("sensor-a", "publish", "devices/sensor-a/temp")
        assert not other.authorize("sensor-a", "publish", "devices/sensor-b/temp")
        assert app.screen_stack[0].requests_table.selected == set()
        other.close()


async def test_grant_is_disabled_with_nothing_pending(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        bindings = app.screen.active_bindings
        assert bindings["g"].enabled is False and bindings["d"].enabled is False
        await pilot.press("g")
        assert not isinstance(app.screen, GrantModal)
        reg.unlock(300)
        knock(reg, "late-device")
        await wait_for(pilot, lambda: len(rows(app)) == 1, message="request")
        await pilot.pause()
        assert app.screen.active_bindings["g"].enabled is True


async def test_deny_asks_first(reg):
    reg.unlock(300)
    knock(reg, "intruder")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        assert rows(app)[0].status == "pending"
        await pilot.press("d")
        await pilot.press("y")
        await wait_for(pilot, lambda: rows(app)[0].status == "denied", message="denied")
        assert reg.requests(include_all=True)[0].decided_by == app.actor


async def test_conflict_needs_force(reg):
    reg.unlock(300)
    knock(reg, "twin", password="password-one")
    knock(reg, "twin", password="password-two")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert all(r.conflict for r in rows(app))
        await pilot.press("g")
        await pilot.press(*"t/#=read", "enter")  # no force: the dialog stays, with what was typed and why
        assert isinstance(app.screen, GrantModal)
        assert app.screen.query_one("#template").value == "t/#=read"
        assert "Force" in str(app.screen.query_one("#error").render())
        assert all(r.status == "pending" for r in reg.requests())
        await pilot.press("tab", "space")  # as an operator does it: to the Force box, tick it, confirm
        assert app.screen.query_one("#force").value is True
        await pilot.press("enter")
        await wait_for(pilot, lambda: sorted(r.status for r in rows(app)) == ["denied", "granted"],
                       message="one granted, rival denied")
        assert reg.user("twin").permissions == [("t/#", "read")]


async def test_granting_what_another_operator_denied_notifies(reg, db_path):
    reg.unlock(300)
    knock(reg, "contested")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("space", "g")
        other = open_registry(db_path)
        other.deny(["contested"], actor="bob")  # while the modal is open
        other.close()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("contested" in n.message for n in app._notifications), message="notice")
        assert app.is_running
        await wait_for(pilot, lambda: rows(app)[0].status == "denied", message="denied by bob")


async def test_select_all_pending_and_escape(reg):
    reg.unlock(300)
    for i in range(3):
        knock(reg, f"bulk-{i}")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = app.screen_stack[0].requests_table
        await pilot.press("a")
        assert len(table.selected) == 3
        await pilot.press("escape")
        assert table.selected == set()


async def test_filter(reg):
    reg.unlock(300)
    for name in ("kitchen-1", "kitchen-2", "garage-1"):
        knock(reg, name)
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"kitch")
        await wait_for(pilot, lambda: len(rows(app)) == 2, message="filtered")
        assert sorted(r.username for r in rows(app)) == ["kitchen-1", "kitchen-2"]
        await pilot.press("enter")
        assert app.focused is app.screen.requests_table
        await pilot.press("a", "g")
        assert [r.username for r in app.screen.targets] == ["kitchen-2", "kitchen-1"]
        await pilot.press("escape")  # cancels the grant
        await pilot.press("escape")  # clears the selection
        await pilot.press("escape")  # clears the filter
        await wait_for(pilot, lambda: len(rows(app)) == 3, message="filter cleared")
        assert app.screen.query_one("#filter", Input).value == ""


async def test_details_shows_context_safely(reg):
    reg.unlock(300)
    knock(reg, "[red]evil[/red] \u202e\U0001f525", client_id="cid\x1b[2J", source="http",
          context={"site": "[b]north[/b]", "rtl": "\u202eabc"},
          requested_permissions=[{"resource": "devices/x/#", "operation": "read"}])
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: len(rows(app)) == 1, message="request")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), message="details")
        body = app.screen.body.plain
        assert "[red]evil[/red] \\u202e\U0001f525" in body and "cid\\x1b[2J" in body
        assert "[b]north[/b]" in body and "\\u202eabc" in body
        assert "devices/x/#" in body and "request.created" in body
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailsScreen)


async def test_views_users_and_audit(reg):
    reg.add_user("plc-7", "password-7", actor="test")
    reg.permit("plc-7", "plant/#", "read", actor="test")
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        switcher = app.screen.query_one(ContentSwitcher)
        await pilot.press("2")
        assert switcher.current == "users"
        users = app.screen.users_table
        await wait_for(pilot, lambda: "plc-7" in users.model, message="user shown")
        # p: edit permissions
        await pilot.press("p")
        assert isinstance(app.screen, PermissionsModal)
        await pilot.press("ctrl+a", "ctrl+k", *"plant/#=readWrite devices/plc-7/#=write", "enter")
        await wait_for(pilot, lambda: sorted(users.model["plc-7"].permissions) == [
            ("devices/plc-7/#", "write"), ("plant/#", "readWrite")], message="permissions shown")
        assert sorted(reg.user("plc-7").permissions) == [("devices/plc-7/#", "write"), ("plant/#", "readWrite")]
        # widening read to readWrite is not a removal (the broker would kick the device for nothing)
        kinds = [e.kind for e in reg.events(subject="plc-7")][-2:]
        assert kinds == ["permission.added", "permission.added"]
        # x: disable, then enable
        await pilot.press("x")
        await wait_for(pilot, lambda: users.model["plc-7"].disabled, message="disabled shown")
        assert reg.user("plc-7").disabled
        await pilot.press("x")
        await wait_for(pilot, lambda: not users.model["plc-7"].disabled, message="enabled shown")
        # delete: asks first
        await pilot.press("delete")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await wait_for(pilot, lambda: "plc-7" not in users.model, message="user gone")
        assert reg.user("plc-7") is None
        # 3 / tab: audit, newest first
        await pilot.press("3")
        assert switcher.current == "audit"
        audit = app.screen.audit_table
        kinds = [ev.kind for ev in audit.shown_items()]
        assert kinds[0] == "user.removed" and "user.disabled" in kinds and "permission.added" in kinds
        await pilot.press("tab")
        assert switcher.current == "roles"
        await pilot.press("tab")
        assert switcher.current == "requests"


async def test_help_and_command_palette(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert any(t.startswith("Unlock") for t in titles)
        assert any(t.startswith("Filter") for t in titles)
        assert any(t.startswith("Grant") and t.endswith("unavailable") for t in titles)  # nothing pending
        await run_from_palette(pilot, "unlock for", "Unlock for")
        await wait_for(pilot, lambda: isinstance(app.screen, DurationModal), message="palette ran the action")
        await pilot.press("enter")
        await wait_for(pilot, lambda: reg.status().unlocked, message="unlocked")
        await pilot.press("q")
    assert not app.is_running


async def test_grant_dialog_prefills_the_last_template_and_says_n_selected(reg, db_path):
    reg.unlock(300)
    knock(reg, "first-dev")
    app = RegistryApp(reg, actor="alice@dashboard")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("space")
        info = app.screen.query_one("#window-info")
        await wait_for(pilot, lambda: "1 selected" in str(info.render()), message="1 selected")
        await pilot.press("g")
        assert app.screen.query_one("#template").value == ""
        await pilot.press(*"devices/{username}/#=readWrite", "enter")
        await wait_for(pilot, lambda: reg.user("first-dev") is not None, message="granted")
    assert reg.last_template("alice@dashboard") == "devices/{username}/#=readWrite"
    assert reg.last_template("bob@dashboard") == ""
    knock(reg, "second-dev")
    app = RegistryApp(open_registry(db_path), actor="alice@dashboard")  # a new dashboard: kept in the database
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        assert app.screen.query_one("#template").value == "devices/{username}/#=readWrite"
        listing = str(app.screen.query_one(".listing Static").render())
        assert f"#{reg.requests()[0].id}" in listing  # the request id is shown
        await pilot.press("enter")
        await wait_for(pilot, lambda: reg.user("second-dev") is not None, message="granted")
        assert reg.user("second-dev").permissions == [("devices/{username}/#", "readWrite")]
        await wait_for(pilot, lambda: any("(#" in n.message for n in app._notifications), message="ids")
    app.reg.close()
