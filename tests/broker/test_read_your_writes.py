"""Read your writes: a CLI change returns once the running server applied it to Mosquitto, so the next
command a script runs (or a device) already sees it; without a server it says so in one line."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.broker.clients import Paho, mosquitto_pub, mosquitto_sub_once
from tests.broker.conftest import ServerThread
from tests.broker.test_serve import CLI


def cli(db: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "--db", db, *args], capture_output=True, text=True, timeout=30, input=stdin)


@pytest.fixture
def slow_server(db_path, admin_reg):
    """A server that would only notice changes of other processes after 5 s by itself."""
    st = ServerThread(db_path, relay_interval=5.0).start()
    yield st
    st.stop()


def test_permit_then_subscribe_and_forbid_then_publish(slow_server, db_path):
    server = slow_server
    port = server.mqtt_port
    res = cli(db_path, "user", "add", "script-dev", "--password-stdin", stdin="script-pass-1\n")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    res = cli(db_path, "permit", "script-dev", "plant/#", "readWrite")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    # at once, no sleep: the subscription is allowed (mosquitto_sub says "denied" otherwise)
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", "script-dev", "-P",
                            "script-pass-1", "-t", "plant/#", "-C", "1", "-W", "10", "-v", "-i", "rw-sub"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    admin = Paho(port, server.console.username, server.console.password, client_id="rw-admin").connect()
    try:
        assert admin.subscribe("plant/#") == [1]
        deadline = time.monotonic() + 5
        while sub.poll() is None and time.monotonic() < deadline:  # publish until the subscriber has it
            admin.publish("plant/boiler", "on")
            if admin.next_message(timeout=0.2) and sub.poll() is not None:
                break
        out, err = sub.communicate(timeout=15)
        assert out.strip() == "plant/boiler on" and "denied" not in err, err

        res = cli(db_path, "forbid", "script-dev", "plant/#")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        while admin.next_message(timeout=0.1):
            pass
        # at once: the publish is accepted on the wire but dropped by the broker
        assert mosquitto_pub(port, "script-dev", "script-pass-1", topic="plant/boiler", message="x").returncode == 0
        assert admin.next_message(timeout=1.0) is None
        res = mosquitto_sub_once(port, "script-dev", "script-pass-1", "plant/#", wait=10)  # exits once denied
        assert "denied" in res.stderr
    finally:
        admin.close()
        if sub.poll() is None:
            sub.kill()


def test_without_a_server_the_change_is_recorded_and_said_so(tmp_path):
    db = str(tmp_path / "registry.db")
    assert cli(db, "init").returncode == 0
    res = cli(db, "user", "add", "offline-dev", "--password-stdin", stdin="offline-pass-1\n")
    assert res.returncode == 0
    assert res.stderr.strip().splitlines() == [
        "client-registry: no server is running on this registry: the broker gets this change when "
        "`client-registry serve` (or the dashboard) starts"]
    res = cli(db, "users")
    assert "offline-dev" in res.stdout and res.stderr == ""  # reading changes nothing: nothing to say
