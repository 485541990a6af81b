"""Roles in the store: CRUD with events, order, templates filled per member, removal refused while it has
members, grant with roles (the operator's and the requested ones), cache invalidation, the schema upgrade."""

from __future__ import annotations

import json
import sqlite3

import pytest

from store import RefusedError, open_registry
from store.validation import role_name_problem


def events(reg, since):
    return [(e.kind, e.subject, e.detail) for e in reg.events(since=since)]


def member(reg, name, client_id=None, roles=()):
    reg.unlock(60, actor="t")
    reg.record_attempt(name, "password-1", client_id=client_id)
    [result] = reg.grant([name], roles=roles, actor="t")
    assert result.ok, result.message
    return name


def test_role_crud_and_events(reg):
    last = reg.last_event_id()
    view = reg.add_role("sensors", actor="op")
    assert (view.name, view.permissions, view.members) == ("sensors", [], 0)
    assert reg.role_permit("sensors", "telemetry/{username}/#", "write", actor="op") == 0
    reg.role_permit("sensors", "config/#", "readWrite", actor="op")
    reg.role_permit("sensors", "config/#", "read", actor="op")  # narrowed
    reg.role_permit("sensors", "config/#", "readWrite", actor="op")  # widened
    reg.role_forbid("sensors", "config/#", actor="op")
    assert reg.role("sensors").permissions == [("telemetry/{username}/#", "write")]
    assert [(r.name, r.members) for r in reg.roles()] == [("sensors", 0)]
    assert [(k, s, d.get("pattern"), d.get("access")) for k, s, d in events(reg, last)] == [
        ("role.added", "sensors", None, None),
        ("role.permission_added", "sensors", "telemetry/{username}/#", "write"),
        ("role.permission_added", "sensors", "config/#", "readWrite"),
        ("role.permission_removed", "sensors", "config/#", "read"),
        ("role.permission_added", "sensors", "config/#", "readWrite"),
        ("role.permission_removed", "sensors", "config/#", None),
    ]
    assert reg.role("nope") is None and reg.role("bad/name") is None
    with pytest.raises(RefusedError, match="already exists"):
        reg.add_role("sensors")
    with pytest.raises(RefusedError, match="no role named 'nope'"):
        reg.role_permit("nope", "a", "read")
    with pytest.raises(RefusedError, match="whole level"):
        reg.role_permit("sensors", "a#", "read")
    with pytest.raises(RefusedError, match="has no permission"):
        reg.role_forbid("sensors", "zzz")
    with pytest.raises(RefusedError, match="already has write"):
        reg.role_permit("sensors", "telemetry/{username}/#", "write")
    reg.remove_role("sensors", actor="op")
    assert reg.roles() == [] and reg.events()[-1].kind == "role.removed"


@pytest.mark.parametrize("name, ok", [
    ("sensors", True), ("s", True), ("Sensor.v2_a-b", True), ("x" * 64, True), ("x" * 65, False), ("", False),
    ("a/b", False), ("a b", False), ("a+b", False), ("a#", False), ("-lead", False), ("caf\u00e9", False),
    ("a\x00b", False), ("a\u200bb", False), (b"bytes", False), (None, False),
])
def test_role_names(reg, name, ok):
    assert (role_name_problem(name) is None) is ok
    if not ok:
        with pytest.raises(RefusedError):
            reg.add_role(name)


