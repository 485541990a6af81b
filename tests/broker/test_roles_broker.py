"""Roles on the real Mosquitto: one shared dynamic-security role per registry role, edits reaching live
sessions within 1 s (a narrowing stops deliveries and publishes without a disconnect, a widening lets the
next subscribe through), templated patterns filled into each member's own role, reconcile, grant with roles
(MQTT and HTTP). A second Registry (`admin_reg`) on the same file stands in for the CLI of another process."""

from __future__ import annotations

import json
import time

from broker.mosquitto.dynsec import shared_role, topic_acls, user_role
from tests.broker.clients import Device, drain, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_http import post
from tests.broker.test_mosquitto_security import NOT_AUTHORIZED, _acl_set, console, role_in_mosquitto
from tests.broker.test_protocols_and_recovery import _dynsec


def shared_in_mosquitto(server, reg, role: str) -> bool:
    """Mosquitto's shared role (as the service last set it) holds exactly the role's shared part."""
    want = reg.shared_grants(role).get(role)
    have = server.srv.provisioner.roles.get(shared_role(role))
    if want is None:
        return have is None
    return have is not None and _acl_set(have) == _acl_set(topic_acls(want))


def client_roles(server, name: str) -> list[str]:
    """The client's roles as Mosquitto lists them (highest priority first)."""
    found = _dynsec(server, {"command": "getClient", "username": name})
    return [r["rolename"] for r in found["data"]["client"]["roles"]]


def member(server, reg, name: str, password: str, *roles: str) -> None:
    """A user with a broker account and these roles, applied in Mosquitto (before its device connects: a
    change of a client's role list disconnects it)."""
    server.add_device(reg, name, password)
    for role in roles:
        reg.add_user_role(name, role, actor="test")
    want = [user_role(name)] + [shared_role(r) for r in roles]
    wait_until(lambda: server.srv.provisioner.clients[name].roles == want, message=f"{name}'s roles in Mosquitto")


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
        wait_until(lambda: shared_in_mosquitto(server, admin_reg, "plant"), timeout=3.0,
                   message="the narrowing applied in Mosquitto")
        narrowed = time.monotonic() - start
        dev.publish("plant/b", "write-forbidden-now")
        admin.publish("plant/a", "still-readable")
        got = drain(dev, 0.5)
        assert got == [("plant/a", b"still-readable")], got
        assert ("plant/b", b"write-forbidden-now") not in drain(admin, 0.3)

        start = time.monotonic()
        admin_reg.role_forbid("plant", "plant/#", actor="test")
        wait_until(lambda: shared_in_mosquitto(server, admin_reg, "plant"), timeout=3.0,
                   message="the removal applied in Mosquitto")
        removed = time.monotonic() - start
        admin.publish("plant/a", "after")
        assert admin.next_message(2.0) == ("plant/a", b"after")  # routed, but not to the device
        assert dev.next_message(0.5) is None

        # Widening: the next subscribe of the same session is allowed.
        start = time.monotonic()
        admin_reg.role_permit("plant", "more/#", "read", actor="test")
        wait_until(lambda: shared_in_mosquitto(server, admin_reg, "plant"), timeout=3.0,
                   message="the widening applied in Mosquitto")
        widened = time.monotonic() - start
        assert dev.subscribe("more/#") == [1]
        admin.publish("more/x", "new")
        assert dev.next_message(2.0) == ("more/x", b"new")
        assert not dev.disconnected.is_set()  # a role edit (modifyRole) disconnects no one
        print(f"\nrole edit applied in Mosquitto: narrowing {narrowed * 1000:.0f} ms, removal "
              f"{removed * 1000:.0f} ms, widening {widened * 1000:.0f} ms after the call")
        assert max(narrowed, removed, widened) < 1.0
    finally:
        dev.close()
        admin.close()


def test_a_role_is_one_shared_dynsec_role_and_templates_fill_each_member(server, admin_reg):
    admin_reg.add_role("fleet", actor="test")
    admin_reg.role_permit("fleet", "fleet/#", "read", actor="test")
    admin_reg.add_role("own", actor="test")
    names = [f"fleet-{i}" for i in range(3)]
    for name in names:
        member(server, admin_reg, name, "fleet-pass-1", "fleet", "own")
    roles = {r["rolename"]: r for r in _dynsec(server, {"command": "listRoles", "verbose": True})["data"]["roles"]}
    assert _acl_set(roles[shared_role("fleet")]["acls"]) == {("subscribepattern", "fleet/#"),
                                                              ("publishclientreceive", "fleet/#")}
    assert sum(1 for r in roles if r.startswith("client-registry:role:")) == 2
    for name in names:
        assert client_roles(server, name) == [user_role(name), shared_role("fleet"), shared_role("own")]
        assert "fleet/#" not in {a["topic"] for a in roles[user_role(name)]["acls"]}  # shared, not copied

    # An edit of the shared part is one broker change; the members' own roles are not touched.
    before = len(server.lines)
    admin_reg.role_permit("fleet", "alerts/#", "read", actor="test")
    wait_until(lambda: shared_in_mosquitto(server, admin_reg, "fleet"), message="the fleet edit applied")
    wait_until(lambda: any("role 'fleet': permissions set" in line for line in server.lines[before:]),
               message="the log line of the edit")
    assert not any(f"dynsec '{name}'" in line for line in server.lines[before:] for name in names)

    # A templated pattern is filled into each member's own role.
    admin_reg.role_permit("own", "home/{username}/#", "readWrite", actor="test")
    for name in names:
        wait_until(lambda name=name: role_in_mosquitto(server, admin_reg, name), message=f"{name}'s own role")
    a = Device(server.mqtt_port, names[0], "fleet-pass-1", client_id="fleet-a").connect()
    try:
        assert a.accepted
        assert a.subscribe(f"home/{names[0]}/#") == [1]
        assert a.subscribe(f"home/{names[1]}/#")[0] >= NOT_AUTHORIZED
    finally:
        a.close()
    # The file Mosquitto keeps on disk agrees: one shared role, listed by each member.
    data = json.loads(server.srv.files.dynsec.read_text())
    assert [r["rolename"] for r in data["roles"]].count(shared_role("fleet")) == 1
    for client in (c for c in data["clients"] if c["username"] in names):
        assert shared_role("fleet") in [r["rolename"] for r in client["roles"]]


