import pytest

from store import RegistryConfig, open_registry


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "registry.db")


@pytest.fixture
def reg(db_path, clock):
    registry = open_registry(db_path, clock=clock)
    yield registry
    registry.close()


@pytest.fixture
def make_reg(db_path, clock):
    """Open the same file again, e.g. with another config."""
    opened = []

    def make(config: RegistryConfig | None = None, path: str | None = None):
        registry = open_registry(path or db_path, config=config, clock=clock)
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        registry.close()


@pytest.fixture(scope="session", autouse=True)
def no_broker_left_behind(tmp_path_factory):
    """Tests kill services on purpose (a supervised Mosquitto outlives them by design): whatever Mosquitto
    still runs on a configuration under this session's temporary folder is stopped at the end."""
    yield
    import os
    import signal
    from pathlib import Path

    base = str(tmp_path_factory.getbasetemp())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"mosquitto") and any(base.encode() in part for part in cmdline):
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except OSError:
                pass
