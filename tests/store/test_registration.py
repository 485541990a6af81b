"""record_attempt: the rules a device's first contact goes through."""

import base64
import hashlib
from pathlib import Path

import pytest

from store import RegistryConfig, pairing_code


def test_locked_attempt_is_counted_not_stored(reg):
    result = reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.5", "mqtt")
    assert result.outcome == "locked" and not result.accepted
    assert reg.requests(include_all=True) == []
    status = reg.status()
    assert (status.unlocked, status.knocking, status.refused_recent) == (False, 1, 1)
    reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.5", "mqtt")
    reg.record_attempt("sensor-2", "secret-pw", "c2", "10.0.0.6", "mqtt")
    status = reg.status()
    assert (status.knocking, status.refused_recent) == (2, 3)


def test_knocking_forgets_after_five_minutes(reg, clock):
    reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.5", "mqtt")
    clock.advance(301)
    assert reg.status().knocking == 0


def test_unlocked_attempt_becomes_pending_with_pairing_code(reg):
    reg.unlock(300, actor="op")
    result = reg.record_attempt("sensor-1", "secret-pw", "client-a", "10.0.0.5", "mqtt")
    assert result.outcome == "pending" and result.accepted
    expected = base64.b32encode(hashlib.sha256(b"sensor-1\nsecret-pw").digest()).decode()[:6]
    assert result.pairing_code == expected == pairing_code("sensor-1", "secret-pw")
    [row] = reg.requests()
    assert (row.username, row.client_id, row.peer, row.source, row.attempts, row.status, row.conflict) == (
        "sensor-1", "client-a", "10.0.0.5", "mqtt", 1, "pending", False)
    kinds = [e.kind for e in reg.events()]
    assert kinds == ["registry.unlocked", "request.created"]


def test_no_plaintext_password_anywhere_in_the_file(reg, db_path):
    reg.unlock(300, actor="op")
    reg.record_attempt("sensor-1", "Plaintext-Marker-991", "c", "p", "mqtt")
    reg.grant(["sensor-1"], actor="op")
    reg.close()
    for suffix in ("", "-wal"):
        try:
            data = Path(db_path + suffix).read_bytes()
        except FileNotFoundError:
            continue
        assert b"Plaintext-Marker-991" not in data
    row = reg.m.Request.get()
    user = reg.m.User.get()
    assert row.verifier == user.verifier and len(row.verifier) == 64  # the granted user keeps the HMAC verifier


@pytest.mark.parametrize("username, rule", [
    ("ab", "at least 3"),
    ("x" * 129, "at most 128"),
    ("a+b", "'+' or '#'"),
    ("a#b", "'+' or '#'"),
    ("ab\0c", "control"),
    ("ab\x1b[31mc", "control"),
    ("abc\n", "control"),
    (" abc", "whitespace"),
    ("abc ", "whitespace"),
])
def test_invalid_usernames_are_refused_with_the_rule(reg, username, rule):
    reg.unlock(300, actor="op")
    result = reg.record_attempt(username, "secret-pw", "c", "p", "mqtt")
    assert (result.outcome, result.field) == ("invalid", "username")
    assert rule in result.reason
    assert reg.requests(include_all=True) == []


@pytest.mark.parametrize("password, rule", [("1234", "at least 5"), ("x" * 1025, "at most 1024")])
def test_invalid_passwords_are_refused_with_the_rule(reg, password, rule):
    reg.unlock(300, actor="op")
    result = reg.record_attempt("sensor-1", password, "c", "p", "mqtt")
    assert (result.outcome, result.field) == ("invalid", "password") and rule in result.reason
    assert password not in result.reason


def test_invalid_attempt_while_locked_is_not_counted_as_knocking(reg):
    reg.record_attempt("ab", "secret-pw", "c", "p", "mqtt")
    assert reg.status().knocking == 0


@pytest.mark.parametrize("username", [
    "[bold red]boom[/]", "<script>x</script>", "ИмяУстройства", "مستشعر-1", "sensor-🛰️-1", "x" * 128, "a/b/c",
])
def test_hostile_but_valid_usernames_are_stored_verbatim(reg, username):
    reg.unlock(300, actor="op")
    assert reg.record_attempt(username, "secret-pw", "c", "p", "mqtt").outcome == "pending"
    assert reg.requests()[0].username == username
    assert reg.grant([username], actor="op")[0].ok
    assert reg.authenticate(username, "secret-pw")


