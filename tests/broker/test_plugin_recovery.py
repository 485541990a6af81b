"""The accounts survive what can go wrong around Mosquitto, with real processes: Mosquitto killed -9 in the middle
of 1,000 grants, and Mosquitto restarted while the service is down (the plugin loads its snapshot)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from broker.mosquitto import plugin_wire as wire
from store import open_registry

from . import plugin_state
from .conftest import wait_until
from .mqtt_raw import connect, open_socket, read_connack
from .test_serve import start, wait_serving

PASSWORD = "fleet-password-1"


def connack(port: int, name: str, password: str = PASSWORD) -> int | None:
    sock = open_socket(port)
    try:
        sock.sendall(connect(f"cid-{name}", name, password))
        return read_connack(sock)
    finally:
        sock.close()


def pending(reg, names: list[str]) -> None:
    """Requests as devices' attempts leave them (the store's own path), written before the grants."""
    reg.unlock(3600, actor="test")
    for i, name in enumerate(names):  # from many addresses: one address may bring 30 a minute
        peer = f"10.0.{i // 25}.{i % 25 + 1}"
        assert reg.record_attempt(name, PASSWORD, f"cid-{name}", peer, "mqtt").outcome == "pending"


def test_mosquitto_killed_during_1000_grants_every_granted_device_gets_in(server, admin_reg):
    names = [f"fleet-{i:04d}" for i in range(1000)]
    pending(admin_reg, names)
    supervisor = server.srv.supervisor
    old_pid = supervisor.proc.pid
    killed = threading.Event()

    def grant_all() -> None:
        for start_at in range(0, len(names), 50):  # as an operator's glob grants or a rule would, in batches
            assert all(r.ok for r in admin_reg.grant(names[start_at:start_at + 50], actor="test"))
            if start_at == 500:
                os.kill(old_pid, signal.SIGKILL)  # in the middle: some applied, some in flight, some to come
                killed.set()

    granting = threading.Thread(target=grant_all)
    granting.start()
    granting.join(120)
    assert killed.is_set() and not granting.is_alive()
    wait_until(lambda: supervisor.proc is not None and supervisor.proc.pid != old_pid and
               supervisor.state == "running", timeout=30, message="Mosquitto restarted")
    wait_until(lambda: all(server.srv.accounts.has_account(n) for n in names), timeout=30,
               message="every account in the service's copy")
    refused = names
    deadline = time.monotonic() + 30
    while refused and time.monotonic() < deadline:  # reconcile repairs what the kill lost, within seconds
        refused = [n for n in refused if connack(server.mqtt_port, n) != 0]
    assert not refused, f"{len(refused)} granted devices refused, e.g. {refused[:3]}"
    assert connack(server.mqtt_port, "fleet-0001", "wrong-password") != 0
    assert connack(server.mqtt_port, "never-granted") != 0


def test_mosquitto_restarted_while_the_service_is_down_admits_the_granted_and_refuses_the_rest(tmp_path):
    db = str(tmp_path / "registry.db")
    proc = start(db)
    mosquitto = None
    try:
        port, _, _ = wait_serving(proc)
        reg = open_registry(db)
        try:
            pending(reg, ["kept-1", "kept-2", "denied-1"])
            assert all(r.ok for r in reg.grant(["kept-1", "kept-2"], actor="test"))
            assert reg.deny(["denied-1"], actor="test")[0].ok
            reg.disable_user("kept-2", actor="test")
            assert reg.wait_applied(reg.last_event_id(), 5.0) == "applied"
        finally:
            reg.close()
        wait_until(lambda: connack(port, "kept-1") == 0, message="kept-1 admitted by the running broker")
        snapshot = tmp_path / "registry.accounts.snapshot"

        def disabled_in_snapshot() -> bool:
            record = plugin_state.read_snapshot(snapshot)[2].get("kept-2")
            return record is not None and bool(wire.parse_account(record).flags & wire.DISABLED)

        wait_until(disabled_in_snapshot, timeout=5, message="the last change in the snapshot (about 1 s behind)")
        pid = int((tmp_path / "registry.mosquitto.pid").read_text())
        proc.send_signal(signal.SIGKILL)  # the service dies; its Mosquitto keeps serving
        proc.wait(10)
        assert connack(port, "kept-1") == 0
        os.kill(pid, signal.SIGKILL)  # and now Mosquitto too; start it again by hand, with no service
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), message="Mosquitto gone")
        mosquitto = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "registry.mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _answers(port), timeout=10, message="Mosquitto listening again")
        assert connack(port, "kept-1") == 0  # granted: in the snapshot
        assert connack(port, "kept-2") != 0  # disabled in the snapshot
        assert connack(port, "kept-1", "wrong-password") != 0
        assert connack(port, "denied-1") != 0
        assert connack(port, "stranger-1") != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if mosquitto is not None:
            mosquitto.kill()
            mosquitto.wait(10)


def _answers(port: int) -> bool:
    try:
        return connack(port, "probe-name") is not None
    except OSError:
        return False


def test_a_slow_plugin_does_not_make_the_running_server_look_gone(tmp_path):
    """Mosquitto paused (SIGSTOP) for longer than the CLI's liveness window: the relay waits for the plugin's
    answer, but the server still notes that it is alive, so a command waiting to read its write says "timeout"
    (the server is running, the change not applied yet), never "no_server"; resumed, the change is applied."""
    db = str(tmp_path / "registry.db")
    proc = start(db)
    reg = None
    pid = paused = None
    try:
        port, _, _ = wait_serving(proc)
        pid = int((tmp_path / "registry.mosquitto.pid").read_text())
        reg = open_registry(db)
        pending(reg, ["slow-1"])
        assert reg.wait_applied(reg.last_event_id(), 10.0) == "applied"
        os.kill(pid, signal.SIGSTOP)
        paused = pid
        assert reg.grant(["slow-1"], actor="test")[0].ok
        assert reg.wait_applied(reg.last_event_id(), 7.0) == "timeout"  # past SERVER_ALIVE (5 s)
        os.kill(pid, signal.SIGCONT)
        paused = None
        assert reg.wait_applied(reg.last_event_id(), 30.0) == "applied"
        wait_until(lambda: connack(port, "slow-1") == 0, message="slow-1 admitted once Mosquitto runs again")
    finally:
        if paused is not None:
            os.kill(paused, signal.SIGCONT)
        if reg is not None:
            reg.close()
        proc.terminate()  # stops its Mosquitto too
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