def test_reconcile_repairs_shared_roles(server, admin_reg):
    admin_reg.add_role("crew", actor="test")
    admin_reg.role_permit("crew", "crew/#", "readWrite", actor="test")
    member(server, admin_reg, "crew-1", "crew-pass-1", "crew")
    _dynsec(server, {"command": "deleteRole", "rolename": shared_role("crew")})  # by hand
    _dynsec(server, {"command": "createRole", "rolename": shared_role("ghost"),
                     "acls": [{"acltype": "subscribePattern", "topic": "#", "allow": True, "priority": 0}]})
    assert client_roles(server, "crew-1") == [user_role("crew-1")]
    fixes = server.call(server.srv.reconcile())
    assert fixes >= 3  # the role again, the client's role list, the orphan
    roles = {r["rolename"]: r for r in _dynsec(server, {"command": "listRoles", "verbose": True})["data"]["roles"]}
    assert shared_role("ghost") not in roles
    assert _acl_set(roles[shared_role("crew")]["acls"]) == _acl_set(topic_acls((("crew/#", "readWrite"),)))
    assert client_roles(server, "crew-1") == [user_role("crew-1"), shared_role("crew")]
    # A shared role edited by hand is rewritten.
    _dynsec(server, {"command": "modifyRole", "rolename": shared_role("crew"), "acls": []})
    assert server.call(server.srv.reconcile()) >= 1
    assert shared_in_mosquitto(server, admin_reg, "crew")
    assert server.call(server.srv.reconcile()) == 0  # and then nothing is left to fix
    # A role removed with force leaves no shared role and no member listing it.
    admin_reg.remove_role("crew", actor="test", force=True)
    wait_until(lambda: shared_role("crew") not in server.srv.provisioner.roles, message="the shared role gone")
    assert client_roles(server, "crew-1") == [user_role("crew-1")]


def test_grant_with_a_role_gives_the_device_its_permissions(server, admin_reg):
    admin_reg.add_role("sensors", actor="test")
    admin_reg.role_permit("sensors", "telemetry/{username}/#", "write", actor="test")
    admin_reg.role_permit("sensors", "broadcast/#", "read", actor="test")
    admin_reg.unlock(300, actor="test")
    port = server.mqtt_port
    res = mosquitto_pub(port, "role-sensor", "role-sensor-pass", client_id="rs-1")
    assert res.returncode != 0
    wait_until(lambda: admin_reg.requests(), message="the request")
    [item] = admin_reg.grant(["role-sensor"], roles=["sensors"], actor="test")
    assert item.ok, item.message
    wait_until(lambda: "role-sensor" in server.srv.provisioner.clients, message="the account")
    admin = console(server, "console-grant-role", "telemetry/#")
    dev = Device(port, "role-sensor", "role-sensor-pass", client_id="rs-1").connect()
    try:
        assert dev.accepted and dev.subscribe("broadcast/#") == [1]
        assert dev.subscribe("telemetry/#")[0] >= NOT_AUTHORIZED
        dev.publish("telemetry/role-sensor/t", "21.5")
        assert admin.next_message(2.0) == ("telemetry/role-sensor/t", b"21.5")
        admin.publish("broadcast/all", "hello")
        assert dev.next_message(2.0) == ("broadcast/all", b"hello")
        assert client_roles(server, "role-sensor") == [user_role("role-sensor"), shared_role("sensors")]
    finally:
        dev.close()
        admin.close()


def test_http_requested_roles_granted_with_requested(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
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
    from tests.broker.conftest import ServerThread
    from tests.broker.test_read_your_writes import cli
    from tests.broker.clients import mosquitto_sub_once

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
        res = mosquitto_sub_once(server.mqtt_port, "rw-dev", "rw-pass-1", "rw/#", wait=2)
        assert "denied" in res.stderr, res.stderr
    finally:
        server.stop()


def test_giving_a_live_user_a_role_reconnects_it_once(server, admin_reg):
    """Mosquitto 2.0.11 disconnects a client whose role list changes (modifyClient with roles): a user given
    a role (or losing one) reconnects once, and then has it."""
    admin_reg.add_role("late", actor="test")
    admin_reg.role_permit("late", "late/#", "read", actor="test")
    member(server, admin_reg, "late-dev", "late-pass-1")
    dev = Device(server.mqtt_port, "late-dev", "late-pass-1", client_id="late-1").connect()
    try:
        assert dev.accepted and dev.subscribe("late/#")[0] >= NOT_AUTHORIZED
        admin_reg.add_user_role("late-dev", "late", actor="test")
        assert dev.disconnected.wait(3.0), "the role list changed without a disconnect"
    finally:
        dev.close()
    again = Device(server.mqtt_port, "late-dev", "late-pass-1", client_id="late-2").connect()
    try:
        assert again.accepted and again.subscribe("late/#") == [1]
    finally:
        again.close()
