"""A cleared pairing code leaves no bytes behind: not in the database file, its free pages, the WAL or the
shared-memory index, while the registry (and another process's connection, as a running server keeps one)
stays open. The code is a 30-bit filter on the device's password: from a leftover one, a short password is
recovered offline in seconds (docs/SECURITY.md)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from store import open_registry, pairing_code
from store.database import BUSY_TIMEOUT_MS


def distinctive_password(username: str) -> tuple[str, str]:
    """A password whose pairing code is letters only (no digits a counter or a float could hold by chance)."""
    for n in itertools.count():
        password = f"short-{n:06d}"
        code = pairing_code(username, password)
        if code.isalpha():
            return password, code
    raise AssertionError


def files_holding(db_path: str, needle: bytes) -> list[str]:
    found = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(db_path + suffix)
        if path.exists() and needle in path.read_bytes():
            found.append(path.name)
    return found


@pytest.mark.parametrize("decision", ["grant", "deny", "expire"])
def test_a_decided_requests_pairing_code_is_in_no_file(reg, db_path, clock, decision):
    other = open_registry(db_path, clock=clock)  # the server's own connection, open all along
    try:
        reg.unlock(3600, actor="op")
        password, code = distinctive_password("sensor-wal-1")
        assert reg.record_attempt("sensor-wal-1", password, "c1", "10.0.0.9", "http").pairing_code == code
        for n in range(20):  # neighbours on the same pages, and enough writes for the WAL to hold several frames
            reg.record_attempt(f"other-{n}", f"other-password-{n}", None, "10.0.0.10", "mqtt")
        other.status()  # the other connection has read the page holding the code
        assert files_holding(db_path, code.encode()), "the code must be stored while pending"
        if decision == "grant":
            [result] = reg.grant(["sensor-wal-1"], actor="op")
        elif decision == "deny":
            [result] = reg.deny(["sensor-wal-1"], actor="op")
        else:
            clock.advance(reg.config.expire_after + 1)
            assert reg.expire_stale() == 21
            result = None
        assert result is None or result.ok, result
        other.status()
        assert files_holding(db_path, code.encode()) == []
        assert reg.requests(include_all=True)[-1].username == "sensor-wal-1"  # the request itself stays
    finally:
        other.close()


def test_a_wal_kept_busy_by_a_reader_is_scrubbed_by_the_next_process(reg, db_path, clock):
    """A reader in the middle of a read transaction keeps the old frames: the grant cannot truncate the WAL, says
    so in the database, and the server's next housekeeping (every 2 s) does it once the reader is done."""
    server = open_registry(db_path, clock=clock)
    reader = open_registry(db_path, clock=clock)
    reader.db.execute_sql("PRAGMA busy_timeout = 0")
    reg.db.execute_sql("PRAGMA busy_timeout = 50")  # the grant's checkpoint gives up quickly here
    try:
        reg.unlock(3600, actor="op")
        password, code = distinctive_password("sensor-busy-1")
        reg.record_attempt("sensor-busy-1", password, "c1", "10.0.0.9", "mqtt")
        with reader.db.atomic():  # a long read (a dashboard page) holding a snapshot from before the grant
            reader.requests()
            assert reg.grant(["sensor-busy-1"], actor="op")[0].ok
            assert files_holding(db_path, code.encode()) == ["registry.db-wal"]
        server.housekeeping()
        assert files_holding(db_path, code.encode()) == []
    finally:
        reader.close()
        server.close()


def test_the_servers_retry_of_a_busy_scrub_holds_no_writer_off(reg, db_path, clock):
    """While a TRUNCATE checkpoint waits for a reader it holds off every writer. The server's housekeeping
    retries a due scrub every 2 s, so it does not wait: with the reader still reading it gives up at once
    (the scrub stays due), not after the busy timeout (5 s) during which even its own "alive" note would wait
    and `status`/`wait_applied` in other processes would call the running server gone."""
    server = open_registry(db_path, clock=clock)
    reader = open_registry(db_path, clock=clock)
    reg.db.execute_sql("PRAGMA busy_timeout = 50")  # the grant's checkpoint gives up quickly here
    try:
        reg.unlock(3600, actor="op")
        password, code = distinctive_password("sensor-busy-2")
        reg.record_attempt("sensor-busy-2", password, "c1", "10.0.0.9", "mqtt")
        with reader.db.atomic():  # a dashboard's long read, still going
            reader.requests()
            assert reg.grant(["sensor-busy-2"], actor="op")[0].ok
            housekeeping = threading.Thread(target=server.housekeeping)
            housekeeping.start()
            housekeeping.join(BUSY_TIMEOUT_MS / 1000 / 2)
            assert not housekeeping.is_alive(), "the retry waited for the reader"
            assert files_holding(db_path, code.encode()) == ["registry.db-wal"]
        server.housekeeping()  # the reader is done: the next round scrubs
        assert files_holding(db_path, code.encode()) == []
    finally:
        reader.close()
        server.close()
