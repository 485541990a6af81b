"""Who is online, learned from the registry plugin's reports of logins and disconnections, with real clients: a
granted device's session shows, ends, survives its own takeover, is reset when Mosquitto restarts, and no
client id (however forged) marks another user online."""

from __future__ import annotations

import os
import signal

from store.presence import SOURCE

from .clients import Device, Paho, mosquitto_sub_once, raw_connect
from .conftest import ServerThread, wait_until
from .mqtt_raw import open_socket, read_connack


def presence_source(reg) -> str | None:
    """How the running server says it learns of connections (``Registry.watch_presence``)."""
    M = reg.m.Meta
    return dict(M.select(M.key, M.value).where(M.key == SOURCE).tuples()).get(SOURCE)


def presence_of(reg, name: str):
    user = reg.user(name)
    return reg.presence().of(name, user.created_at)


def online(reg, name: str) -> bool:
    return presence_of(reg, name).online is True


def test_a_granted_device_is_online_then_offline_with_its_last_connection(server, admin_reg):
    server.add_device(admin_reg, "sensor-1", "secret-1")
    assert presence_source(admin_reg) == "registry plugin" and admin_reg.presence().watched
    before = presence_of(admin_reg, "sensor-1")
    assert before.online is False and before.last_connected is None and before.ever_connected is False  # never

    dev = Paho(server.mqtt_port, "sensor-1", "secret-1", client_id="esp-1").connect()
    try:
        assert dev.connected.is_set()
        wait_until(lambda: online(admin_reg, "sensor-1"), message="sensor-1 online")
        assert presence_of(admin_reg, "sensor-1").sessions == 1
        # the same client id again (a device rebooting): Mosquitto takes the old session over; the user is
        # online with one session, and offline once that one ends (below)
        first = presence_of(admin_reg, "sensor-1").last_connected
        again = Paho(server.mqtt_port, "sensor-1", "secret-1", client_id="esp-1").connect()
        try:
            assert again.connected.is_set()
            assert dev.disconnected.wait(10.0), "Mosquitto did not end the session taken over"
            wait_until(lambda: presence_of(admin_reg, "sensor-1").last_connected > first
                       and presence_of(admin_reg, "sensor-1").sessions == 1, message="the new session recorded")
            assert online(admin_reg, "sensor-1")
        finally:
            again.close()
    finally:
        dev.close()
    wait_until(lambda: presence_of(admin_reg, "sensor-1").online is False,
               message="sensor-1 offline after its sessions ended (the second took the first over)")
    after = presence_of(admin_reg, "sensor-1")
    assert after.last_connected is not None and after.last_disconnected >= after.last_connected
    assert after.ever_connected is True

    # mosquitto_sub, as an operator would try it: a whole session between two batches still counts
    mosquitto_sub_once(server.mqtt_port, "sensor-1", "secret-1", "devices/sensor-1/#", wait=1)
    wait_until(lambda: presence_of(admin_reg, "sensor-1").last_connected > after.last_connected,
               message="the second session recorded")
    assert presence_of(admin_reg, "sensor-1").online is False


