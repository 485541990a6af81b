"""The unlock window, grant and deny, expiry."""

import sqlite3

import pytest

from store import StoreError


def pending(reg, name, password="secret-pw", peer="p"):
    return reg.record_attempt(name, password, "cid-" + name, peer, "mqtt")


def test_window_is_a_stored_timestamp_that_closes_by_itself(reg, make_reg, clock):
    status = reg.unlock(300, actor="op")
    assert status.unlocked and status.remaining == 300 and status.unlocked_by == "op"
    other = make_reg()  # another process sees the same window
    clock.advance(299)
    assert other.status().unlocked and other.status().remaining == pytest.approx(1)
    clock.advance(1)
    assert not other.status().unlocked and other.status().remaining == 0
    assert pending(reg, "late-dev").outcome == "locked"


def test_a_window_that_runs_out_is_closed_in_the_audit_log_once(reg, make_reg, clock):
    """When the window runs out the log says so (by "registry", at the moment it ran out), once, though a
    second process and the server's periodic note both notice it; a window still open writes nothing."""
    opened = clock()
    reg.unlock(300, actor="op")
    other = make_reg()
    clock.advance(120)
    reg.housekeeping()
    assert [e.kind for e in reg.events()] == ["registry.unlocked"]
    clock.advance(200)
    reg.housekeeping()  # what the running server does every 2 s
    other.status()
    assert not reg.status().unlocked
    events = reg.events()
    assert [(e.kind, e.actor, e.detail) for e in events] == [
        ("registry.unlocked", "op", {"seconds": 300, "until": opened + 300}),
        ("registry.locked", "registry", {"expired": True})]
    assert events[-1].time == opened + 300


def test_lock_closes_the_window(reg):
    reg.unlock(300, actor="op")
    assert not reg.lock(actor="op").unlocked
    assert [e.kind for e in reg.events()] == ["registry.unlocked", "registry.locked"]


def test_unlock_rejects_nonsense_durations(reg):
    from store import RefusedError

    for seconds in (0, -5, 8 * 24 * 3600):
        with pytest.raises(RefusedError):
            reg.unlock(seconds, actor="op")


def test_grant_creates_the_user_with_the_devices_password_and_no_permissions(reg):
    reg.unlock(300, actor="op")
    pending(reg, "sensor-1")
    [result] = reg.grant(["sensor-1"], actor="op")
    assert result.ok and result.request.status == "granted" and result.request.decided_by == "op"
    user = reg.user("sensor-1")
    assert user.permissions == [] and not user.admin and user.created_how == "registration-mqtt"
    assert reg.authenticate("sensor-1", "secret-pw")
    assert not reg.authorize("sensor-1", "subscribe", "anything")
    assert reg.events()[-1].kind == "request.granted"


def test_grant_works_while_locked_and_by_id(reg):
    reg.unlock(300, actor="op")
    request_id = pending(reg, "sensor-1").request.id
    reg.lock(actor="op")
    assert reg.grant([str(request_id)], actor="op")[0].ok


def test_grant_with_template(reg):
    reg.unlock(300, actor="op")
    pending(reg, "sensor-1")
    reg.grant(["sensor-1"], ["devices/{username}/#=readWrite", ("status/{username}", "write")], actor="op")
    assert reg.authorize("sensor-1", "publish", "devices/sensor-1/temp")
    assert reg.authorize("sensor-1", "subscribe", "devices/sensor-1/#")
    assert reg.authorize("sensor-1", "publish", "status/sensor-1")
    assert not reg.authorize("sensor-1", "subscribe", "status/sensor-1")
    assert not reg.authorize("sensor-1", "publish", "devices/sensor-2/temp")


def test_grant_errors_are_per_item_and_do_not_undo_others(reg):
    reg.unlock(300, actor="op")
    pending(reg, "dev-a")
    pending(reg, "dev-b")
    reg.deny(["dev-b"], actor="op")
    results = reg.grant(["dev-a", "dev-b", "999", "ghost", "dev-a"], actor="op")
    assert [r.ok for r in results] == [True, False, False, False, False]
    assert "already denied" in results[1].message or "denied" in results[1].message
    assert "no request #999" in results[2].message
    assert "no pending request" in results[3].message
    assert reg.user("dev-a") is not None and reg.user("dev-b") is None