def test_known_user_is_not_a_registration(reg):
    reg.add_user("alice", "alice-pw", actor="op")
    reg.unlock(300, actor="op")
    assert reg.record_attempt("alice", "wrong-pw", "c", "p", "mqtt").outcome == "known_user"
    assert reg.requests(include_all=True) == []


def test_retry_with_same_password_updates_the_request(reg, clock):
    reg.unlock(300, actor="op")
    first = reg.record_attempt("sensor-1", "secret-pw", "c", "10.0.0.5", "mqtt")
    clock.advance(5)
    again = reg.record_attempt("sensor-1", "secret-pw", "c2", "10.0.0.6", "mqtt")
    assert again.outcome == "retry" and again.request.id == first.request.id
    [row] = reg.requests(include_all=True)
    assert (row.attempts, row.last_seen - row.first_seen, row.client_id, row.peer) == (2, 5, "c2", "10.0.0.6")


def test_different_password_is_a_conflict_and_both_are_flagged(reg):
    reg.unlock(300, actor="op")
    first = reg.record_attempt("sensor-1", "secret-pw", "c", "p1", "mqtt")
    second = reg.record_attempt("sensor-1", "other-pw", "c", "p2", "mqtt")
    assert second.outcome == "conflict" and second.request.id != first.request.id
    rows = reg.requests()
    assert len(rows) == 2 and all(r.conflict for r in rows)


def test_denied_credentials_stay_denied(reg):
    reg.unlock(300, actor="op")
    reg.record_attempt("sensor-1", "secret-pw", "c", "p", "mqtt")
    reg.deny(["sensor-1"], actor="op")
    again = reg.record_attempt("sensor-1", "secret-pw", "c", "p", "mqtt")
    assert again.outcome == "denied" and not again.accepted
    assert reg.requests() == []
    fresh = reg.record_attempt("sensor-1", "new-password", "c", "p", "mqtt")
    assert fresh.outcome == "pending"


def test_a_denied_requests_retry_keeps_what_was_decided_on(reg):
    """Issue 16: the client id and address the operator denied stay on the row; a retry is only counted."""
    reg.unlock(300, actor="op")
    reg.record_attempt("sensor-1", "secret-pw", "fw-1", "10.0.0.1", "mqtt")
    reg.deny(["sensor-1"], actor="op")
    again = reg.record_attempt("sensor-1", "secret-pw", "other-id", "10.0.0.9", "mqtt")
    assert again.outcome == "denied"
    (row,) = reg.requests(include_all=True)
    assert (row.client_id, row.peer, row.attempts) == ("fw-1", "10.0.0.1", 2)


def test_per_peer_flood_limit(make_reg):
    reg = make_reg(RegistryConfig(per_peer_per_minute=3))
    reg.unlock(300, actor="op")
    outcomes = [reg.record_attempt(f"dev-{i}", "secret-pw", "c", "10.0.0.9", "mqtt").outcome for i in range(5)]
    assert outcomes == ["pending"] * 3 + ["flood"] * 2
    assert reg.record_attempt("dev-x", "secret-pw", "c", "10.0.0.10", "mqtt").outcome == "pending"
    assert reg.refused["flood"] == 2


def test_status_names_the_limit_its_throttled_count_was_refused_under(make_reg):
    """Issue 16: a server restarted with a higher limit showed "2 throttled (limit 500)" for refusals made
    under the old limit of 2. The count is of refusals under the limit in force."""
    first = make_reg(RegistryConfig(per_peer_per_minute=2))
    first.note_limits()
    first.unlock(300, actor="op")
    for i in range(4):
        first.record_attempt(f"dev-{i}", "secret-pw", "c", "10.0.0.9", "mqtt")
    assert (first.status().throttled, first.status().per_address_limit) == (2, 2)
    restarted = make_reg(RegistryConfig(per_peer_per_minute=500))
    restarted.note_limits()
    status = restarted.status()
    assert (status.throttled, status.per_address_limit) == (0, 500)
    restarted.note_limits()  # the same server noting again keeps its own count
    restarted.record_attempt("dev-9", "secret-pw", "c", "10.0.0.9", "mqtt")
    assert restarted.status().per_address_limit == 500


