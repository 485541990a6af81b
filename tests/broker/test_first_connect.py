"""Issue 16 item 4: a device's first connect after its grant succeeds. A grant is reported (the CLI returns,
`wait_applied` says "applied") only once the registry plugin holds the account: with many devices granted at
once, after a `serve` restart, and while Mosquitto itself restarts. Real `serve`, real Mosquitto, real clients."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

from broker.plugin_socket import wake
from tests.broker.clients import mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_protocols_and_recovery import Served, served  # noqa: F401 (the fixture)

DEVICES = 20


def _knock_all(srv: Served, names: list[str]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:
        refused = list(pool.map(lambda n: not srv.attempt(n, f"pw-{n}"), names))
    assert all(refused)
    wait_until(lambda: srv.cli("requests").stdout.count("first-") >= len(names), timeout=10,
               message="every request recorded")


def _first_tries(srv: Served, names: list[str]) -> list[str]:
    """Every device connects once, all at the same moment; the names refused."""
    with ThreadPoolExecutor(len(names)) as pool:
        ok = list(pool.map(lambda n: srv.attempt(n, f"pw-{n}"), names))
    return [n for n, good in zip(names, ok) if not good]


def test_devices_granted_at_once_each_get_in_at_their_first_try(served):  # noqa: F811
    names = [f"first-{i:02d}" for i in range(DEVICES)]
    served.start()
    served.cli("unlock")
    _knock_all(served, names)
    served.cli("grant", "first-*", "--yes", "-p", "devices/{username}/#=readWrite")
    assert _first_tries(served, names) == []


def test_a_request_granted_after_a_serve_restart_gets_in_at_its_first_try(served):  # noqa: F811
    names = [f"first-{i:02d}" for i in range(5)]
    proc = served.start()
    served.cli("unlock")
    _knock_all(served, names)
    proc.terminate()
    proc.wait(15)
    served.start()
    served.cli("grant", "first-*", "--yes", "-p", "devices/{username}/#=readWrite")
    assert _first_tries(served, names) == []


def test_a_grant_while_mosquitto_restarts_is_not_reported_applied_before_the_plugin_has_it(server, admin_reg):
    """The relay used to note a batch as applied even when Mosquitto did not take it (it was restarting): the
    CLI returned at once and the device, retrying at once, was refused by the restarted Mosquitto (its
    snapshot lacked the account) until the reconcile."""
    name, password = "phoenix-first", "phoenix-pass-1"
    admin_reg.unlock(actor="test")
    server.applied(admin_reg)
    assert mosquitto_pub(server.mqtt_port, name, password).returncode != 0  # a request now
    wait_until(lambda: admin_reg.requests(), message="the request")
    os.kill(server.srv.supervisor.proc.pid, signal.SIGKILL)
    wait_until(lambda: not server.srv.link.connected.is_set(), message="the service sees Mosquitto gone")
    admin_reg.grant([name], actor="test")
    wake(server.srv.socket_path)
    assert admin_reg.wait_applied(admin_reg.last_event_id(), timeout=20) == "applied"
    assert mosquitto_pub(server.mqtt_port, name, password).returncode == 0, \
        "reported applied, yet the device's first connect was refused"