def test_user_roles_in_order_templates_per_member(reg):
    for name in ("sensors", "fw", "empty"):
        reg.add_role(name, actor="t")
    reg.role_permit("sensors", "telemetry/{username}/#", "write")
    reg.role_permit("sensors", "cmd/{client_id}", "read")
    reg.role_permit("sensors", "broadcast/#", "read")
    reg.role_permit("fw", "broadcast/#", "write")
    reg.role_permit("fw", "$SYS/#", "read")
    member(reg, "dev-1", client_id="c1", roles=["sensors"])
    member(reg, "dev-2", client_id="c2")
    reg.permit("dev-2", "own/#", "read")
    last = reg.last_event_id()
    reg.add_user_role("dev-2", "fw", actor="op")
    reg.add_user_role("dev-2", "sensors", actor="op")
    reg.add_user_role("dev-2", "empty", actor="op")
    assert reg.user("dev-2").roles == ["fw", "sensors", "empty"]
    assert [(k, s, d["role"], d["position"]) for k, s, d in events(reg, last)] == [
        ("user.role_added", "dev-2", "fw", 0), ("user.role_added", "dev-2", "sensors", 1),
        ("user.role_added", "dev-2", "empty", 2)]
    g1, g2 = reg.grants("dev-1"), reg.grants("dev-2")
    assert g1.roles == ("sensors",) and g2.roles == ("fw", "sensors", "empty")
    assert set(g1.topics) == {("telemetry/dev-1/#", "write"), ("cmd/c1", "read"), ("broadcast/#", "read")}
    assert set(g1.personal) == {("telemetry/dev-1/#", "write"), ("cmd/c1", "read")}  # not the shared part
    assert g1.client_id == "c1"  # a role's {client_id} binds the account too
    # Own first, then roles in order (each by pattern); read + write of one pattern add up; `$` for admins only.
    assert g2.topics == (("own/#", "read"), ("broadcast/#", "readWrite"), ("cmd/c2", "read"),
                         ("telemetry/dev-2/#", "write"))
    assert reg.authorize("dev-2", "publish", "broadcast/x") and reg.authorize("dev-1", "subscribe", "cmd/c1")
    assert not reg.authorize("dev-1", "subscribe", "cmd/c2") and not reg.authorize("dev-1", "publish", "broadcast/x")
    assert reg.shared_grants() == {"empty": (), "fw": (("broadcast/#", "write"),),
                                   "sensors": (("broadcast/#", "read"),)}
    assert reg.all_grants()["dev-2"] == g2 and reg.all_grants()["dev-1"] == g1
    assert [(r.name, r.members) for r in reg.roles()] == [("empty", 1), ("fw", 1), ("sensors", 2)]
    assert reg.role_members("sensors") == ["dev-1", "dev-2"]
    reg.add_user("root", "password-1", admin=True)
    reg.add_user_role("root", "fw")
    assert ("$SYS/#", "read") in reg.grants("root").personal

    with pytest.raises(RefusedError, match="already has role"):
        reg.add_user_role("dev-2", "fw")
    with pytest.raises(RefusedError, match="no role named"):
        reg.add_user_role("dev-2", "nope")
    with pytest.raises(RefusedError, match="no user named"):
        reg.add_user_role("nobody", "fw")
    reg.remove_user_role("dev-2", "fw", actor="op")
    assert reg.user("dev-2").roles == ["sensors", "empty"]
    assert reg.events()[-1].kind == "user.role_removed" and reg.events()[-1].detail == {"role": "fw"}
    with pytest.raises(RefusedError, match="does not have role"):
        reg.remove_user_role("dev-2", "fw")
    reg.add_user_role("dev-2", "fw")
    assert reg.user("dev-2").roles == ["sensors", "empty", "fw"]  # a new role goes last


def test_set_user_roles(reg):
    for name in ("a", "b", "c"):
        reg.add_role(name)
    reg.add_user("dev", "password-1")
    assert reg.set_user_roles("dev", ["b", "a"]) == 2
    last = reg.last_event_id()
    assert reg.set_user_roles("dev", ["b", "a"]) == 0 and reg.last_event_id() == last
    with pytest.raises(RefusedError, match="no role named 'zz'"):
        reg.set_user_roles("dev", ["c", "zz"])
    assert reg.user("dev").roles == ["b", "a"] and reg.last_event_id() == last
    assert reg.set_user_roles("dev", ["c", "b"]) == 2
    assert reg.user("dev").roles == ["b", "c"]  # kept ones keep their place, new ones follow
    assert sorted((e.kind, e.detail["role"]) for e in reg.events(since=last)) == [
        ("user.role_added", "c"), ("user.role_removed", "a")]


def test_remove_role_with_members_needs_force(reg):
    reg.add_role("sensors")
    reg.role_permit("sensors", "t/#", "read")
    reg.add_user("dev-1", "password-1")
    reg.add_user("dev-2", "password-1")
    reg.add_user_role("dev-1", "sensors")
    reg.add_user_role("dev-2", "sensors")
    assert reg.authorize("dev-1", "subscribe", "t/x")
    last = reg.last_event_id()
    with pytest.raises(RefusedError, match="role 'sensors' has 2 members"):
        reg.remove_role("sensors")
    assert reg.last_event_id() == last and reg.role("sensors").members == 2
    assert reg.remove_role("sensors", actor="op", force=True) == 2
    assert [(k, s, d) for k, s, d in events(reg, last)] == [
        ("user.role_removed", "dev-1", {"role": "sensors", "reason": "role removed"}),
        ("user.role_removed", "dev-2", {"role": "sensors", "reason": "role removed"}),
        ("role.removed", "sensors", {"members": 2})]
    assert reg.user("dev-1").roles == [] and not reg.authorize("dev-1", "subscribe", "t/x")
    reg.add_role("sensors")  # the name is free again, with no members
    assert reg.role("sensors").members == 0