def test_per_peer_limit_resets_after_a_minute(make_reg, clock):
    reg = make_reg(RegistryConfig(per_peer_per_minute=2))
    reg.unlock(3000, actor="op")
    for i in range(2):
        reg.record_attempt(f"dev-{i}", "secret-pw", "c", "peer", "mqtt")
    assert reg.record_attempt("dev-2", "secret-pw", "c", "peer", "mqtt").outcome == "flood"
    clock.advance(61)
    assert reg.record_attempt("dev-2", "secret-pw", "c", "peer", "mqtt").outcome == "pending"


def test_total_pending_limit(make_reg):
    reg = make_reg(RegistryConfig(max_pending=2))
    reg.unlock(300, actor="op")
    outcomes = [reg.record_attempt(f"dev-{i}", "secret-pw", "c", f"peer-{i}", "mqtt").outcome for i in range(3)]
    assert outcomes == ["pending", "pending", "flood"]


def test_http_fields_are_validated(reg):
    reg.unlock(300, actor="op")
    bad = reg.record_attempt("dev-1", "secret-pw", None, "p", "http",
                             requested_permissions=[{"resource": "a/#/b", "operation": "read"}])
    assert (bad.outcome, bad.field) == ("invalid", "permissions") and "'#'" in bad.reason
    bad = reg.record_attempt("dev-1", "secret-pw", None, "p", "http",
                             requested_permissions=[{"resource": "a/b", "operation": "all"}])
    assert bad.field == "permissions" and "access must be one of" in bad.reason
    assert reg.record_attempt("dev-1", "secret-pw", None, "p", "http", context=[1]).field == "context"
    good = reg.record_attempt("dev-1", "secret-pw", None, "p", "http",
                              requested_permissions=[{"resource": "dev/{username}/#", "operation": "readWrite"}],
                              context={"site": "hall 3"})
    assert good.outcome == "pending"
    row = reg.requests()[0]
    assert row.requested_permissions == [{"resource": "dev/{username}/#", "operation": "readWrite"}]
    assert row.context == {"site": "hall 3"}


def test_pairing_codes_exist_only_while_pending(reg, clock, db_path):
    """A 30-bit unsalted code is a filter on the password: it is shown while the operator decides, then gone
    from the database (granted, denied, a rival denied, expired)."""
    reg.unlock(3600, actor="op")
    for name in ("g-dev", "d-dev", "e-dev"):
        reg.record_attempt(name, f"{name}-secret", "c", "10.0.0.1", "mqtt")
    reg.record_attempt("g-dev", "other-secret", "c", "10.0.0.2", "mqtt")  # a rival, denied by the forced grant
    assert all(r.pairing_code for r in reg.requests())
    [first] = [r for r in reg.requests() if r.username == "g-dev" and r.peer == "10.0.0.1"]
    assert reg.grant([first.id], actor="op", force=True)[0].ok
    assert reg.deny(["d-dev"], actor="op")[0].ok
    clock.advance(25 * 3600)
    reg.expire_stale()
    rows = reg.requests(include_all=True)
    assert {r.status for r in rows} == {"granted", "denied", "expired"}
    assert [r.pairing_code for r in rows] == [None] * 4
    reg.unlock(3600, actor="op")
    again = reg.record_attempt("d-dev", "d-dev-secret", "c", "10.0.0.1", "mqtt")  # a denied device retries
    assert again.outcome == "denied" and again.pairing_code is None
    reg.close()
    codes = {pairing_code(n, f"{n}-secret").encode() for n in ("g-dev", "d-dev", "e-dev")}
    for suffix in ("", "-wal"):
        try:
            data = Path(db_path + suffix).read_bytes()
        except FileNotFoundError:
            continue
        assert not any(code in data for code in codes), suffix


def test_knocks_stay_bounded_and_are_forgotten(reg, clock, monkeypatch):
    """A flood of distinct names while locked: the knocks table keeps at most KNOCK_ROWS names (the rest are
    counted together, "N+"), and forgets them five minutes later."""
    import store.knocks as knocks

    monkeypatch.setattr(knocks, "KNOCK_ROWS", 50)
    for i in range(200):
        assert reg.record_attempt(f"flood-{i}", "whatever-pw").outcome == "locked"
    status = reg.status()
    assert reg.m.Knock.select().count() == 51 and status.knocking == 50 and status.knocking_capped
    assert status.refused_recent == 200
    clock.advance(301)
    reg.record_attempt("late-one", "whatever-pw")
    assert reg.m.Knock.select().count() == 1 and reg.status().knocking == 1


