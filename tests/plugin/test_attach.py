"""Attach mode: the registry plugin loaded around a site's own authentication (dynamic security, or a
password file), on a real Mosquitto."""

from __future__ import annotations

import subprocess
import time

import pytest

from broker.mosquitto import plugin_wire as wire

from .conftest import (
    ACCEPTED,
    DEVICE,
    DEVICE_PASSWORD,
    DEVICE_USER,
    REFUSED,
    SERVICE,
    Client,
    Mosquitto,
    Service,
    attempt,
    dynsec_client,
    dynsec_config,
    wait_until,
    write_snapshot,
)

SITE_USER, SITE_PASSWORD = "site-client", "site-password"
SITE_ROLE = {"rolename": "site", "acls": [
    {"acltype": "publishClientSend", "topic": "site/#", "allow": True},
    {"acltype": "subscribePattern", "topic": "site/#", "allow": True},
]}


@pytest.fixture
def attach_broker(plugin_so, short_dir, registry):
    started: list[Mosquitto] = []

    def start(site_lines: list[str], *, last: bool = True, extra: list[str] | None = None,
              unlocked_until: float | None = None) -> Mosquitto:
        snapshot = short_dir / "snapshot.bin"
        write_snapshot(snapshot, [SERVICE, DEVICE], unlocked_until=unlocked_until)
        broker = Mosquitto(short_dir, plugin_so, str(short_dir / "registry.sock"), snapshot, extra=extra)
        lines = [f"plugin {plugin_so}", *broker.options(), "plugin_opt_part first", *site_lines]
        if last:
            lines += [f"plugin {plugin_so}", "plugin_opt_part last"]
        broker.plugin_lines = lines
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.mark.parametrize("unlocked", [False, True], ids=["locked", "unlocked"])
def test_attach_around_dynamic_security(attach_broker, short_dir, registry, clients, unlocked, dynsec_plugin):
    dynsec_config(short_dir / "dynsec.json", [dynsec_client(SITE_USER, SITE_PASSWORD, roles=[{"rolename": "site"}])],
                  [SITE_ROLE])
    broker = attach_broker([f"plugin {dynsec_plugin}", f"plugin_opt_config_file {short_dir / 'dynsec.json'}"],
                           unlocked_until=time.time() + 3600 if unlocked else None)
    # The site's client logs in and uses its topics (dynamic security answers it: the registry defers).
    site = Client(broker.port, SITE_USER, SITE_PASSWORD, client_id="site-1")
    clients.append(site)
    assert site.ok
    assert site.subscribe("site/#") == [0]
    assert site.subscribe("devices/#") == [128]
    site.publish("site/hello", b"hi")
    assert site.message() == ("site/hello", b"hi", False)
    assert attempt(broker.port, "s", SITE_USER, "wrong") == REFUSED[4]
    # Registry accounts work, and the service drives the plugin.
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok and device.subscribe("devices/device-1/#") == [0]
    service = Service(broker.port)
    clients.append(service)
    assert service.ok
    assert service.query().accounts == 2
    # A name nobody knows is reported by the last part.
    assert attempt(broker.port, "n", "nobody-knows", "pw") == REFUSED[4]
    if unlocked:
        report = registry.next(wire.Attempt)
        assert (report.kind, report.username) == (wire.UNKNOWN, b"nobody-knows")
    else:
        assert registry.next(wire.Knocks).names == ((b"nobody-knows", 1),)
    assert registry.changes(2) == [(True, DEVICE_USER.encode(), b"d1"),
                                   (True, b"registry-service", b"registry-service")]
    # Both parts share one state, freed once: a clean exit.
    for client in clients:
        client.close()
    clients.clear()
    broker.proc.terminate()
    assert broker.proc.wait(10) == 0


def _password_file(short_dir):
    path = short_dir / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), SITE_USER, SITE_PASSWORD], check=True,
                   capture_output=True)
    acl = short_dir / "acl"
    acl.write_text(f"user {SITE_USER}\ntopic readwrite site/#\n")
    return [f"password_file {path}", f"acl_file {acl}"]


