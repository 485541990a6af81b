"""Fixtures for the dashboard tests: a real SQLite file, a real Mosquitto broker on an ephemeral port,
and helpers to wait on a running app without sleeping blindly."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.procs import free_port
from store import open_registry

# The details panel shows local times: pin the zone so snapshots do not depend on the machine.
os.environ["TZ"] = "UTC"
time.tzset()


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Mosquitto:
    """Debian's mosquitto, anonymous allowed, on 127.0.0.1:<port>; can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def publish(self, topic: str, payload: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1",
                        "-t", topic, "-m", payload], check=True, timeout=10)


@pytest.fixture
def mosquitto(tmp_path):
    if shutil.which("mosquitto") is None:
        pytest.fail("Debian's mosquitto is required (apt-get install mosquitto mosquitto-clients)")
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def reg(db_path):
    """On the real clock (the root conftest's `reg` runs on a hand-moved one): these tests talk to live parts."""
    registry = open_registry(db_path)
    yield registry
    registry.close()


async def wait_for(pilot, predicate, timeout: float = 10.0, message: str = "condition") -> None:
    """Let the app run until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {message}")


async def loaded(pilot, timeout: float = 10.0) -> None:
    """Wait until the dashboard has applied its first read of the database (done in a worker)."""
    dash = pilot.app.screen_stack[0]
    await wait_for(pilot, lambda: getattr(dash, "loaded", False), timeout, "the first resync")
    await pilot.pause()


async def run_from_palette(pilot, search: str, title: str) -> None:
    """Open the command palette, type ``search`` and press Enter once the command titled ``title...`` is the
    one highlighted (the palette searches in a worker, in batches: Enter before that picks nothing or another)."""
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), message="the command palette")
    await pilot.press(*search)

    def highlighted() -> bool:
        commands = pilot.app.screen.query_one(CommandList)
        return (commands.option_count > 0 and commands.highlighted == 0
                and str(commands.get_option_at_index(0).prompt).startswith(title))

    await wait_for(pilot, highlighted, message=f"{title!r} highlighted in the palette")
    await pilot.press("enter")