def test_role_change_reaches_cached_members(reg, make_reg):
    """This process drops its members' cached answers; another process learns from the event
    (invalidate_for, what the relay calls)."""
    reg.add_role("sensors")
    reg.add_user("dev", "password-1")
    reg.add_user_role("dev", "sensors")
    other = make_reg()
    assert not reg.authorize("dev", "subscribe", "t/x") and not other.authorize("dev", "subscribe", "t/x")
    reg.role_permit("sensors", "t/#", "read")
    assert reg.authorize("dev", "subscribe", "t/x")  # no stale cache here
    assert not other.authorize("dev", "subscribe", "t/x")  # cached there until the event is seen
    for event in other.events(since=0):
        other.invalidate_for(event.kind, event.subject)
    assert other.authorize("dev", "subscribe", "t/x")
    reg.role_forbid("sensors", "t/#")
    assert not reg.authorize("dev", "subscribe", "t/x")
    reg.role_permit("sensors", "t/#", "read")
    reg.remove_role("sensors", force=True)
    assert not reg.authorize("dev", "subscribe", "t/x")
    reg.add_role("x")
    reg.add_user_role("dev", "x")
    reg.role_permit("x", "x/#", "read")
    reg.remove_user("dev")
    assert reg.role("x").members == 0 and reg.grants("dev") is None


def test_grant_with_roles(reg):
    reg.add_role("sensors")
    reg.role_permit("sensors", "telemetry/{username}/#", "write")
    reg.unlock(60)
    reg.record_attempt("dev-1", "password-1")
    reg.record_attempt("dev-2", "password-1")
    last = reg.last_event_id()
    with pytest.raises(RefusedError, match="no role named 'nope'"):
        reg.grant(["dev-1"], roles=["sensors", "nope"])
    with pytest.raises(RefusedError, match="role name"):
        reg.grant(["dev-1"], roles=["bad/role"])
    assert reg.last_event_id() == last and len(reg.requests()) == 2
    results = reg.grant(["dev-1", "dev-2"], ["extra/#=read"], roles=["sensors", "sensors"], actor="op")
    assert all(r.ok for r in results)
    assert reg.user("dev-1").roles == ["sensors"] and reg.user("dev-1").permissions == [("extra/#", "read")]
    granted = [e for e in reg.events(since=last) if e.kind == "request.granted"]
    assert [e.detail["roles"] for e in granted] == [["sensors"], ["sensors"]]
    assert reg.authorize("dev-2", "publish", "telemetry/dev-2/x")
    assert not reg.authorize("dev-2", "publish", "telemetry/dev-1/x")
    assert reg.role("sensors").members == 2


def test_requested_roles(reg):
    reg.add_role("sensors")
    reg.add_role("cameras")
    reg.unlock(60)
    result = reg.record_attempt("dev-1", "password-1", source="http", requested_roles=["sensors", "sensors"])
    assert result.outcome == "pending" and result.request.requested_roles == ["sensors"]
    bad = reg.record_attempt("dev-9", "password-1", source="http", requested_roles=["a/b"])
    assert (bad.outcome, bad.field) == ("invalid", "roles")
    assert reg.record_attempt("dev-9", "password-1", requested_roles="sensors").field == "roles"
    assert reg.record_attempt("dev-9", "password-1", requested_roles=["r"] * 21).field == "roles"
    reg.record_attempt("dev-2", "password-1", source="http", requested_roles=["gone"])
    assert reg.requests()[0].as_dict()["requested_roles"] == ["gone"]

    [plain] = reg.grant(["dev-1"], roles=["cameras"])  # without `requested`: the operator's roles only
    assert plain.ok and reg.user("dev-1").roles == ["cameras"]
    [refused] = reg.grant(["dev-2"], requested=True)
    assert not refused.ok and "no role named 'gone'" in refused.message and "#" in refused.message
    assert reg.user("dev-2") is None and reg.requests()[0].status == "pending"
    reg.add_role("gone")
    [ok] = reg.grant(["dev-2"], roles=["cameras", "gone"], requested=True)
    assert ok.ok and reg.user("dev-2").roles == ["cameras", "gone"]