def test_forged_client_ids_do_not_mark_another_user_online(server, admin_reg):
    server.add_device(admin_reg, "victim-1", "victim-pass")
    server.add_device(admin_reg, "attacker-1", "attacker-pass")
    server.add_device(admin_reg, "witness-1", "witness-pass")
    # Presence is reported by username (the account that logged in), never read from text a client wrote; these
    # client ids once forged lines of Mosquitto's log, and must still mark nobody else online.
    forged = "x (p4, c1, k60, u'victim-1')."
    # 1. a newline would start a line of its own: Mosquitto refuses such a client id at CONNECT
    sock = open_socket(server.mqtt_port)
    sock.sendall(raw_connect(f"x\nNew client connected from 10.0.0.9:1 as v {forged}", "attacker-1", "attacker-pass"))
    assert read_connack(sock) is None  # closed as a protocol error
    sock.close()
    # 2. the suffix imitated inside the client id (accepted by Mosquitto)
    imitator = Paho(server.mqtt_port, "attacker-1", "attacker-pass", client_id=forged).connect()
    # 3. a client id long enough for Mosquitto's log to cut its line right after a forged suffix
    prefix = "New client connected from 127.0.0.1:65535 as "
    padded = "A" * (999 - len(prefix) - len(forged) - 1) + " " + forged + "B" * 20  # within the plugin's 1024
    cutter = Paho(server.mqtt_port, "attacker-1", "attacker-pass", client_id=padded).connect()
    # 4. U+2028 does not split a line
    separator = Paho(server.mqtt_port, "attacker-1", "attacker-pass",
                     client_id=f"y\u2028New client connected from 10.0.0.9:1 as v {forged}").connect()
    witness = Paho(server.mqtt_port, "witness-1", "witness-pass", client_id="witness").connect()
    try:
        assert imitator.connected.is_set() and cutter.connected.is_set() and separator.connected.is_set()
        # reports are sent in order and batches written in order: once the witness shows, the others were read
        wait_until(lambda: online(admin_reg, "witness-1"), message="the witness online")
        assert presence_of(admin_reg, "victim-1").online is False
        assert presence_of(admin_reg, "victim-1").last_connected is None
    finally:
        for client in (imitator, cutter, separator, witness):
            client.close()


def test_a_wrong_password_with_the_victims_client_id_does_not_end_its_session(server, admin_reg):
    server.add_device(admin_reg, "victim-2", "victim-pass")
    server.add_device(admin_reg, "witness-2", "witness-pass")
    victim = Device(server.mqtt_port, "victim-2", "victim-pass", client_id="victim-cid").connect()
    try:
        wait_until(lambda: online(admin_reg, "victim-2"), message="the victim online")
        sock = open_socket(server.mqtt_port)
        sock.sendall(raw_connect("victim-cid", "victim-2", "wrong-password"))
        assert read_connack(sock) not in (None, 0)  # refused by the plugin: not a login, its end is nobody's
        sock.close()
        witness = Paho(server.mqtt_port, "witness-2", "witness-pass", client_id="witness-2").connect()
        witness.close()
        wait_until(lambda: presence_of(admin_reg, "witness-2").last_disconnected is not None, message="witness")
        assert online(admin_reg, "victim-2") and victim.connected.is_set() and not victim.disconnected.is_set()
    finally:
        victim.close()


def test_mosquitto_restart_and_service_restart_reset_presence(db_path, admin_reg):
    server = ServerThread(db_path).start()
    try:
        server.add_device(admin_reg, "sensor-r", "secret-r")
        dev = Device(server.mqtt_port, "sensor-r", "secret-r", client_id="esp-r").connect()
        wait_until(lambda: online(admin_reg, "sensor-r"), message="online")
        supervisor = server.srv.supervisor
        os.kill(supervisor.proc.pid, signal.SIGKILL)  # every session drops with it
        wait_until(lambda: presence_of(admin_reg, "sensor-r").online is False, timeout=15,
                   message="offline after Mosquitto restarted")
        assert presence_of(admin_reg, "sensor-r").last_disconnected is not None
        dev.close()
        wait_until(lambda: server.srv.broker_state == "running", timeout=15, message="Mosquitto back")
        dev = Device(server.mqtt_port, "sensor-r", "secret-r", client_id="esp-r").connect()
        wait_until(lambda: online(admin_reg, "sensor-r"), message="online again")
    finally:
        server.stop()
    dev.close()
    # a stopped service: its Mosquitto stopped too, nobody is online, and soon nobody can tell
    assert admin_reg.presence().rows["sensor-r"][0] == 0
    server = ServerThread(db_path).start()  # a new service: starts from nobody online
    try:
        assert presence_of(admin_reg, "sensor-r").online is False
        assert presence_of(admin_reg, "sensor-r").last_connected is not None  # the history stays
    finally:
        server.stop()
