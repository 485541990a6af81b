"""Roles on the real Mosquitto: a member's account in the registry plugin carries its roles' patterns, filled
for that member; edits reach every member's live session within 1 s (a narrowing stops deliveries and
publishes without a disconnect, a widening lets the next subscribe through), reconcile repairs a member's
account drifted by hand, grant with roles (MQTT and HTTP), and giving or taking a role applies to a live
session without a disconnect. A second Registry (`admin_reg`) on the same file stands in for the CLI of another
process."""

from __future__ import annotations

import time

from tests.broker import plugin_state
from tests.broker.clients import Device, drain, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.plugin_state import READ, READ_WRITE, WRITE
from tests.broker.test_http import post
from tests.broker.test_mosquitto_security import NOT_AUTHORIZED, console, role_in_mosquitto


def members_in_mosquitto(server, reg, role: str) -> bool:
    """Every member of the role has exactly the account the registry says in the plugin."""
    return all(plugin_state.in_step(server, reg, name) for name in reg.role_members(role))


def member(server, reg, name: str, password: str, *roles: str) -> None:
    """A user with a broker account and these roles, applied in Mosquitto."""
    server.add_device(reg, name, password)
    for role in roles:
        reg.add_user_role(name, role, actor="test")
    wait_until(lambda: role_in_mosquitto(server, reg, name), message=f"{name}'s roles in Mosquitto")


def test_role_edit_reaches_a_live_session_within_1s(server, admin_reg):
    admin_reg.add_role("plant", actor="test")
    admin_reg.role_permit("plant", "plant/#", "readWrite", actor="test")
    member(server, admin_reg, "role-dev", "role-pass-1", "plant")
    admin = console(server, "console-roles", "plant/#", "more/#")
    dev = Device(server.mqtt_port, "role-dev", "role-pass-1", client_id="role-live").connect()
    try:
        assert dev.accepted and dev.subscribe("plant/#") == [1]
        assert dev.subscribe("more/#")[0] >= NOT_AUTHORIZED  # not yet
        admin.publish("plant/a", "before")
        assert dev.next_message(2.0) == ("plant/a", b"before")
        assert admin.next_message(2.0) == ("plant/a", b"before")

        # Narrowing: the live subscription stops receiving and its publish is dropped, no disconnect.
        start = time.monotonic()
        admin_reg.role_permit("plant", "plant/#", "read", actor="test")
        wait_until(lambda: members_in_mosquitto(server, admin_reg, "plant"),
                   message="the narrowing applied in Mosquitto")
        narrowed = time.monotonic() - start
        dev.publish("plant/b", "write-forbidden-now")
        admin.publish("plant/a", "still-readable")
        got = drain(dev, 0.5)
        assert got == [("plant/a", b"still-readable")], got
        assert ("plant/b", b"write-forbidden-now") not in drain(admin, 0.3)

        start = time.monotonic()
        admin_reg.role_forbid("plant", "plant/#", actor="test")
        wait_until(lambda: members_in_mosquitto(server, admin_reg, "plant"),
                   message="the removal applied in Mosquitto")
        removed = time.monotonic() - start
        admin.publish("plant/a", "after")
        assert admin.next_message(2.0) == ("plant/a", b"after")  # routed, but not to the device
        assert dev.next_message(0.5) is None

        # Widening: the next subscribe of the same session is allowed.
        start = time.monotonic()
        admin_reg.role_permit("plant", "more/#", "read", actor="test")
        wait_until(lambda: members_in_mosquitto(server, admin_reg, "plant"),
                   message="the widening applied in Mosquitto")
        widened = time.monotonic() - start
        assert dev.subscribe("more/#") == [1]
        admin.publish("more/x", "new")
        assert dev.next_message(2.0) == ("more/x", b"new")
        assert not dev.disconnected.is_set()  # a role edit (the ACL list alone) disconnects no one
        print(f"\nrole edit applied in Mosquitto: narrowing {narrowed * 1000:.0f} ms, removal "
              f"{removed * 1000:.0f} ms, widening {widened * 1000:.0f} ms after the call")
        assert max(narrowed, removed, widened) < 1.0
    finally:
        dev.close()
        admin.close()


def test_a_role_fills_each_members_account_and_an_edit_reaches_every_member(server, admin_reg):
    admin_reg.add_role("fleet", actor="test")
    admin_reg.role_permit("fleet", "fleet/#", "read", actor="test")
    admin_reg.add_role("own", actor="test")
    names = [f"fleet-{i}" for i in range(3)]
    for name in names:
        member(server, admin_reg, name, "fleet-pass-1", "fleet", "own")
    for name in names:
        assert (READ, "fleet/#") in plugin_state.acls(server, name)

    # An edit of the role reaches every member's account within a second, and only the members'; it
    # disconnects none of their live sessions.
    server.add_device(admin_reg, "not-a-member", "fleet-pass-1")
    outsider = plugin_state.account(server, "not-a-member")
    live = [Device(server.mqtt_port, name, "fleet-pass-1", client_id=f"{name}-live").connect() for name in names]
    try:
        assert all(d.accepted for d in live)
        start = time.monotonic()
        admin_reg.role_permit("fleet", "alerts/#", "read", actor="test")
        wait_until(lambda: all((READ, "alerts/#") in plugin_state.acls(server, n) for n in names),
                   message="the fleet edit applied to every member")
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"the role edit reached every member only after {elapsed:.2f} s"
        assert members_in_mosquitto(server, admin_reg, "fleet")
        assert plugin_state.account(server, "not-a-member") == outsider
        assert all(d.subscribe("alerts/#") == [1] for d in live)  # each live session may use it at once
        assert not any(d.disconnected.is_set() for d in live), "a role edit disconnected a member"
    finally:
        for d in live:
            d.close()

    # A templated pattern is filled per member.
    admin_reg.role_permit("own", "home/{username}/#", "readWrite", actor="test")
    for name in names:
        wait_until(lambda name=name: (READ_WRITE, f"home/{name}/#") in plugin_state.acls(server, name),
                   message=f"{name}'s own home")
        assert not any(p.startswith("home/") and p != f"home/{name}/#" for p in plugin_state.patterns(server, name))
    a = Device(server.mqtt_port, names[0], "fleet-pass-1", client_id="fleet-a").connect()
    try:
        assert a.accepted
        assert a.subscribe(f"home/{names[0]}/#") == [1]
        assert a.subscribe(f"home/{names[1]}/#")[0] >= NOT_AUTHORIZED
        assert a.subscribe("alerts/#") == [1]
    finally:
        a.close()
    # What Mosquitto loads at its next start agrees (the snapshot, written about a second behind).
    wait_until(lambda: all(plugin_state.read_snapshot(server.srv.accounts.snapshot_path)[2].get(n)
                           == server.srv.accounts.records[n] for n in names),
               message="the members' accounts in the snapshot")


def test_reconcile_repairs_a_members_account_drifted_by_hand(server, admin_reg):
    admin_reg.add_role("crew", actor="test")
    admin_reg.role_permit("crew", "crew/#", "readWrite", actor="test")
    member(server, admin_reg, "crew-1", "crew-pass-1", "crew")
    want = plugin_state.account(server, "crew-1")
    assert (READ_WRITE, "crew/#") in want.acls
    # By hand: the member loses what the role gave it, and a ghost account appears.
    lost = plugin_state.record_for("crew-1", want.verifier.hex(), acls=())
    ghost = plugin_state.record_for("ghost", admin_reg.verifier_of("ghost", "ghost-pass-1"),
                                    acls=((READ_WRITE, "crew/#"),))
    assert plugin_state.by_hand(server, lost, ghost).status == 0
    dev = Device(server.mqtt_port, "crew-1", "crew-pass-1", client_id="crew-a").connect()
    try:
        assert dev.accepted and dev.subscribe("crew/#")[0] >= NOT_AUTHORIZED  # the drift took effect
    finally:
        dev.close()
    assert server.call(server.srv.reconcile()) >= 1
    assert plugin_state.plugin_agrees(server)
    assert plugin_state.account(server, "crew-1") == want and "ghost" not in server.srv.accounts.records
    assert server.call(server.srv.reconcile()) == 0  # and then nothing is left to fix
    dev = Device(server.mqtt_port, "crew-1", "crew-pass-1", client_id="crew-b").connect()
    try:
        assert dev.accepted and dev.subscribe("crew/#") == [1]
    finally:
        dev.close()
    ghosted = Device(server.mqtt_port, "ghost", "ghost-pass-1", client_id="ghost-1").connect()
    ghosted.close()
    assert not ghosted.accepted
    # A role removed with force leaves nothing of it in its members' accounts.
    admin_reg.remove_role("crew", actor="test", force=True)
    wait_until(lambda: "crew/#" not in plugin_state.patterns(server, "crew-1"), message="the role gone")
    assert role_in_mosquitto(server, admin_reg, "crew-1")


def test_grant_with_a_role_gives_the_device_its_permissions(server, admin_reg):
    admin_reg.add_role("sensors", actor="test")
    admin_reg.role_permit("sensors", "telemetry/{username}/#", "write", actor="test")
    admin_reg.role_permit("sensors", "broadcast/#", "read", actor="test")
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    port = server.mqtt_port
    res = mosquitto_pub(port, "role-sensor", "role-sensor-pass", client_id="rs-1")
    assert res.returncode != 0
    wait_until(lambda: admin_reg.requests(), message="the request")
    [item] = admin_reg.grant(["role-sensor"], roles=["sensors"], actor="test")
    assert item.ok, item.message
    wait_until(lambda: server.srv.accounts.has_account("role-sensor"), message="the account")
    assert {(WRITE, "telemetry/role-sensor/#"), (READ, "broadcast/#")} <= plugin_state.acls(server, "role-sensor")
    admin = console(server, "console-grant-role", "telemetry/#")
    dev = Device(port, "role-sensor", "role-sensor-pass", client_id="rs-1").connect()
    try:
        assert dev.accepted and dev.subscribe("broadcast/#") == [1]
        assert dev.subscribe("telemetry/#")[0] >= NOT_AUTHORIZED
        dev.publish("telemetry/role-sensor/t", "21.5")
        assert admin.next_message(2.0) == ("telemetry/role-sensor/t", b"21.5")
        admin.publish("broadcast/all", "hello")
        assert dev.next_message(2.0) == ("broadcast/all", b"hello")
    finally:
        dev.close()
        admin.close()


