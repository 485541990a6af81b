"""End to end: the dashboard against the real registry broker (broker/ EmbeddedServer on an ephemeral port),
with real paho devices knocking and the relay feeding the listener worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest

from store import open_registry
from tests.broker.plugin_state import applied
from tui.app import RegistryApp
from tui.embedded import EmbeddedBroker
from tui.listener import MqttTarget
from tui.screens.modals import GrantModal

from .conftest import wait_for


class Device:
    """A paho client that tries to connect once; keeps the connection when it gets in."""

    def __init__(self, port: int, username: str, password: str, client_id: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        self.port = port
        self.connack = threading.Event()
        self.rc = None
        self.subacks: dict[int, list] = {}
        self.suback = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, rc, props=None):
        self.rc = rc
        self.connack.set()

    def _on_subscribe(self, client, userdata, mid, rcs, props=None):
        self.subacks[mid] = rcs
        self.suback.set()

    def connect(self) -> bool:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.connack.wait(10), "no CONNACK"
        if self.rc.is_failure:
            self.close()
            return False
        return True

    def may_subscribe(self, topic: str) -> bool:
        self.suback.clear()
        _, mid = self.client.subscribe(topic, qos=0)
        for _ in range(100):
            if mid in self.subacks:
                break
            self.suback.wait(0.1)
        return not self.subacks[mid][0].is_failure

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def server(db_path):
    embedded = EmbeddedBroker(lambda: open_registry(db_path), "127.0.0.1:0", None).start()
    yield embedded
    embedded.stop()


def app_for(reg, server) -> RegistryApp:
    creds = server.console
    return RegistryApp(reg, mqtt_target=MqttTarget("127.0.0.1", server.mqtt_port, creds.username, creds.password),
                       listener_backoff=(0.2, 1.0))


def requests(app):
    return {r.username: r for r in app.screen_stack[0].requests_table.model.values()}


async def test_unlock_knock_grant_with_template_then_device_uses_only_its_topics(reg, server):
    app = app_for(reg, server)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        assert not Device(server.mqtt_port, "meter-1", "secret-meter", "m1").connect()  # locked: refused
        await wait_for(pilot, lambda: dash.header_state.knocking == 1, message="1 device knocking")
        assert requests(app) == {}  # the attempt has come through as a knock, not as a request
        await pilot.press("u")
        assert not Device(server.mqtt_port, "meter-1", "secret-meter", "m1").connect()  # recorded, refused
        await wait_for(pilot, lambda: "meter-1" in requests(app), message="request via relay")
        assert requests(app)["meter-1"].client_id == "m1"
        await pilot.press("space", "g")
        assert isinstance(app.screen, GrantModal)
        await pilot.press(*"devices/{username}/#=readWrite", "enter")
        await wait_for(pilot, lambda: requests(app)["meter-1"].status == "granted", message="granted")
        device = Device(server.mqtt_port, "meter-1", "secret-meter", "m1")
        assert device.connect()
        try:
            assert device.may_subscribe("devices/meter-1/#")
            assert not device.may_subscribe("devices/other/#")
            assert not device.may_subscribe("$registry/#")
        finally:
            device.close()


async def test_conflict_from_two_passwords_is_flagged(reg, server):
    reg.unlock(300)
    app = app_for(reg, server)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        await wait_for(pilot, lambda: applied(server.srv, reg), message="the unlock in the plugin")
        Device(server.mqtt_port, "door-3", "first-password", "d3").connect()
        Device(server.mqtt_port, "door-3", "other-password", "d3b").connect()
        table = dash.requests_table
        await wait_for(pilot, lambda: len(table.model) == 2 and all(r.conflict for r in table.model.values()),
                       message="two conflicting requests")
        from store.request_filter import shown_label
        assert {shown_label(r) for r in table.model.values()} == {"conflict"}


async def test_another_operator_grant_shows_up_live(reg, server, db_path):
    reg.unlock(300)
    app = app_for(reg, server)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        await wait_for(pilot, lambda: applied(server.srv, reg), message="the unlock in the plugin")
        Device(server.mqtt_port, "cam-5", "secret-cam", "c5").connect()
        await wait_for(pilot, lambda: "cam-5" in requests(app), message="request")
        env = dict(os.environ, CLIENT_REGISTRY_DB=db_path)
        subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "client-registry"), "grant", "cam-5"],
            env=env, check=True, capture_output=True, timeout=60)
        await wait_for(pilot, lambda: requests(app)["cam-5"].status == "granted", message="CLI grant seen")
        assert "cam-5" in dash.users_table.model


async def test_embedded_broker_lost_and_back(reg, db_path):
    first = EmbeddedBroker(lambda: open_registry(db_path), "127.0.0.1:0", None).start()
    port, creds = first.mqtt_port, first.console
    reg.unlock(300)
    app = RegistryApp(reg, mqtt_target=MqttTarget("127.0.0.1", port, creds.username, creds.password),
                      listener_backoff=(0.2, 0.5))
    second = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            dash = app.screen_stack[0]
            await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
            first.stop()
            await wait_for(pilot, lambda: dash.header_state.broker == "retrying", message="retrying")
            second = EmbeddedBroker(lambda: open_registry(db_path), f"127.0.0.1:{port}", None).start()
            await wait_for(pilot, lambda: dash.header_state.broker == "connected", timeout=15,
                           message="reconnected")
            Device(port, "after-restart", "secret-after", "ar").connect()
            await wait_for(pilot, lambda: "after-restart" in requests(app), message="live again")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_simulated_devices_get_in_once_granted(reg, server):
    from tui.simulate import Simulator

    reg.unlock(300)
    from tests.broker.conftest import wait_until

    wait_until(lambda: applied(server.srv, reg), message="the unlock in the plugin")
    lines: list[str] = []
    sim = Simulator(MqttTarget("127.0.0.1", server.mqtt_port), 2, out=lines.append,
                    backoff_first=0.2, backoff_max=0.5, heartbeat=0.2, seed=7)
    runner = threading.Thread(target=sim.run, kwargs={"until_admitted": True})
    runner.start()
    try:
        wait_until(lambda: len(reg.requests()) >= 2, timeout=20, message="both devices' requests")
        pending = {r.username: r for r in reg.requests()}
        assert set(pending) == {d.username for d in sim.devices}
        for device in sim.devices:  # the code the device prints is the code the operator sees
            assert pending[device.username].pairing_code == device.code
            assert any(device.code in line for line in lines)
        reg.grant([d.username for d in sim.devices], ["devices/{username}/#=readWrite"], actor="test")
        runner.join(30)
        assert not runner.is_alive() and sim.all_admitted()
        assert all(d.allowed == [f"devices/{d.username}/#"] for d in sim.devices)
        assert any("may use: devices/" in line for line in lines)
    finally:
        sim.stop.set()
        runner.join(10)


async def test_deny_then_the_device_stays_out(reg, server):
    reg.unlock(300)
    app = app_for(reg, server)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen_stack[0]
        await wait_for(pilot, lambda: dash.header_state.broker == "connected", message="connected")
        await wait_for(pilot, lambda: applied(server.srv, reg), message="the unlock in the plugin")
        assert not Device(server.mqtt_port, "rogue-1", "rogue-secret", "r1").connect()
        await wait_for(pilot, lambda: "rogue-1" in requests(app), message="request")
        await pilot.press("d", "y")
        await wait_for(pilot, lambda: requests(app)["rogue-1"].status == "denied", message="denied")
        assert not Device(server.mqtt_port, "rogue-1", "rogue-secret", "r1").connect()
        assert len(requests(app)) == 1  # a retry of a denied request adds no row
        await pilot.press("slash", *"rogue", "enter", "3")
        audit = dash.audit_table
        assert [e.kind for e in audit.shown_items()][:2] == ["request.denied", "request.created"]


def test_simulate_fits_the_fleet_flow_reports_its_real_grants_and_says_when_dropped(reg, server, db_path):
    """`simulate --prefix sensor` names fit `sensor-*`; once in, each device reports the topics the registry
    grants it (a role's `sensors/{username}/#`), checked against the broker; disabled, it says so in one line."""
    from cli.dashboard import local_grants
    from tests.broker.conftest import wait_until
    from tui.simulate import Simulator

    reg.add_role("fleet", actor="test")
    reg.role_permit("fleet", "sensors/{username}/#", "readWrite", actor="test")
    reg.unlock(300)
    wait_until(lambda: applied(server.srv, reg), message="the unlock in the plugin")
    lines: list[str] = []
    sim = Simulator(MqttTarget("127.0.0.1", server.mqtt_port), 2, out=lines.append, backoff_first=0.2,
                    backoff_max=0.5, heartbeat=0.2, seed=3, prefix="sensor", grants=local_grants(db_path))
    assert all(d.username.startswith("sensor-") for d in sim.devices)
    runner = threading.Thread(target=sim.run)
    runner.start()
    try:
        wait_until(lambda: len(reg.requests()) == 2, timeout=20, message="two requests")
        reg.grant([r.id for r in reg.pending_matching("sensor-*")], roles=["fleet"], actor="test")
        wait_until(lambda: all(d.admitted for d in sim.devices), timeout=30, message="both in")
        for d in sim.devices:
            assert f"[{d.username}] may use: sensors/{d.username}/# (readWrite)" in lines
            assert d.allowed == [f"sensors/{d.username}/#"]
        first = sim.devices[0]
        reg.disable_user(first.username, actor="test")
        wait_until(lambda: any(line.startswith(f"[{first.username}] disconnected by the broker") for line in lines),
                   timeout=20, message="said it was dropped")
        wait_until(lambda: any(line.startswith(f"[{first.username}] refused now (") for line in lines),
                   timeout=20, message="said it is refused now")
        assert not any("no permissions yet" in line for line in lines)
    finally:
        sim.stop.set()
        runner.join(15)
