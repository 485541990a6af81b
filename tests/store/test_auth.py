"""authenticate and authorize: the broker's hot path."""

import pytest

import store.crypto
from store import RefusedError


@pytest.fixture
def verify_calls(monkeypatch):
    calls = []
    real = store.crypto.verify_password

    def spy(stored_hash, password):
        calls.append(stored_hash)
        return real(stored_hash, password)

    monkeypatch.setattr(store.crypto, "verify_password", spy)
    return calls


def test_authenticate_and_cache(reg, verify_calls):
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.authenticate("alice", "alice-pw")
    assert reg.authenticate("alice", "alice-pw")
    assert len(verify_calls) == 1  # the second one came from the cache
    assert not reg.authenticate("alice", "wrong-pw")


def test_unknown_name_costs_one_argon2_verification_like_a_wrong_password(reg, verify_calls):
    reg.add_user("alice", "alice-pw", actor="op")
    assert not reg.authenticate("nobody", "whatever")
    assert not reg.authenticate("alice", "whatever")
    assert len(verify_calls) == 2 and verify_calls[0] is None and verify_calls[1].startswith("$argon2id$")


def test_cache_is_dropped_when_the_user_changes(reg):
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.authenticate("alice", "alice-pw")
    reg.set_password("alice", "new-alice-pw", actor="op")
    assert not reg.authenticate("alice", "alice-pw") and reg.authenticate("alice", "new-alice-pw")
    reg.disable_user("alice", actor="op")
    assert not reg.authenticate("alice", "new-alice-pw")
    reg.enable_user("alice", actor="op")
    assert reg.authenticate("alice", "new-alice-pw")
    reg.remove_user("alice", actor="op")
    assert not reg.authenticate("alice", "new-alice-pw")


def test_change_by_another_process_needs_invalidate(reg, make_reg):
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.authenticate("alice", "alice-pw")
    make_reg().disable_user("alice", actor="other-process")
    reg.invalidate("alice")  # what the broker's relay does for each event
    assert not reg.authenticate("alice", "alice-pw")


def test_authorize_rules(reg):
    reg.add_user("root", "root-pw", admin=True, actor="op")
    reg.add_user("dev", "dev-pw", actor="op")
    reg.permit("dev", "sensors/#", "read", actor="op")
    reg.permit("dev", "cmd/{username}/+", "write", actor="op")
    reg.permit("dev", "own/{client_id}/#", "readWrite", actor="op")
    assert reg.authorize("root", "subscribe", "$registry/#") and reg.authorize("root", "publish", "x/y")
    assert reg.authorize("dev", "subscribe", "sensors/#")
    assert reg.authorize("dev", "subscribe", "sensors/+/temp")
    assert reg.authorize("dev", "receive", "sensors/hall/temp")
    assert not reg.authorize("dev", "publish", "sensors/hall/temp")
    assert not reg.authorize("dev", "subscribe", "#")
    assert reg.authorize("dev", "publish", "cmd/dev/reboot")
    assert not reg.authorize("dev", "subscribe", "cmd/dev/reboot")
    assert not reg.authorize("dev", "publish", "cmd/other/reboot")
    assert reg.authorize("dev", "publish", "own/cid-7/a", client_id="cid-7")
    assert not reg.authorize("dev", "publish", "own/cid-7/a", client_id="cid-8")
    assert not reg.authorize("dev", "subscribe", "$SYS/#") and not reg.authorize("dev", "receive", "$registry/x")
    assert not reg.authorize("ghost", "receive", "sensors/a")


def test_client_id_with_wildcards_cannot_widen_a_pattern(reg):
    reg.add_user("dev", "dev-pw", actor="op")
    reg.permit("dev", "own/{client_id}/#", "readWrite", actor="op")
    for client_id in ("#", "+", "a/b", ""):
        assert not reg.authorize("dev", "subscribe", f"own/{client_id}/#", client_id=client_id)
    assert not reg.authorize("dev", "subscribe", "own/#", client_id="#")


def test_permissions_change_is_seen_at_once(reg):
    reg.add_user("dev", "dev-pw", actor="op")
    assert not reg.authorize("dev", "subscribe", "a/b")
    reg.permit("dev", "a/#", "readWrite", actor="op")
    assert reg.authorize("dev", "subscribe", "a/b")
    reg.permit("dev", "a/#", "write", actor="op")
    assert not reg.authorize("dev", "subscribe", "a/b")
    assert reg.events()[-1].kind == "permission.removed"  # a shrink: the relay kicks live sessions
    reg.forbid("dev", "a/#", actor="op")
    assert not reg.authorize("dev", "publish", "a/b")


def test_disabled_users_are_denied_everything(reg):
    reg.add_user("root", "root-pw", admin=True, actor="op")
    reg.disable_user("root", actor="op")
    assert not reg.authorize("root", "publish", "a") and not reg.is_admin("root")


def test_user_mutations_append_events_without_secrets(reg):
    reg.add_user("alice", "alice-pw-secret", actor="op")
    reg.set_password("alice", "alice-pw-secret2", actor="op")
    reg.permit("alice", "a/#", "read", actor="op")
    reg.forbid("alice", "a/#", actor="op")
    reg.disable_user("alice", actor="op")
    reg.enable_user("alice", actor="op")
    reg.remove_user("alice", actor="op")
    events = reg.events()
    assert [e.kind for e in events] == [
        "user.added", "user.password_changed", "permission.added", "permission.removed",
        "user.disabled", "user.enabled", "user.removed"]
    assert all(e.subject == "alice" and e.actor == "op" for e in events)
    assert "alice-pw-secret" not in repr(events) and "argon2" not in repr(events)


def test_user_mutation_refusals(reg):
    reg.add_user("alice", "alice-pw", actor="op")
    for call, message in (
        (lambda: reg.add_user("alice", "alice-pw", actor="op"), "already exists"),
        (lambda: reg.add_user("al", "alice-pw", actor="op"), "at least 3"),
        (lambda: reg.remove_user("bob", actor="op"), "no user named"),
        (lambda: reg.enable_user("alice", actor="op"), "already enabled"),
        (lambda: reg.permit("alice", "a/#/b", "read", actor="op"), "'#'"),
        (lambda: reg.forbid("alice", "nope", actor="op"), "no permission"),
        (lambda: reg.set_password("alice", "1234", actor="op"), "at least 5"),
    ):
        with pytest.raises(RefusedError, match=message):
            call()
