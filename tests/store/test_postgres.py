"""The same registry on PostgreSQL, by URL: the scale-out path of the design."""

import tempfile

import pytest

from store import open_registry
from tests.postgres_server import postgres_server

pytestmark = pytest.mark.xdist_group("postgres")  # one server for the module, on one worker


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
    second = next(r for r in reg.requests() if r.attempts == 1)
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


def test_roles_on_postgres(pg_url, clock):
    """Roles by URL: the hand-written joins of grants/all_grants and the schema upgrade's column check."""
    reg = open_registry(pg_url, clock=clock)
    try:
        reg.add_role("pg-sensors", actor="op")
        reg.role_permit("pg-sensors", "t/{username}/#", "write")
        reg.role_permit("pg-sensors", "shared/#", "read")
        reg.unlock(300, actor="op")
        reg.record_attempt("pg-dev", "secret-pw", "c9", "p", "http", requested_roles=["pg-sensors"])
        assert reg.grant(["pg-dev"], requested=True, actor="op")[0].ok
        grants = reg.grants("pg-dev")
        assert grants.roles == ("pg-sensors",) and set(grants.topics) == {("t/pg-dev/#", "write"),
                                                                           ("shared/#", "read")}
        assert reg.all_grants()["pg-dev"] == grants
        assert reg.shared_grants("pg-sensors") == {"pg-sensors": (("shared/#", "read"),)}
        assert reg.remove_role("pg-sensors", force=True) == 1 and reg.user("pg-dev").roles == []
    finally:
        reg.close()


def test_approval_rules_on_postgres(pg_url, clock):
    """Rules by URL: the hand-written live-rules query and the conditional UPDATE that takes a slot."""
    reg = open_registry(pg_url, clock=clock)
    try:
        reg.add_rule("pg-fleet-*", permissions=["fleet/{username}/#=write"], peer_network="10.0.0.0/8", limit=2,
                     actor="op")
        reg.lock(actor="op")
        clock.advance(1)
        reg.unlock(300, actor="op")
        outcomes = [reg.record_attempt(f"pg-fleet-{i}", "secret-pw", "c", "10.1.1.1", "mqtt").outcome
                    for i in range(3)]
        assert outcomes == ["granted", "granted", "pending"]
        assert reg.record_attempt("pg-fleet-9", "secret-pw", "c", "192.168.1.1", "mqtt").outcome == "pending"
        assert reg.rules()[0].admitted == 2 and reg.authorize("pg-fleet-0", "publish", "fleet/pg-fleet-0/t")
        assert reg.revoke_admitted("pg-fleet-*", actor="op") == ["pg-fleet-0", "pg-fleet-1"]
        reg.remove_rule("pg-fleet-*", actor="op")
    finally:
        reg.close()


def test_certificate_devices_on_postgres(pg_url, clock):
    """Issue 18 by URL: the columns added to a database that lacked them, a CSR signed and fetched, a
    presented certificate bound, and the revoked serial the CRL lists."""
    from tests.store.test_certificate_devices import PASSWORD, device_csr, presented, sign

    reg = open_registry(pg_url, clock=clock)
    for table, column in (("users", "certificate_pem"), ("requests", "csr")):  # as an earlier version left it
        reg.db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    reg.close()
    reg = open_registry(pg_url, clock=clock, signer=sign)
    try:
        reg.unlock(300, actor="op")
        data = device_csr("pg-pump")
        request = reg.record_csr(data, peer="10.0.0.9").request
        assert reg.record_csr(data, peer="10.0.0.9").outcome == "retry"
        assert reg.grant([request.id], actor="op")[0].ok
        fetched = reg.record_csr(data)
        assert fetched.outcome == "granted" and reg.user("pg-pump").certificate_only
        certificate = presented("pg-cam")
        pending = reg.login("pg-cam", PASSWORD, "c", "10.0.0.5", "mqtt", certificate).attempt.request
        assert reg.grant([pending.id], actor="op")[0].ok
        assert reg.all_grants()["pg-cam"].certificate == certificate.fingerprint
        assert reg.broker_verifiers(["pg-pump"])["pg-pump"] == reg.verifier_of("pg-pump", "")
        reg.remove_user("pg-pump", actor="op")
        [(serial, _)] = reg.revoked_serials()
        assert format(serial, "x") == reg.events(subject="pg-pump")[-2].detail["serial"]
    finally:
        reg.close()