def test_granting_a_conflict_needs_force_and_denies_rivals(reg):
    reg.unlock(300, actor="op")
    first = pending(reg, "sensor-1", "secret-pw").request.id
    second = pending(reg, "sensor-1", "other-pw").request.id
    [by_name] = reg.grant(["sensor-1"], actor="op")
    assert not by_name.ok and "conflicting" in by_name.message
    [by_id] = reg.grant([str(second)], actor="op")
    assert not by_id.ok and "force" in by_id.message
    [forced] = reg.grant([str(second)], actor="op", force=True)
    assert forced.ok
    assert reg.request(first).status == "denied"
    assert reg.authenticate("sensor-1", "other-pw") and not reg.authenticate("sensor-1", "secret-pw")


def test_grant_is_atomic(reg, db_path):
    """A failure in the middle of a grant leaves no half-made user and the request still pending."""
    reg.unlock(300, actor="op")
    pending(reg, "sensor-1")
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TRIGGER boom BEFORE INSERT ON permissions BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    raw.commit()
    with pytest.raises(StoreError, match="disk on fire"):
        reg.grant(["sensor-1"], ["a/#=read"], actor="op")
    assert reg.user("sensor-1") is None
    assert reg.requests()[0].status == "pending"
    assert "request.granted" not in [e.kind for e in reg.events()]
    raw.execute("DROP TRIGGER boom")
    raw.commit()
    raw.close()
    assert reg.grant(["sensor-1"], ["a/#=read"], actor="op")[0].ok


def test_deny(reg):
    reg.unlock(300, actor="op")
    pending(reg, "sensor-1")
    [result] = reg.deny(["sensor-1"], actor="op")
    assert result.ok and reg.requests(include_all=True)[0].status == "denied"
    [again] = reg.deny(["sensor-1"], actor="op")
    assert not again.ok and "no pending request (it is denied)" in again.message
    [late] = reg.grant(["1"], actor="op2")
    assert not late.ok and "already denied" in late.message


def test_pending_requests_expire_after_a_day(reg, clock):
    reg.unlock(300, actor="op")
    pending(reg, "sensor-1")
    clock.advance(24 * 3600 - 1)
    assert reg.status().pending == 1
    clock.advance(2)
    assert reg.status().pending == 0
    assert reg.requests(include_all=True)[0].status == "expired"
    assert reg.events()[-1].kind == "request.expired"
    assert not reg.grant(["1"], actor="op")[0].ok


def test_requests_listing_order(reg, clock):
    reg.unlock(3000, actor="op")
    for name in ("old-dev", "mid-dev", "new-dev"):
        pending(reg, name)
        clock.advance(1)
    reg.deny(["new-dev"], actor="op")
    assert [r.username for r in reg.requests(include_all=True)] == ["mid-dev", "old-dev", "new-dev"]
    assert [r.username for r in reg.requests()] == ["mid-dev", "old-dev"]


def test_pending_matching_selects_by_glob_on_the_stored_name(reg):
    """Bulk grant's selection: shell globs, case-sensitive, NFC (an NFD pattern finds the NFC name), pending
    requests only, and never a look-alike by accident."""
    reg.unlock(300)
    for name in ("sensor-1", "sensor-2", "Sensor-3", "pump-1", "s\u0435nsor-4", "caf\u00e9-1"):  # Cyrillic е
        pending(reg, name)
    reg.deny(["sensor-2"])
    assert [r.username for r in reg.pending_matching("sensor-*")] == ["sensor-1"]
    assert [r.username for r in reg.pending_matching("[sS]ensor-?")] == ["sensor-1", "Sensor-3"]
    assert [r.username for r in reg.pending_matching("cafe\u0301-*")] == ["caf\u00e9-1"]
    assert reg.pending_matching("valve-*") == []
    pending(reg, "cam[1]")  # a name that holds glob characters is taken as itself
    assert [r.username for r in reg.pending_matching("cam[1]")] == ["cam[1]"]
