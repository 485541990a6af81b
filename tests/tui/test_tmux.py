"""The real thing in a real terminal: `client-registry` in tmux (80x24), a device knocking with mosquitto_pub,
the operator's keys sent with `tmux send-keys`, the screen read with `tmux capture-pane`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from .conftest import free_port


class Tmux:
    def __init__(self, tmp_path) -> None:
        self.socket = f"cr-test-{uuid.uuid4().hex[:8]}"
        self.session = "dash"

    def run(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=check, capture_output=True,
                              text=True, timeout=20).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self.run("new-session", "-d", "-s", self.session, "-x", "80", "-y", "24",
                 f"env {exports} {command}; echo EXITED=$?; sleep 30")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is required (apt-get install tmux)")
    t = Tmux(tmp_path)
    yield t
    t.kill()


def pub(port: int, user: str, password: str, topic: str = "t") -> int:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                           "-i", f"{user}-cid", "-t", topic, "-m", "hello"], capture_output=True,
                          timeout=20).returncode


def test_new_user_session_in_tmux(tmux, tmp_path):
    mqtt_port, http_port = free_port(), free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "client-registry")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "TERM": "xterm-256color"}
    tmux.start(f"{exe} dashboard --mqtt mqtt://127.0.0.1:{mqtt_port} --http-bind 127.0.0.1:{http_port}", env)
    tmux.wait_for("embedded: stops on quit")  # the header's form that fits 80 columns
    tmux.wait_for("● connected")
    assert pub(mqtt_port, "hall-sensor", "hall-secret") != 0  # locked
    tmux.wait_for("1 device knocking")
    tmux.keys("u")
    tmux.wait_for("UNLOCKED")
    # Recorded, still refused. The registry plugin learns of the unlock from the server's relay (within
    # ~0.1 s): an attempt before that is a knock, and a device retries, so does this check.
    for attempt in range(10):
        assert pub(mqtt_port, "hall-sensor", "hall-secret") != 0
        try:
            tmux.wait_for("hall-sensor", timeout=1.0)
            break
        except AssertionError:
            if attempt == 9:
                raise
    tmux.keys("g")
    tmux.wait_for("Grant 1 request")
    tmux.keys("devices/{username}/#=readWrite", literal=True)
    tmux.keys("Enter")
    tmux.wait_for("granted")
    # The broker account is created by the server's relay right after the commit (within ~0.1 s); a device
    # retries, so does this check.
    deadline = time.monotonic() + 20
    while pub(mqtt_port, "hall-sensor", "hall-secret", "devices/hall-sensor/state") != 0:
        assert time.monotonic() < deadline, "the granted device could not connect"
    tmux.keys("2")
    tmux.wait_for("devices/{username}/#")
    tmux.keys("q")
    assert "EXITED=0" in tmux.wait_for("EXITED=")
    assert pub(mqtt_port, "hall-sensor", "hall-secret") != 0  # the embedded broker stopped with it
