"""Approval rules end to end: real Mosquitto, mosquitto_pub and paho devices, a second Registry on the same file
standing in for the operator's CLI."""

from __future__ import annotations

from tests.broker.clients import Paho, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_http import post

TEMPLATE = "sensors/{username}/#=readWrite"


def test_a_rule_admits_exactly_its_limit_and_their_next_connect_gets_in(server, admin_reg):
    port, limit = server.mqtt_port, 5
    admin_reg.add_rule("sensor-*", permissions=[TEMPLATE], limit=limit, actor="test")
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    names = [f"sensor-{i}" for i in range(8)]
    for name in [*names, "meter-1"]:
        res = mosquitto_pub(port, name, f"pw-{name}", topic=f"sensors/{name}/t", client_id=f"id-{name}")
        assert res.returncode != 0 and "not authori" in res.stderr  # the knock itself is refused
    wait_until(lambda: len(admin_reg.requests(include_all=True)) == 9, message="nine requests")

    admitted = sorted(r.username for r in admin_reg.requests(include_all=True) if r.status == "granted")
    assert len(admitted) == limit and set(admitted) < set(names)
    assert {r.username for r in admin_reg.requests()} == {*names, "meter-1"} - set(admitted)  # pending
    assert all(r.decided_by == "rule:sensor-*" for r in admin_reg.requests(include_all=True) if r.status == "granted")
    assert admin_reg.rules()[0].admitted == limit
    wait_until(lambda: all(server.srv.accounts.has_account(n) for n in admitted), message="their accounts")

    for name in names:  # the next connect: the admitted get in, the others are still refused
        res = mosquitto_pub(port, name, f"pw-{name}", topic=f"sensors/{name}/t", client_id=f"id-{name}")
        assert (res.returncode == 0) == (name in admitted), (name, res.stderr)

    device = Paho(port, admitted[0], f"pw-{admitted[0]}", client_id="dev-sub").connect()
    try:
        assert device.reason_code == 0
        assert device.subscribe(f"sensors/{admitted[0]}/#") == [1]  # inside the template
        assert device.subscribe("sensors/#") == [0x80]  # outside it
        device.publish(f"sensors/{admitted[0]}/t", b"21.5")
        assert device.next_message() == (f"sensors/{admitted[0]}/t", b"21.5")
    finally:
        device.close()
    assert any("mqtt admit user='sensor-" in line and "rule 'sensor-*'" in line for line in server.lines)
    assert not any("pw-sensor" in line for line in server.lines)


def test_a_locked_registry_admits_nothing(server, admin_reg):
    admin_reg.add_rule("sensor-*", actor="test")
    res = mosquitto_pub(server.mqtt_port, "sensor-locked", "pw-locked-1")
    assert res.returncode != 0
    wait_until(lambda: admin_reg.status().knocking == 1, message="the knock counted")
    assert admin_reg.requests(include_all=True) == [] and admin_reg.user("sensor-locked") is None


def test_http_explicit_flow_with_a_rule_answers_201_at_once(server, admin_reg):
    """With a role instead of a template: the rule's role is what the device may do."""
    admin_reg.add_role("sensors", actor="test")
    admin_reg.role_permit("sensors", "sensors/{username}/#", "readWrite", actor="test")
    admin_reg.add_rule("sensor-*", roles=["sensors"], protocol="http", actor="test")
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    code, body = post(server.http_port, {"username": "sensor-h1", "password": "pw-sensor-h1"})
    assert code == 201, body
    assert (body["status"], body["username"]) == ("granted", "sensor-h1")
    # the account exists before the answer: the first MQTT connect gets in, and may use its role's topics
    device = Paho(server.mqtt_port, "sensor-h1", "pw-sensor-h1", client_id="h1").connect()
    try:
        assert device.reason_code == 0
        assert device.subscribe("sensors/sensor-h1/#") == [1]
        assert device.subscribe("sensors/#") == [0x80]
    finally:
        device.close()
    assert post(server.http_port, {"username": "sensor-h1", "password": "pw-sensor-h1"})[0] == 201  # polling again
    code, body = post(server.http_port, {"username": "meter-h1", "password": "pw-meter-h1"})
    assert code == 202 and body["status"] == "pending"
