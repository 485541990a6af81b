"""Keys as operators expect them (k9s, lazygit, htop): space toggles in place, j/k/home/end move, follow mode
with an "N new" hint, the palette lists every action with why it is unavailable, help is generated from the
bindings (a remapped key shows remapped), ctrl+c quits, and quitting asks when the embedded broker has other
clients (a real mosquitto_sub against the real embedded server)."""

from __future__ import annotations

import subprocess

from textual.widgets import Static

from store import open_registry
from tui.app import RegistryApp
from tui.embedded import EmbeddedBroker
from tui.listener import MqttTarget
from tui.screens.help import HelpScreen
from tui.screens.modals import ConfirmModal

from .conftest import loaded, run_from_palette, wait_for


def knock(reg, name):
    res = reg.record_attempt(name, "secret-1", f"cid-{name}", "10.0.0.7:5000", "mqtt")
    assert res.accepted, res.reason


def names(app):
    return [r.username for r in app.screen_stack[0].requests_table.shown_items()]


def info(app) -> str:
    line = app.screen_stack[0].query_one("#window-info", Static)
    return str(line.render()) if line.display else ""


async def test_space_toggles_in_place_and_j_k_home_end_move(reg):
    reg.unlock(300)
    for i in range(4):
        knock(reg, f"dev-{i}")
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.screen_stack[0].requests_table
        await pilot.press("space")
        assert table.cursor_row == 0 and table.selected == {str(table.cursor_item().id)}
        await pilot.press("space")
        assert table.cursor_row == 0 and table.selected == set()
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("end")
        assert table.cursor_item().username == "dev-0"
        await pilot.press("home")
        assert table.cursor_item().username == "dev-3"


async def test_follow_at_the_top_and_n_new_elsewhere(reg, db_path):
    reg.unlock(300)
    for i in range(3):
        knock(reg, f"old-{i}")
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.screen_stack[0].requests_table
        other = open_registry(db_path)
        knock(other, "new-a")  # cursor on the first row: it follows the newest
        await wait_for(pilot, lambda: "new-a" in names(app), message="new-a")
        assert table.cursor_item().username == "new-a" and info(app) == ""
        await pilot.press("j")  # off the top: the cursor stays on its row as rows arrive
        assert table.cursor_item().username == "old-2"
        knock(other, "new-b")
        knock(other, "new-c")
        await wait_for(pilot, lambda: "new-c" in names(app), message="new-c")
        assert table.cursor_item().username == "old-2"
        await wait_for(pilot, lambda: "2 new above" in info(app), message="hint")
        await pilot.press("home")
        await wait_for(pilot, lambda: info(app) == "", message="hint gone at the top")
        other.close()


async def test_palette_lists_every_action_with_why_unavailable(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        titles = list(commands)
        grant = next(t for t in titles if t.startswith("Grant"))
        assert grant.endswith("unavailable") and "no pending request" in commands[grant]
        lock = next(t for t in titles if t.startswith("Lock"))
        assert "already locked" in commands[lock]
        perms = next(t for t in titles if t.startswith("Permissions"))
        assert "only in the Users view (press 2)" in commands[perms]
        assert any(t.startswith("Unlock (u)") for t in titles) and any(t.startswith("Quit (q)") for t in titles)
        assert not any(t.split(" (")[0] in ("Theme", "Keys", "Screenshot", "Maximize", "Minimize") for t in titles)
        await run_from_palette(pilot, "grant", "Grant")
        await wait_for(pilot, lambda: any("no pending request" in n.message for n in app._notifications),
                       message="the reason, when chosen")


async def test_help_is_generated_from_the_bindings_and_follows_a_keymap(reg, tmp_path):
    keymap = tmp_path / "keymap.toml"
    keymap.write_text('grant = "G"\nrow-down = "j,ctrl+n"\n')
    reg.unlock(300)
    knock(reg, "dev-1")
    knock(reg, "dev-2")
    app = RegistryApp(reg, keymap_file=str(keymap))
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(f"{k}  {w}  {i}" for _, rows in app.screen.sections for k, w, i in rows)
        for needle in ("ctrl+home", "Force", "home", "space", "Lock the registry now", "^c", "escape"):
            assert needle in text, needle
        assert "G  Grant the selection" in text and "g  Grant" not in text
        await pilot.press("escape")
        await pilot.press("ctrl+n")
        assert app.screen_stack[0].requests_table.cursor_row == 1
        await pilot.press("G")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "GrantModal", message="remapped grant")


