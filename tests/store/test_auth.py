"""authenticate, login and authorize: what the broker is told about a user."""

import pytest

from store import RefusedError


def test_authenticate_checks_the_verifier(reg):
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.authenticate("alice", "alice-pw")
    assert not reg.authenticate("alice", "wrong-pw") and not reg.authenticate("nobody", "alice-pw")
    row = reg.m.User.get(reg.m.User.name == "alice")
    assert len(row.verifier) == 64 and "alice-pw" not in row.verifier  # an HMAC, never the password


def test_verifiers_follow_the_user(reg):
    reg.add_user("alice", "alice-pw", actor="op")
    reg.set_password("alice", "new-alice-pw", actor="op")
    assert not reg.authenticate("alice", "alice-pw") and reg.authenticate("alice", "new-alice-pw")
    reg.disable_user("alice", actor="op")
    assert not reg.authenticate("alice", "new-alice-pw")
    reg.enable_user("alice", actor="op")
    assert reg.authenticate("alice", "new-alice-pw")
    reg.remove_user("alice", actor="op")
    assert not reg.authenticate("alice", "new-alice-pw")


def test_a_verifier_is_bound_to_its_database_secret(reg, make_reg, tmp_path):
    """Two databases never share a verifier: each has its own server secret."""
    reg.add_user("alice", "alice-pw", actor="op")
    other = make_reg(path=str(tmp_path / "other" / "registry.db"))
    other.add_user("alice", "alice-pw", actor="op")
    a = reg.m.User.get(reg.m.User.name == "alice").verifier
    b = other.m.User.get(other.m.User.name == "alice").verifier
    assert a != b


def test_login_of_a_user_the_broker_does_not_know(reg):
    """Mosquitto forwards only names it has no account for: a user's right password may be provisioned."""
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.login("alice", "alice-pw").outcome == "accepted"
    assert reg.login("alice", "wrong-pw").outcome == "refused"
    reg.disable_user("alice", actor="op")
    assert reg.login("alice", "alice-pw").outcome == "disabled"
    assert reg.login("alice", "wrong-pw").outcome == "refused"  # "disabled" only for the right password
    assert reg.login("nobody", "whatever").outcome == "locked"  # not a user: a registration attempt
    assert reg.login(b"bytes", "x").outcome == "not_credentials"


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
    assert not reg.authorize("dev", "publish", "own/cid-7/a")  # added by hand: bound to no client id
    assert not reg.authorize("dev", "subscribe", "$SYS/#") and not reg.authorize("dev", "receive", "$registry/x")
    assert not reg.authorize("ghost", "receive", "sensors/a")


def _granted(reg, name, client_id, pattern):
    reg.unlock(actor="op")
    reg.record_attempt(name, f"{name}-pw", client_id, "10.0.0.1")
    assert reg.grant([name], [(pattern, "readWrite")], actor="op")[0].ok


def test_client_id_patterns_bind_to_the_registered_client_id(reg):
    _granted(reg, "dev", "cid-7", "own/{client_id}/#")
    grants = reg.grants("dev")
    assert grants.client_id == "cid-7" and grants.topics == (("own/cid-7/#", "readWrite"),)
    assert reg.authorize("dev", "publish", "own/cid-7/a") and not reg.authorize("dev", "publish", "own/cid-8/a")


def test_client_id_with_wildcards_cannot_widen_a_pattern(reg):
    for n, client_id in enumerate(("#", "+", "a/b")):
        _granted(reg, f"dev{n}", client_id, "own/{client_id}/#")
        assert reg.grants(f"dev{n}").topics == ()  # the pattern matches nothing
        assert not reg.authorize(f"dev{n}", "subscribe", "own/#")


def test_grants_fill_usernames_and_keep_dollar_topics_for_admins(reg):
    reg.add_user("dev", "dev-pw", actor="op")
    reg.add_user("root", "root-pw", admin=True, actor="op")
    for name in ("dev", "root"):
        reg.permit(name, "devices/{username}/#", "read", actor="op")
        reg.permit(name, "$SYS/#", "read", actor="op")
    assert reg.grants("dev").topics == (("devices/dev/#", "read"),) and reg.grants("dev").client_id is None
    assert set(reg.grants("root").topics) == {("devices/root/#", "read"), ("$SYS/#", "read")}
    assert reg.grants("ghost") is None


def test_permissions_change_is_seen_at_once(reg):
    reg.add_user("dev", "dev-pw", actor="op")
    assert not reg.authorize("dev", "subscribe", "a/b")
    reg.permit("dev", "a/#", "readWrite", actor="op")
    assert reg.authorize("dev", "subscribe", "a/b")
    reg.permit("dev", "a/#", "write", actor="op")
    assert not reg.authorize("dev", "subscribe", "a/b")
    assert reg.events()[-1].kind == "permission.removed"  # a narrowing
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


def test_all_grants_is_grants_of_every_user(reg):
    """Reconcile reads every user's grants at once: the same answers as one by one."""
    reg.add_user("root", "root-pw-1", admin=True, actor="op")
    reg.add_user("dev", "dev-pw-1", actor="op")
    reg.permit("dev", "devices/{username}/#", "readWrite", actor="op")
    reg.permit("dev", "$SYS/#", "read", actor="op")
    reg.permit("root", "$SYS/#", "read", actor="op")
    _granted(reg, "bound", "cid-9", "own/{client_id}/#")
    reg.disable_user("bound", actor="op")
    every = reg.all_grants()
    assert set(every) == {"root", "dev", "bound"}
    assert all(every[name] == reg.grants(name) for name in every)