def test_http_requested_roles_granted_with_requested(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    status, body = post(port, {"username": "http-role-dev", "password": "http-role-pass", "roles": "sensors"})
    assert (status, body["field"]) == (400, "roles")
    status, body = post(port, {"username": "http-role-dev", "password": "http-role-pass", "roles": ["a/b"]})
    assert (status, body["field"]) == (400, "roles") and "roles[0]" in body["message"]
    creds = {"username": "http-role-dev", "password": "http-role-pass", "roles": ["cams"]}
    assert post(port, creds)[0] == 202
    [req] = admin_reg.requests()
    assert req.requested_roles == ["cams"]
    [refused] = admin_reg.grant(["http-role-dev"], requested=True, actor="test")
    assert not refused.ok and "no role named 'cams'" in refused.message
    admin_reg.add_role("cams", actor="test")
    admin_reg.role_permit("cams", "cams/{username}/#", "write", actor="test")
    [item] = admin_reg.grant(["http-role-dev"], requested=True, actor="test")
    assert item.ok, item.message
    status, body = post(port, creds)
    assert status == 201 and body["roles"] == ["cams"] and body["permissions"] == []
    dev = Device(server.mqtt_port, "http-role-dev", "http-role-pass", client_id="hr-1").connect()
    try:
        assert dev.accepted
        assert dev.subscribe("cams/http-role-dev/#")[0] >= NOT_AUTHORIZED  # write only
    finally:
        dev.close()


def test_cli_role_permit_is_applied_when_it_returns(db_path, admin_reg):
    """Read your writes through a role: `role permit` returns once the server applied it, so the next
    subscribe of a member is allowed at once (the server would notice by itself only after 5 s)."""
    from tests.broker.clients import mosquitto_sub_once
    from tests.broker.conftest import ServerThread
    from tests.broker.test_read_your_writes import cli

    server = ServerThread(db_path, relay_interval=5.0).start()
    try:
        assert cli(db_path, "role", "add", "rw-role").returncode == 0
        res = cli(db_path, "user", "add", "rw-dev", "--password-stdin", stdin="rw-pass-1\n")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        assert cli(db_path, "user", "role", "add", "rw-dev", "rw-role").returncode == 0
        res = cli(db_path, "role", "permit", "rw-role", "rw/#", "read")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        res = mosquitto_sub_once(server.mqtt_port, "rw-dev", "rw-pass-1", "rw/#", wait=1)
        assert "denied" not in res.stderr and "Timed out" in res.stderr, res.stderr  # subscribed, then waited
        res = cli(db_path, "role", "forbid", "rw-role", "rw/#", "--yes")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        res = mosquitto_sub_once(server.mqtt_port, "rw-dev", "rw-pass-1", "rw/#", wait=10)  # exits once denied
        assert "denied" in res.stderr, res.stderr
    finally:
        server.stop()


def test_giving_and_taking_a_role_applies_to_a_live_session_without_a_disconnect(server, admin_reg):
    """A role given to a user reaches its live session (its next subscribe is allowed), and taken away stops
    its deliveries at once; the session stays connected through both (only the ACL list changed)."""
    admin_reg.add_role("late", actor="test")
    admin_reg.role_permit("late", "late/#", "read", actor="test")
    member(server, admin_reg, "late-dev", "late-pass-1")
    admin = console(server, "console-late", "late/#")
    dev = Device(server.mqtt_port, "late-dev", "late-pass-1", client_id="late-1").connect()
    try:
        assert dev.accepted and dev.subscribe("late/#")[0] >= NOT_AUTHORIZED
        admin_reg.add_user_role("late-dev", "late", actor="test")
        wait_until(lambda: (READ, "late/#") in plugin_state.acls(server, "late-dev"), message="the role given")
        assert dev.subscribe("late/#") == [1]
        admin.publish("late/news", "given")
        assert dev.next_message(2.0) == ("late/news", b"given")
        admin_reg.remove_user_role("late-dev", "late", actor="test")
        wait_until(lambda: "late/#" not in plugin_state.patterns(server, "late-dev"), message="the role taken")
        assert role_in_mosquitto(server, admin_reg, "late-dev")
        admin.publish("late/news", "taken")
        assert ("late/news", b"taken") in drain(admin, 0.5)  # routed, but not to the device any more
        assert dev.next_message(0.3) is None
        assert dev.subscribe("late/#")[0] >= NOT_AUTHORIZED
        assert not dev.disconnected.is_set(), "giving or taking a role disconnected the session"
    finally:
        dev.close()
        admin.close()