async def test_ctrl_c_quits(reg):
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+c")
    assert not app.is_running


async def test_quit_asks_when_the_embedded_broker_has_other_clients(reg, db_path):
    server = EmbeddedBroker(lambda: open_registry(db_path), "127.0.0.1:0", None).start()
    creds = server.console
    sub = None
    try:
        app = RegistryApp(reg, mqtt_target=MqttTarget("127.0.0.1", server.mqtt_port, creds.username, creds.password),
                          embedded=True, listener_backoff=(0.2, 1.0))
        async with app.run_test(size=(100, 30)) as pilot:
            dash = app.screen_stack[0]
            await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
            assert app.count_other_sessions() == 0  # its own listener and the service's link do not count
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(server.mqtt_port), "-u", creds.username,
                                    "-P", creds.password, "-t", "anything"])
            await wait_for(pilot, lambda: app.count_other_sessions() == 1, message="another client")
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmModal) and "1 other MQTT connection" in app.screen.body.plain
            await pilot.press("n")
            assert app.is_running and not isinstance(app.screen, ConfirmModal)
            await pilot.press("ctrl+c")  # the same question
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
        assert not app.is_running
    finally:
        if sub is not None:
            sub.terminate()
            sub.wait(5)
        server.stop()


async def test_a_keymap_with_an_unknown_id_or_a_bad_value_says_so_and_applies_the_rest(reg, tmp_path):
    """Each bad line is one notice naming the file and the key; the good lines still apply; modal keys have ids
    a keymap can remap too, and the help lists every id."""
    keymap = tmp_path / "keymap.toml"
    keymap.write_text('grant = "G"\ngrnat = "x"\ndeny = 5\nconfirm-yes = "j"\n')
    reg.unlock(300)
    knock(reg, "dev-1")
    app = RegistryApp(reg, keymap_file=str(keymap))
    async with app.run_test(size=(100, 40)) as pilot:
        await loaded(pilot)
        assert app.keymap_problem.splitlines() == [
            f"keymap {keymap}: 'grnat' is not a binding id (the help lists them); ignored",
            f'keymap {keymap}: deny must be keys in quotes, such as "G" or "j,ctrl+n"; ignored']
        notices = [str(n.message) for n in app._notifications]
        assert any("'grnat' is not a binding id" in n for n in notices) and any("deny must be" in n for n in notices)
        await pilot.press("question_mark")
        ids = {i for _, rows in app.screen.sections for _, _, i in rows if i}
        assert {"grant", "deny", "unlock", "row-down", "dialog-cancel", "confirm-yes", "confirm-no",
                "details-close", "dialog-confirm"} <= ids
        assert ids <= app.binding_ids()
        await pilot.press("escape")
        await pilot.press("d")  # deny kept its key: the bad line was ignored, not applied
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "ConfirmModal", message="deny asks")
        await pilot.press("j")  # confirm-yes remapped to j
        await wait_for(pilot, lambda: reg.requests() == [], message="denied by the remapped yes")


async def test_a_key_that_cannot_act_here_says_why(reg):
    """`z` on a row not granted by a rule, `l` while locked, `g` with nothing pending: each a notice with the
    reason (as the palette gives it), and nothing changes."""
    reg.unlock(300)
    knock(reg, "dev-1")
    reg.grant(["dev-1"], actor="op")
    reg.lock()
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)

        def said(text: str) -> bool:
            return any(text in str(n.message) for n in app._notifications)

        for key, reason in (("z", "not granted by an approval rule"), ("l", "the registry is already locked"),
                            ("g", "no pending request is selected or under the cursor")):
            await pilot.press(key)
            await wait_for(pilot, lambda reason=reason: said(reason), message=f"{key}: {reason}")
        assert app.screen is app.screen_stack[0]  # no dialog opened
        assert reg.user("dev-1") is not None and not reg.status().unlocked
