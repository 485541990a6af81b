"""Registry.login (the broker's CONNECT path) and the loop-safe cache checks.

The timing rule: any login not answered by the credential cache costs exactly ONE argon2id operation, whatever
the name (user, unknown, disabled) and whatever the registration outcome. Counted with spies, not timed.
"""

import pytest

import store.crypto
from store import RegistryConfig


@pytest.fixture
def argon2_ops(monkeypatch):
    """Every argon2 operation the registry runs, as ("hash", None) or ("verify", stored_hash)."""
    ops = []
    real_hash, real_verify = store.crypto.hash_password, store.crypto.verify_password

    def hash_spy(password):
        ops.append(("hash", None))
        return real_hash(password)

    def verify_spy(stored_hash, password):
        ops.append(("verify", stored_hash))
        return real_verify(stored_hash, password)

    monkeypatch.setattr(store.crypto, "hash_password", hash_spy)
    monkeypatch.setattr(store.crypto, "verify_password", verify_spy)
    return ops


def test_new_device_costs_one_argon2_hash_not_two(reg, argon2_ops):
    reg.unlock(300, actor="op")
    res = reg.login("sensor-1", "sensor-pw", "cid-1", "10.0.0.1")
    assert not res.accepted and res.outcome == "pending" and res.attempt.pairing_code
    assert argon2_ops == [("hash", None)]
    assert [e.kind for e in reg.events()][-1] == "request.created"


@pytest.mark.parametrize("case", ["locked", "retry", "denied", "invalid", "flood", "known_user"])
def test_attempt_outcomes_that_do_not_hash_run_one_dummy_verification(case, make_reg, argon2_ops, monkeypatch):
    reg = make_reg(RegistryConfig(per_peer_per_minute=1))
    username, password = "sensor-1", "sensor-pw"
    if case != "locked":
        reg.unlock(300, actor="op")
    if case in ("retry", "denied"):
        reg.record_attempt(username, password, peer="10.0.0.1")
        if case == "denied":
            reg.deny([username], actor="op")
    if case == "invalid":
        password = "pw"  # shorter than 5
    if case == "flood":
        reg.record_attempt("sensor-0", "sensor-pw", peer="10.0.0.1")
    if case == "known_user":
        # The name becomes a user between login's look-up and the attempt (another process granted it).
        reg.add_user(username, "other-pw", actor="op")
        real_user_row, calls = reg._user_row, []

        def first_lookup_misses(name):
            calls.append(name)
            return None if len(calls) == 1 else real_user_row(name)

        monkeypatch.setattr(reg, "_user_row", first_lookup_misses)
    argon2_ops.clear()
    res = reg.login(username, password, "cid", "10.0.0.1")
    assert (res.accepted, res.outcome) == (False, case)
    assert argon2_ops == [("verify", None)], "exactly one argon2 operation: the dummy verification"


@pytest.mark.parametrize("case", ["right", "wrong", "disabled"])
def test_a_user_login_is_one_verification(case, reg, argon2_ops):
    reg.add_user("alice", "alice-pw", actor="op")
    if case == "disabled":
        reg.disable_user("alice", actor="op")
    argon2_ops.clear()
    res = reg.login("alice", "alice-pw" if case != "wrong" else "wrong-pw")
    assert res.accepted is (case == "right") and res.attempt is None
    assert len(argon2_ops) == 1 and argon2_ops[0][0] == "verify" and argon2_ops[0][1].startswith("$argon2id$")
    assert reg.status().pending == 0 and not any(e.kind.startswith("request.") for e in reg.events())


def test_cached_login_runs_no_argon2_and_a_wrong_password_still_pays(reg, argon2_ops):
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.login("alice", "alice-pw").accepted
    argon2_ops.clear()
    assert reg.login("alice", "alice-pw").outcome == "accepted" and argon2_ops == []
    assert not reg.login("alice", "wrong-pw").accepted and len(argon2_ops) == 1


def test_authenticate_cached_answers_only_true_or_unknown(reg, argon2_ops):
    reg.add_user("alice", "alice-pw", actor="op")
    argon2_ops.clear()
    assert reg.authenticate_cached("alice", "alice-pw") is None  # not verified yet
    assert reg.authenticate_cached("nobody", "whatever") is None
    assert reg.authenticate("alice", "alice-pw")
    assert reg.authenticate_cached("alice", "alice-pw") is True
    # A wrong password of a cached user is not refused here: the full check (one argon2) must do it.
    assert reg.authenticate_cached("alice", "wrong-pw") is None
    assert reg.authenticate_cached("alice", None) is None
    assert len(argon2_ops) == 1
    reg.disable_user("alice", actor="op")
    assert reg.authenticate_cached("alice", "alice-pw") is None
    reg.enable_user("alice", actor="op")
    assert reg.authenticate("alice", "alice-pw")
    reg.invalidate("alice")  # what the relay does for a change made by another process
    assert reg.authenticate_cached("alice", "alice-pw") is None


def test_authorize_cached_matches_authorize_once_warm(reg):
    reg.add_user("root", "root-pw", admin=True, actor="op")
    reg.add_user("dev", "dev-pw", actor="op")
    reg.permit("dev", "sensors/#", "read", actor="op")
    reg.permit("dev", "own/{client_id}/#", "readWrite", actor="op")
    checks = [("dev", "subscribe", "sensors/#", None), ("dev", "publish", "sensors/a", None),
              ("dev", "receive", "sensors/a", None), ("dev", "publish", "own/c1/x", "c1"),
              ("dev", "publish", "own/c1/x", "c2"), ("dev", "receive", "$registry/x", None),
              ("root", "subscribe", "$registry/#", None), ("ghost", "receive", "sensors/a", None)]
    assert all(reg.authorize_cached(u, a, t, client_id=c) is None for u, a, t, c in checks)
    expected = [reg.authorize(u, a, t, client_id=c) for u, a, t, c in checks]
    assert expected == [True, False, True, True, False, False, True, False]
    assert [reg.authorize_cached(u, a, t, client_id=c) for u, a, t, c in checks] == expected
    reg.forbid("dev", "sensors/#", actor="op")  # invalidates: the next answer must come from the database
    assert reg.authorize_cached("dev", "receive", "sensors/a") is None
    assert reg.authorize("dev", "receive", "sensors/a") is False
    assert reg.authorize_cached("dev", "receive", "sensors/a") is False
    assert reg.authorize_cached("dev", "receive", "") is False
    with pytest.raises(ValueError):
        reg.authorize_cached("dev", "delete", "a")
