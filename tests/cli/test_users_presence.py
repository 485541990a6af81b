"""`client-registry users` says who is online and when each user last connected, from a real server and a
real device; "unknown" when no server watches the broker."""

import json
import re
import time

from store import open_registry
from tests.broker.clients import Paho
from tests.broker.conftest import ServerThread, wait_until

from .test_cli import ok, run


def age_of(db_path: str, name: str) -> tuple[list[str], float, float, float]:
    """`users`'s line for ``name`` split, with when the user last connected (``users --json``) and the moments
    before and after `users` ran: the age it prints lies between them, however busy the machine."""
    [user] = [u for u in json.loads(ok(db_path, "users", "--json")) if u["name"] == name]
    before = time.time()
    line = next(x for x in ok(db_path, "users").splitlines() if x.startswith(name))
    return line.split(), user["presence"]["last_connected"], before, time.time()


def within(age: str, then: float, before: float, after: float) -> bool:
    seconds = 0 if age == "now" else int(age.removesuffix("s"))
    return (age == "now" and before - then < 2) or int(before - then) <= seconds <= int(after - then)


def test_users_shows_online_and_last_connected(db_path):
    server = ServerThread(db_path).start()
    reg = open_registry(db_path)
    try:
        server.add_device(reg, "sensor-5", "secret-5")
        server.add_device(reg, "sensor-6", "secret-6")
        device = Paho(server.mqtt_port, "sensor-5", "secret-5", client_id="esp-5").connect()
        try:
            wait_until(lambda: reg.presence().rows.get("sensor-5", (0,))[0] == 1, message="sensor-5 online")
            users = {u["name"]: u for u in json.loads(ok(db_path, "users", "--json"))}
            five, six = users["sensor-5"]["presence"], users["sensor-6"]["presence"]
            assert five["online"] is True and five["sessions"] == 1 and five["last_connected"] > 0
            assert five["ever_connected"] is True and five["last_disconnected"] is None
            assert six == {"online": False, "sessions": 0, "last_connected": None, "last_disconnected": None,
                           "ever_connected": False}
            assert "password" not in json.dumps(users) and "verifier" not in json.dumps(users)
            lines = {line.split()[0]: line for line in ok(db_path, "users").splitlines()}
            assert lines["USERNAME"].split()[:5] == ["USERNAME", "FLAGS", "ONLINE", "LAST", "CONNECTED"]
            assert lines["sensor-6"].split()[1:4] == ["-", "offline", "never"]
            words, then, before, after = age_of(db_path, "sensor-5")
            assert words[1:3] == ["-", "online"] and within(words[3], then, before, after), words
        finally:
            device.close()
        wait_until(lambda: reg.presence().rows["sensor-5"][0] == 0, message="sensor-5 offline")
        words, then, before, after = age_of(db_path, "sensor-5")
        assert words[2] == "offline" and within(words[3], then, before, after), words
    finally:
        server.stop()
        reg.close()


def test_users_without_a_server_says_unknown(db_path):
    ok(db_path, "init")
    ok(db_path, "user", "add", "sensor-7", "--password-stdin", stdin="secret-7\n")
    result = run(db_path, "users")
    assert result.returncode == 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("sensor-7"))
    assert line.split()[2:4] == ["unknown", "unknown"]
    assert result.stderr == ""  # reading says nothing more: the column says unknown
    [user] = json.loads(ok(db_path, "users", "--json"))
    assert user["presence"]["online"] is None and user["presence"]["sessions"] is None


def test_users_says_created_and_last_connected_in_the_same_words(db_path):
    """Both ages of `users` read alike: ``2h ago``, ``5m ago``, ``now`` (never ``0s ago`` in one column and
    ``now`` in the other)."""
    now = time.time()
    old = open_registry(db_path, clock=lambda: now - 2 * 3600)
    old.add_user("sensor-old", "secret-old", actor="op")
    # A moment not yet past here (a server on a machine whose clock runs ahead) reads "now" in both columns.
    ahead = open_registry(db_path, clock=lambda: now + 3600)
    ahead.add_user("sensor-ahead", "secret-ahead", actor="op")
    old.record_presence({"sensor-old": (0, now - 300, now - 290), "sensor-ahead": (1, now + 3600, None)})
    rows = {cells[0]: cells for cells in (re.split(r" {2,}", line) for line in ok(db_path, "users").splitlines())}
    assert rows["USERNAME"][3] == "LAST CONNECTED" and rows["USERNAME"][6] == "CREATED"
    assert rows["sensor-old"][3] == "5m ago" and rows["sensor-old"][6].startswith("2h ago by op")
    assert rows["sensor-ahead"][3] == "now" and rows["sensor-ahead"][6].startswith("now by op")