def test_events_carry_no_secret(reg, db_path):
    reg.add_role("sensors")
    reg.role_permit("sensors", "a/#", "read")
    member(reg, "dev-1", roles=["sensors"])
    reg.add_user("dev-2", "secret-pass")
    reg.add_user_role("dev-2", "sensors")
    reg.remove_role("sensors", force=True)
    text = json.dumps([e.as_dict() for e in reg.events()])
    assert "password-1" not in text and "secret-pass" not in text and "verifier" not in text


def test_schema_2_database_is_upgraded(db_path):
    """A schema-2 file (no role tables, no requested_roles column) opens and is upgraded in place."""
    reg = open_registry(db_path)
    reg.unlock(60)
    reg.record_attempt("old-dev", "password-1", source="http")
    reg.close()
    con = sqlite3.connect(db_path)
    con.execute("DROP TABLE user_roles")
    con.execute("DROP TABLE role_permissions")
    con.execute("DROP TABLE roles")
    con.execute("ALTER TABLE requests DROP COLUMN requested_roles")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    reg = open_registry(db_path, create=False)
    try:
        assert reg.requests()[0].requested_roles is None
        reg.add_role("sensors")
        [ok] = reg.grant(["old-dev"], roles=["sensors"])
        assert ok.ok and reg.user("old-dev").roles == ["sensors"]
    finally:
        reg.close()
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    con.close()


def test_set_role_permissions_is_one_change_and_only_a_narrowing_is_a_removal(reg):
    reg.add_role("sensors")
    member(reg, "sensor-1", roles=["sensors"])
    reg.role_permit("sensors", "plant/#", "read")
    last = reg.last_event_id()
    assert reg.set_role_permissions("sensors", ["plant/#=readWrite", "devices/{username}/#=write"]) == (2, 1)
    assert sorted((e.kind, e.detail["pattern"]) for e in reg.events(since=last)) == [
        ("role.permission_added", "devices/{username}/#"), ("role.permission_added", "plant/#")]  # widening
    assert reg.authorize("sensor-1", "publish", "plant/x")
    assert reg.authorize("sensor-1", "publish", "devices/sensor-1/t")
    last = reg.last_event_id()
    with pytest.raises(RefusedError, match="access must be one of"):
        reg.set_role_permissions("sensors", ["plant/#=read", "x/#=everything"])
    assert reg.last_event_id() == last and reg.role("sensors").permissions == [
        ("devices/{username}/#", "write"), ("plant/#", "readWrite")]  # a bad pair changed nothing
    assert reg.set_role_permissions("sensors", ["plant/#=read"]) == (2, 1)
    assert sorted(e.kind for e in reg.events(since=last)) == ["role.permission_removed"] * 2
    assert not reg.authorize("sensor-1", "publish", "plant/x") and reg.authorize("sensor-1", "subscribe", "plant/x")
    assert reg.set_role_permissions("sensors", ["plant/#=read"]) == (0, 1)


def test_set_user_access_is_one_transaction(reg):
    reg.add_role("sensors")
    reg.add_user("dev", "password-1")
    last = reg.last_event_id()
    with pytest.raises(RefusedError, match="access must be one of"):
        reg.set_user_access("dev", ["x/#=everything"], ["sensors"])
    assert reg.user("dev").roles == [] and reg.last_event_id() == last  # the role was not given either
    assert reg.set_user_access("dev", ["x/#=read"], ["sensors"]) == 2
    assert reg.user("dev").roles == ["sensors"] and reg.user("dev").permissions == [("x/#", "read")]


def test_grants_of_several_users_read_in_bulk_are_each_users_grants(reg):
    """The broker's batched changes read many users at once: the same answer as ``grants`` for each."""
    reg.add_role("sensors", actor="t")
    reg.role_permit("sensors", "t/{username}/#", "write", actor="t")
    reg.add_role("readers", actor="t")
    reg.role_permit("readers", "broadcast/#", "read", actor="t")
    for name in ("a-1", "b-2", "c-3"):
        reg.add_user(name, "password-1", actor="t")
    reg.permit("a-1", "x/#", "read", actor="t")
    reg.add_user_role("b-2", "sensors", actor="t")
    reg.add_user_role("b-2", "readers", actor="t")
    some = reg.grants_of_users(["b-2", "a-1", "nobody", "a-1"])
    assert set(some) == {"a-1", "b-2"}
    assert all(some[name] == reg.grants(name) for name in some)
    assert some["b-2"].roles == ("sensors", "readers")
    every = reg.all_grants()
    assert set(every) == {"a-1", "b-2", "c-3"} and all(every[n] == reg.grants(n) for n in every)
