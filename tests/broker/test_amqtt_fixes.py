"""Regression tests for the five amqtt 0.12.1 defects fixed in broker/amqtt_fixes.py.

Each defect has a check that returns True when the broker behaves. The check must pass on our server
(``test_fixed_*``) and must still fail on stock amqtt (``test_stock_*``, the same server with
``amqtt_fixes=False``): that second half proves each test really exercises its defect.
"""

from __future__ import annotations

import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from broker.amqtt_fixes import CONNECT_TIMEOUT
from broker.server import EmbeddedServer
from tests.broker import mqtt_raw as raw
from tests.broker.clients import Paho
from tests.broker.conftest import ServerThread


def _user(reg, name: str, password: str, pattern: str = "t/#") -> None:
    reg.add_user(name, password, actor="test")
    reg.permit(name, pattern, "readWrite", actor="test")


# ---------------------------------------------------------------------------------------------- checks
def check_refused_connect_leaves_live_session_alone(st: ServerThread, reg, clean: bool) -> bool:
    """Defect 1: a refused CONNECT reusing a live client id must not kick it or wipe its subscriptions."""
    _user(reg, "victim", "victim-pass")
    victim = Paho(st.mqtt_port, "victim", "victim-pass", client_id="shared-id").connect()
    admin = Paho(st.mqtt_port, st.console.username, st.console.password, client_id="admin-1").connect()
    try:
        assert victim.subscribe("t/#") == [1]
        sock = raw.open_socket(st.mqtt_port)
        sock.sendall(raw.connect("shared-id", "victim", "wrong-password", clean=clean))
        assert raw.read_connack(sock) == 5
        sock.close()
        time.sleep(0.3)
        admin.publish("t/1", b"still here")
        got = victim.next_message(timeout=2.0)
        return got == ("t/1", b"still here") and not victim.disconnected.is_set()
    finally:
        victim.close()
        admin.close()


def check_refused_connects_leave_no_sessions(st: ServerThread, reg, n: int = 150) -> bool:
    """Defect 2: refused CONNECTs must not leave sessions behind."""
    for i in range(n):
        sock = raw.open_socket(st.mqtt_port)
        if i % 30 == 0:
            sock.sendall(raw.connect(f"ghost-{i}", f"nobody-{i}", "whatever-pass"))  # unknown user, locked
        else:
            sock.sendall(raw.connect(f"ghost-{i}"))  # no credentials at all
        assert raw.read_connack(sock) == 5
        sock.close()
    time.sleep(1.5)  # let amqtt's session monitor run once
    return st.srv.session_count == 0


def check_silent_socket_closed(st: ServerThread, wait: float) -> bool:
    """Defect 3: a socket that never sends CONNECT is closed (after connect_timeout)."""
    sock = raw.open_socket(st.mqtt_port)
    try:
        return raw.closed_by_peer(sock, timeout=wait)
    finally:
        sock.close()


def check_mqtt5_connect_answered(st: ServerThread) -> bool:
    """Defect 4: an MQTT 5 CONNECT with credentials gets CONNACK 1 at once instead of hanging."""
    sock = raw.open_socket(st.mqtt_port)
    try:
        sock.sendall(raw.connect("v5-client", "someone", "some-password", level=5))
        return raw.read_connack(sock, timeout=3.0) == 1
    finally:
        sock.close()


def check_dollar_publish_not_left_dangling(st: ServerThread, reg) -> bool:
    """Defect 5: a client publishing to a $-topic must be refused/disconnected, not silently left unserved."""
    _user(reg, "dollar", "dollar-pass")
    sock = raw.open_socket(st.mqtt_port)
    try:
        sock.sendall(raw.connect("dollar-1", "dollar", "dollar-pass"))
        assert raw.read_connack(sock) == 0
        sock.sendall(raw.publish("$SYS/hello"))
        return raw.closed_by_peer(sock, timeout=3.0)
    finally:
        sock.close()


# ------------------------------------------------------------------------------------- with the fixes
@pytest.mark.parametrize("clean", [False, True], ids=["clean0-takeover", "clean1-wipe"])
def test_fixed_refused_connect_leaves_live_session_alone(server, admin_reg, clean):
    assert check_refused_connect_leaves_live_session_alone(server, admin_reg, clean)


def test_fixed_refused_connects_leave_no_sessions(server, admin_reg):
    assert check_refused_connects_leave_no_sessions(server, admin_reg)


def test_fixed_silent_socket_closed(server):
    assert server.srv.connect_timeout == 1.0  # the fixture shortens the 10 s default to keep tests fast
    assert check_silent_socket_closed(server, wait=4.0)


def test_connect_timeout_default_is_ten_seconds(admin_reg):
    assert CONNECT_TIMEOUT == 10.0
    assert EmbeddedServer(admin_reg, "127.0.0.1:0", None).connect_timeout == 10.0


def test_fixed_mqtt5_connect_answered(server):
    assert check_mqtt5_connect_answered(server)


def test_mqtt5_clients_fail_fast(server):
    res = subprocess.run(["mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(server.mqtt_port),
                          "-u", "v5-device", "-P", "v5-password", "-t", "a/b", "-m", "x"],
                         capture_output=True, text=True, timeout=8)
    assert res.returncode != 0 and "Unsupported Protocol Version" in res.stderr
    v5 = Paho(server.mqtt_port, "v5-device", "v5-password", client_id="v5-paho", protocol=mqtt.MQTTv5)
    try:
        v5.connect(timeout=3.0)
        assert v5.reason_code == 132  # paho's name for a v3 CONNACK 1 seen by a v5 client
    finally:
        v5.close()


def test_fixed_dollar_publish_not_left_dangling(server, admin_reg):
    assert check_dollar_publish_not_left_dangling(server, admin_reg)
    assert any("forbidden topic" in line for line in server.lines)


# ------------------------------------------------------------------ stock amqtt still shows each defect
@pytest.fixture
def stock(db_path, admin_reg):
    st = ServerThread(db_path, amqtt_fixes=False).start()
    yield st
    st.stop()


@pytest.mark.parametrize("clean", [False, True], ids=["clean0-takeover", "clean1-wipe"])
def test_stock_refused_connect_disturbs_live_session(stock, admin_reg, clean):
    assert not check_refused_connect_leaves_live_session_alone(stock, admin_reg, clean)


def test_stock_refused_connects_leak_sessions(stock, admin_reg):
    assert not check_refused_connects_leave_no_sessions(stock, admin_reg, n=30)


def test_stock_silent_socket_kept_open(stock):
    assert not check_silent_socket_closed(stock, wait=2.0)


def test_stock_mqtt5_connect_hangs(stock):
    assert not check_mqtt5_connect_answered(stock)


def test_stock_dollar_publish_left_dangling(stock, admin_reg):
    assert not check_dollar_publish_not_left_dangling(stock, admin_reg)
