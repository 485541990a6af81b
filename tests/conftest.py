import contextlib
import os
import signal
from pathlib import Path

import pytest

from bench import dynsec_baseline
from store import RegistryConfig, open_registry


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): two workers per core. A test mostly waits on the servers and clients it
    starts (a serial run keeps one core busy 40% of its time): on a shared 2-core machine the suite took 554 s
    serially, 313 s on 2 workers, 211 s on 4. $PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return 2 * len(os.sched_getaffinity(0))


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
def own_xdg_folders(tmp_path_factory):
    """Each test process its own XDG data and config folders, and none of the developer's settings: the
    default database, a server database's companion files and a keymap are never shared between tests that
    run in parallel (pytest-xdist workers), nor with the developer's own. The plugin cache stays shared: it is
    built once per source, by content hash, and concurrent builds are safe (tests/plugin/test_plugin_build.py)."""
    base = tmp_path_factory.mktemp("xdg")
    env = pytest.MonkeyPatch()
    env.setenv("XDG_DATA_HOME", str(base / "data"))
    env.setenv("XDG_CONFIG_HOME", str(base / "config"))
    for name in ("CLIENT_REGISTRY_DB", "CLIENT_REGISTRY_MQTT", "CLIENT_REGISTRY_KEYMAP",
                 "CLIENT_REGISTRY_CONSOLE_PASSWORD"):
        env.delenv(name, raising=False)
    yield
    env.undo()


@pytest.fixture(scope="session")
def dynsec_plugin() -> Path:
    """Debian's dynamic-security plugin, wherever the machine's architecture puts it."""
    found = dynsec_baseline.find_plugin()
    if found is None:
        pytest.fail(f"{dynsec_baseline.SO_NAME} missing (apt-get install mosquitto)")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_broker_left_behind(tmp_path_factory):
    """Tests kill services on purpose (a supervised Mosquitto outlives them by design): whatever Mosquitto
    still runs on a configuration under this session's temporary folder is stopped at the end."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"mosquitto") and any(base.encode() in part for part in cmdline):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGTERM)
