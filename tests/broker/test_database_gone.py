"""A database that disappears under a running server: said once, /healthz fails, no new request is admitted,
nothing is written to a second file; when it is back, admitting resumes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.broker.clients import healthz, mosquitto_pub
from tests.broker.conftest import wait_until


def test_database_moved_away_and_back(server, admin_reg, db_path):
    admin_reg.unlock(actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    db, aside = Path(db_path), Path(db_path + ".aside")
    assert healthz(server.http_port)[0] == 200
    os.rename(db, aside)
    try:
        wait_until(lambda: any("disappeared; not admitting new requests" in line for line in server.lines),
                   message="the server to notice")
        code, body = healthz(server.http_port)
        assert code == 503 and "disappeared" in body["database"]
        assert mosquitto_pub(server.mqtt_port, "while-gone", "while-gone-pw").returncode != 0
        wait_until(lambda: any("user='while-gone'" in line and "not recorded" in line for line in server.lines),
                   message="the refusal")
        assert not db.exists()  # nothing created in its place
    finally:
        os.rename(aside, db)
    wait_until(lambda: any("database: back" in line for line in server.lines), message="the server to see it back")
    assert healthz(server.http_port)[0] == 200
    assert sum("database: " in line and "disappeared" in line for line in server.lines) == 1  # said once
    assert mosquitto_pub(server.mqtt_port, "after-back", "after-back-pw").returncode != 0
    wait_until(lambda: any(r.username == "after-back" for r in admin_reg.requests()), message="recorded again")
    assert not any(r.username == "while-gone" for r in admin_reg.requests())