def test_attach_with_a_password_file(attach_broker, short_dir, registry, clients):
    """With password_file, load only part first: Mosquitto registers the password file's check after every
    plugin, so a part last would refuse the file's users before the file is read. Unknown names are then
    refused by the password file and cannot be reported."""
    broker = attach_broker([], last=False, extra=_password_file(short_dir))
    site = Client(broker.port, SITE_USER, SITE_PASSWORD, client_id="site-1")
    clients.append(site)
    assert site.ok
    assert site.subscribe("site/#") == [0]
    site.publish("site/x", b"1")
    assert site.message() == ("site/x", b"1", False)
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok and device.subscribe("devices/device-1/#") == [0]
    assert attempt(broker.port, "d1", DEVICE_USER, "wrong") == REFUSED[4]
    assert attempt(broker.port, "n", "nobody-knows", "pw") == REFUSED[4]
    assert registry.changes(1) == [(True, DEVICE_USER.encode(), b"d1")]
    # Nothing but presence arrives for the unknown name (its knock report would come within a second).
    registry.sock.settimeout(1.5)
    try:
        while True:
            item = wire.parse_datagram(registry.sock.recv(65536))
            assert isinstance(item, wire.Presence), item
    except TimeoutError:
        pass


def test_part_last_with_a_password_file_shuts_out_its_users(attach_broker, short_dir, registry):
    """Why the password-file configuration must not load part last: the file's check runs after it."""
    broker = attach_broker([], last=True, extra=_password_file(short_dir))
    assert attempt(broker.port, "s", SITE_USER, SITE_PASSWORD) == REFUSED[4]
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED


def test_parts_are_loaded_once_each(plugin_so, short_dir, registry):
    snapshot = short_dir / "snapshot.bin"
    write_snapshot(snapshot, [SERVICE])
    broker = Mosquitto(short_dir, plugin_so, None, snapshot)
    broker.plugin_lines = [f"plugin {plugin_so}", *broker.options(), "plugin_opt_part first",
                           f"plugin {plugin_so}", "plugin_opt_part first"]
    broker.start(expect_running=False)
    try:
        wait_until(lambda: not broker.alive(), message="mosquitto to refuse the configuration")
        assert any("cannot be loaded with the parts already loaded" in line for line in broker.plugin_log())
    finally:
        broker.stop()


def test_bad_part_option(plugin_so, short_dir):
    broker = Mosquitto(short_dir, plugin_so, None, None)
    broker.plugin_lines = [f"plugin {plugin_so}", *broker.options(), "plugin_opt_part middle"]
    broker.start(expect_running=False)
    try:
        wait_until(lambda: not broker.alive(), message="mosquitto to exit")
        assert any("must be all, first or last" in line for line in broker.plugin_log())
    finally:
        broker.stop()


def test_site_client_allowed_on_the_control_topic_is_still_ignored(attach_broker, short_dir, registry, clients,
                                                                   dynsec_plugin):
    """The site's own ACLs may let one of its clients publish on $CONTROL/client-registry/v1 (the registry's
    ACL check defers for names it does not hold): the control callback ignores anyone but a service account."""
    role = {"rolename": "meddler", "acls": [
        {"acltype": "publishClientSend", "topic": "$CONTROL/client-registry/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "$CONTROL/client-registry/#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "$CONTROL/client-registry/#", "allow": True},
    ]}
    dynsec_config(short_dir / "dynsec.json", [dynsec_client("meddler", "pw", roles=[{"rolename": "meddler"}])],
                  [role])
    broker = attach_broker([f"plugin {dynsec_plugin}", f"plugin_opt_config_file {short_dir / 'dynsec.json'}"])
    service = Service(broker.port)
    clients.append(service)
    before = service.query()
    meddler = Client(broker.port, "meddler", "pw", client_id="meddler")
    clients.append(meddler)
    assert meddler.ok
    assert meddler.subscribe(wire.RESPONSE_TOPIC) == [0]  # dynamic security's say: the site's business
    meddler.publish(wire.CONTROL_TOPIC, wire.control_message(5, [wire.RESET_RECORD]))
    meddler.publish(wire.CONTROL_TOPIC, wire.control_message(6, []))
    assert service.answer(0.5) is None
    after = service.query()
    assert (after.state_seq, after.accounts, after.digest) == (before.state_seq, before.accounts, before.digest)
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED
