import pytest

from bench import procs


@pytest.fixture(autouse=True)
def mosquitto_installed() -> None:
    """The benchmarks run Debian's Mosquitto: installed by the README's install step, never by a test."""
    if procs.find_mosquitto() is None:
        pytest.fail("Debian's mosquitto is required (apt-get install mosquitto mosquitto-clients)")
