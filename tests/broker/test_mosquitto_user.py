"""A serve started as root runs its Mosquitto as the unprivileged `mosquitto` user, which can still load the
plugin, the secret and the snapshot, report attempts over the socket and save its persistence; nothing is
readable by everyone."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.broker.conftest import wait_until as wait_for
from tests.broker.test_serve import CLI, start, wait_serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def mosquitto_uid() -> int:
    try:
        return pwd.getpwnam("mosquitto").pw_uid
    except KeyError:
        pytest.skip("no mosquitto user")


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def pub(port: int, user: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                           "-t", "t", "-m", "x"], capture_output=True, text=True, timeout=20)


@pytest.fixture
def reachable_dir():
    """A data folder the mosquitto user may reach, as /var/lib/client-registry is (pytest's are 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="cr-user-", dir="/tmp"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_mosquitto_drops_to_its_user_and_still_admits_devices(reachable_dir):
    uid = mosquitto_uid()
    data = reachable_dir / "data"
    data.mkdir(mode=0o700)
    db = str(data / "registry.db")
    proc = start(db)
    lines: list[str] = []
    try:
        port, _, first = wait_serving(proc)
        lines.extend(first)
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
        pid_file = data / "registry.mosquitto.pid"
        pid = int(pid_file.read_text())
        assert uid_of(pid) == uid
        # The plugin, now unprivileged, reports an unknown device over the socket; granted, it gets in.
        subprocess.run([CLI, "--db", db, "unlock"], check=True, capture_output=True, timeout=30)
        assert pub(port, "sensor-9", "secret-9").returncode != 0
        wait_for(lambda: "sensor-9" in subprocess.run([CLI, "--db", db, "requests"], capture_output=True,
                                                      text=True, timeout=30).stdout, 10, "the request")
        subprocess.run([CLI, "--db", db, "grant", "sensor-9", "--yes"], check=True, capture_output=True, timeout=30)
        assert pub(port, "sensor-9", "secret-9").returncode == 0
        # A Mosquitto that dies comes back as its user and loads the snapshot, the device in it.
        snapshot = data / "registry.accounts.snapshot"
        wait_for(lambda: b"sensor-9" in snapshot.read_bytes(), 10, "the snapshot to hold sensor-9")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid_file.exists() and int(pid_file.read_text() or 0) not in (0, pid), 15, "a new Mosquitto")
        new_pid = int(pid_file.read_text())
        loaded = wait_for(lambda: [m for line in lines if (m := re.search(r"registry_plugin: loaded (\d+) accounts",
                                                                          line))][1:], 15, "the snapshot loaded")
        assert int(loaded[0].group(1)) >= 3  # the service, the console and sensor-9
        assert uid_of(new_pid) == uid
        wait_for(lambda: pub(port, "sensor-9", "secret-9").returncode == 0, 10, "sensor-9 after the restart")
        # Shared with Mosquitto's group where it must be, never with everyone.
        modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
        assert all(not mode & 0o007 for mode in modes.values()), modes
        assert modes["registry.secret"] == 0o640 and modes["registry.accounts.snapshot"] == 0o640
        assert modes["registry.db"] == 0o600 and modes["registry.service.credentials"] == 0o600
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert not any("should not be run as root" in line for line in lines)
    assert (data / "registry.mosquitto-data" / "mosquitto.db").stat().st_uid == uid  # it saved as its user


def test_a_user_that_cannot_reach_the_database_is_one_line_and_exit_1(tmp_path):
    mosquitto_uid()  # pytest's folders are 0700 root: the mosquitto user cannot reach tmp_path
    res = subprocess.run([CLI, "serve", "--db", str(tmp_path / "registry.db"), "--mqtt-bind", "127.0.0.1:0",
                          "--http-bind", "127.0.0.1:0", "--mosquitto-user", "mosquitto"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("client-registry: cannot run Mosquitto as 'mosquitto': it cannot enter "), res.stderr