def test_throttled_attempts_are_counted_per_address(make_reg, clock):
    reg = make_reg(RegistryConfig(per_peer_per_minute=3))
    reg.unlock(3600, actor="op")
    outcomes = [reg.record_attempt(f"dev-{i}", "dev-password", "c", "10.0.0.7").outcome for i in range(10)]
    reg.record_attempt("other-1", "dev-password", "c", "10.0.0.8")
    assert outcomes.count("pending") == 3 and outcomes.count("flood") == 7
    status = reg.status()
    assert (status.throttled, status.throttled_from, status.per_address_limit) == (7, [("10.0.0.7", 7)], 3)
    clock.advance(301)
    assert reg.status().throttled == 0


@pytest.mark.parametrize("name", ["client-registry-service", "client-registry-console", "Client-Registry-x"])
def test_the_registrys_own_names_are_never_requested_or_added(reg, name):
    """The service's account lives in the broker plugin only and the console's is the server's: a device that
    asks for either name (or any of their prefix) is refused with the rule, and no operator can add one."""
    from store import RefusedError

    reg.unlock(300, actor="op")
    result = reg.record_attempt(name, "secret-pw", "c1", "10.0.0.5", "http")
    assert (result.outcome, result.field) == ("reserved", "username") and not result.accepted
    assert "reserved" in result.reason
    assert reg.requests(include_all=True) == []
    with pytest.raises(RefusedError, match="reserved"):
        reg.add_user(name, "secret-pw", actor="op")


def test_knocks_counted_by_the_broker_are_recorded_in_one_go(reg):
    """The plugin counts knocks while locked and reports names with counts (and a total beyond the names)."""
    reg.record_knocks([("sensor-1", 3), ("sensor-2", 1)], total=10)
    status = reg.status()
    assert status.refused_recent == 10
    assert (status.knocking, status.knocking_capped) == (2, True)  # "2+ devices knocking": six not listed


def test_a_users_name_with_another_password_is_a_rekey_request(reg):
    """A re-flashed device knocks with its old name and a new password: recorded (not while locked), flagged
    "re-key", counted on retry, never granted without force; with force the user's password is the new one."""
    reg.add_user("pump-1", "old-password", actor="op")
    assert reg.login("pump-1", "new-password", "c1", "10.0.0.5", "mqtt-rekey").outcome == "locked"
    reg.unlock(300, actor="op")
    first = reg.login("pump-1", "new-password", "c1", "10.0.0.5", "mqtt-rekey")
    assert first.outcome == "rekey" and not first.accepted
    assert reg.login("pump-1", "new-password", "c1", "10.0.0.5", "mqtt-rekey").outcome == "retry"
    [request] = reg.requests()
    assert (request.label, request.rekey, request.attempts) == ("re-key", True, 2)
    [refused] = reg.grant([request.id], actor="op")
    assert not refused.ok and "force" in refused.message
    assert reg.authenticate("pump-1", "old-password")
    [done] = reg.grant([request.id], actor="op", force=True)
    assert done.ok
    assert reg.authenticate("pump-1", "new-password") and not reg.authenticate("pump-1", "old-password")
    kinds = [e.kind for e in reg.events()][-2:]
    assert kinds == ["user.password_changed", "request.granted"]


def test_attempts_and_rekeys_pass_the_same_opening_checks(reg):
    """A new device's attempt and a re-key refuse a broken or reserved name alike; while locked both are
    refused, and only a name that is not a user counts as a device knocking."""
    reg.add_user("pump-1", "old-password")
    for record in (reg.record_attempt, reg.record_rekey):
        assert record("", "password-1", "c1", "10.0.0.5").outcome == "invalid"
        assert record("client-registry-x", "password-1", "c1", "10.0.0.5").outcome == "reserved"
    assert reg.record_rekey("pump-1", "new-password", "c1", "10.0.0.5").outcome == "locked"
    assert reg.status().knocking == 0
    assert reg.record_attempt("valve-1", "password-1", "c2", "10.0.0.6").outcome == "locked"
    assert reg.status().knocking == 1
