"""The implicit flow end to end: real broker, mosquitto_pub/sub and paho clients, a second Registry on the
same SQLite file standing in for the CLI / dashboard of another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.broker import plugin_state
from tests.broker.clients import Paho, mosquitto_pub, mosquitto_sub_once
from tests.broker.conftest import wait_until

DEVICE, SECRET = "sensor-17", "hunter2-secret"
CLI = str(Path(sys.executable).parent / "client-registry")


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    """The headless CLI in its own process, as an operator would run it."""
    res = subprocess.run([CLI, *args, "--db", db], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"client-registry {' '.join(args)}: {res.stderr}"
    return res


def _events(admin: Paho, kind: str, timeout: float = 10.0) -> dict | None:
    """The next event of `kind` the admin client receives (others are skipped), or None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        got = admin.next_message(timeout=left)
        if got is None:
            return None
        topic, payload = got
        if topic == f"$registry/v1/events/{kind}":
            return json.loads(payload)
    return None


def role_topics(server, name: str) -> set[str]:
    """The patterns of the user's account as the registry plugin holds it (as the server last set it)."""
    return plugin_state.patterns(server, name)


def test_implicit_flow(server, db_path):
    """The issue's "done when", step by step, with the CLI in other processes writing the events."""
    port = server.mqtt_port
    admin = Paho(port, server.console.username, server.console.password, client_id="console-test").connect()
    try:
        assert admin.subscribe("$registry/#") == [1]

        # locked: refused (CONNACK 5) and not listed
        res = mosquitto_pub(port, DEVICE, SECRET, client_id="dev-17")
        assert res.returncode != 0 and "not authori" in res.stderr
        assert json.loads(cli(db_path, "requests", "--json").stdout) == []

        # unlocked: still refused, but listed, and the admin hears about it
        cli(db_path, "unlock")
        assert _events(admin, "registry.unlocked") is not None
        res = mosquitto_pub(port, DEVICE, SECRET, client_id="dev-17")
        assert res.returncode != 0 and "not authori" in res.stderr
        created = _events(admin, "request.created")
        assert created is not None
        assert created["subject"] == DEVICE and created["kind"] == "request.created"
        assert {"id", "time", "actor", "kind", "subject", "detail"} <= set(created)
        assert SECRET not in json.dumps(created)
        [req] = json.loads(cli(db_path, "requests", "--json").stdout)
        assert (req["username"], req["status"], req["source"], req["client_id"]) == (DEVICE, "pending", "mqtt",
                                                                                     "dev-17")

        # granted: the very same mosquitto_pub now succeeds
        cli(db_path, "grant", DEVICE)
        assert _events(admin, "request.granted") is not None
        res = mosquitto_pub(port, DEVICE, SECRET, client_id="dev-17")
        assert res.returncode == 0, res.stderr

        # no permissions: SUBACK 0x80 until permitted, then it works
        device = Paho(port, DEVICE, SECRET, client_id="dev-17-sub").connect()
        try:
            assert device.subscribe("sensors/#") == [0x80]
            cli(db_path, "permit", DEVICE, "sensors/#", "readWrite")
            assert _events(admin, "permission.added") is not None  # published once applied in the plugin
            assert (plugin_state.READ_WRITE, "sensors/#") in plugin_state.acls(server, DEVICE)
            assert device.subscribe("sensors/#") == [1]
            res = mosquitto_pub(port, DEVICE, SECRET, topic="sensors/temp", message="21.5")
            assert res.returncode == 0, res.stderr
            assert device.next_message(timeout=10.0) == ("sensors/temp", b"21.5")

            # disable: the open session is kicked
            cli(db_path, "user", "disable", DEVICE)
            assert device.disconnected.wait(10.0)
            res = mosquitto_pub(port, DEVICE, SECRET)
            assert res.returncode != 0
        finally:
            device.close()
    finally:
        admin.close()
    assert not any(SECRET in line for line in server.lines)


def test_mosquitto_sub_flow_and_permission_narrowing(server, admin_reg):
    port = server.mqtt_port
    server.add_device(admin_reg, "reader-1", "reader-pass")
    # no permission yet: mosquitto_sub is told the subscription was refused
    res = mosquitto_sub_once(port, "reader-1", "reader-pass", "plant/#", wait=10)  # exits once denied
    assert "denied" in res.stderr and res.stdout == ""
    admin_reg.permit("reader-1", "plant/#", "read", actor="test")
    wait_until(lambda: "plant/#" in role_topics(server, "reader-1"), message="the permission in Mosquitto")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", "reader-1", "-P",
                            "reader-pass", "-t", "plant/#", "-C", "1", "-W", "10", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while sub.poll() is None and time.monotonic() < deadline:  # until it has subscribed and received one
        res = mosquitto_pub(port, server.console.username, server.console.password, topic="plant/boiler",
                            message="on")
        assert res.returncode == 0, res.stderr
    out, err = sub.communicate(timeout=15)
    assert out.strip() == "plant/boiler on", err
    reader = Paho(port, "reader-1", "reader-pass", client_id="reader-1").connect()
    try:
        assert reader.subscribe("plant/#") == [1]
        assert reader.subscribe("$registry/#") == [0x80]  # only admins read the changelog
        admin_reg.forbid("reader-1", "plant/#", actor="test")  # narrowing: enforced on the live session
        wait_until(lambda: "plant/#" not in role_topics(server, "reader-1"), message="the narrowing in Mosquitto")
        res = mosquitto_pub(port, server.console.username, server.console.password, topic="plant/boiler",
                            message="off")
        assert res.returncode == 0, res.stderr
        assert reader.next_message(timeout=1.0) is None  # its subscription no longer receives
        assert not reader.disconnected.is_set()  # and it was not disconnected for it (ACLs alone)
    finally:
        reader.close()


def test_removed_user_is_kicked_and_events_from_any_writer_are_relayed(server, admin_reg):
    port = server.mqtt_port
    admin = Paho(port, server.console.username, server.console.password, client_id="console-2").connect()
    server.add_device(admin_reg, "temp-user", "temp-pass")
    temp = Paho(port, "temp-user", "temp-pass", client_id="temp-1").connect()
    try:
        assert admin.subscribe("$registry/v1/events/#") == [1]
        admin_reg.remove_user("temp-user", actor="test")
        event = _events(admin, "user.removed")
        assert event is not None and event["subject"] == "temp-user" and event["actor"] == "test"
        assert temp.disconnected.wait(10.0)
    finally:
        temp.close()
        admin.close()


def test_publish_without_permission_reaches_no_one(server, admin_reg):
    port = server.mqtt_port
    server.add_device(admin_reg, "mute-dev", "mute-pass")
    admin = Paho(port, server.console.username, server.console.password, client_id="console-3").connect()
    try:
        assert admin.subscribe("factory/#") == [1]
        res = mosquitto_pub(port, "mute-dev", "mute-pass", topic="factory/line1", message="nope")
        assert res.returncode == 0, res.stderr  # accepted on the wire (MQTT 3.1.1 has no publish refusal) ...
        assert admin.next_message(timeout=1.0) is None  # ... but delivered to no one
    finally:
        admin.close()
