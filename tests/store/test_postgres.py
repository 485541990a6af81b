"""The same registry on PostgreSQL, by URL: the scale-out path of the design."""

import tempfile

import pytest

from store import open_registry
from tests.postgres_server import postgres_server


@pytest.fixture(scope="module")
def pg_url():
    with tempfile.TemporaryDirectory(prefix="cr-pg-") as folder, postgres_server(folder) as url:
        yield url


def test_registration_flow_on_postgres(pg_url, clock):
    reg = open_registry(pg_url, clock=clock)
    reg.record_attempt("knocker", "secret-pw", "c", "p", "mqtt")
    assert reg.status().knocking == 1
    reg.record_attempt("knocker", "secret-pw", "c", "p", "mqtt")
    assert reg.status().refused_recent == 2
    reg.unlock(300, actor="op")
    assert reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.1", "mqtt").outcome == "pending"
    assert reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.1", "mqtt").outcome == "retry"
    assert reg.record_attempt("sensor-1", "other-pw", "c1", "10.0.0.1", "mqtt").outcome == "conflict"
    second = [r for r in reg.requests() if r.attempts == 1][0]
    assert reg.grant([str(second.id)], ["devices/{username}/#=readWrite"], actor="op", force=True)[0].ok
    assert reg.authenticate("sensor-1", "other-pw") and not reg.authenticate("sensor-1", "secret-pw")
    assert reg.authorize("sensor-1", "publish", "devices/sensor-1/t")
    assert [r.status for r in reg.requests(include_all=True)] == ["granted", "denied"] or \
        sorted(r.status for r in reg.requests(include_all=True)) == ["denied", "granted"]
    kinds = [e.kind for e in reg.events()]
    assert kinds[0] == "registry.unlocked" and kinds[-1] == "request.granted"
    again = open_registry(pg_url, clock=clock)  # a second process on the same server: tables exist, no error
    assert again.user("sensor-1").permissions == [("devices/{username}/#", "readWrite")]
    again.close()
    reg.close()
