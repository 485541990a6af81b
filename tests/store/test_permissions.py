"""Registry.set_permissions (one transaction, only a real narrowing is a removal), grant with the requested
permissions and/or a template, the one permission parser and the one definition of request labels."""

from __future__ import annotations

import pytest

from store import RefusedError
from store.permissions import covers
from store.validation import parse_permissions
from store.views import CONFLICT, REQUEST_LABELS, request_label


def kinds(reg, name, since):
    return [(e.kind, e.detail.get("pattern"), e.detail.get("access")) for e in reg.events(since=since, subject=name)]


def test_set_permissions_widening_is_added_narrowing_is_removed(reg):
    reg.add_user("dev", "password-1", actor="t")
    reg.set_permissions("dev", [("a/#", "read"), ("b/#", "readWrite"), ("c/#", "write")], actor="t")
    last = reg.last_event_id()
    changed = reg.set_permissions("dev", ["a/#=readWrite", "b/#=read", "d/+=write"], actor="op")
    assert changed == 4
    assert sorted(reg.user("dev").permissions) == [("a/#", "readWrite"), ("b/#", "read"), ("d/+", "write")]
    assert sorted(kinds(reg, "dev", last)) == sorted([
        ("permission.removed", "c/#", None),  # taken away
        ("permission.added", "a/#", "readWrite"),  # widened: not a removal
        ("permission.removed", "b/#", "read"),  # narrowed
        ("permission.added", "d/+", "write"),
    ])
    assert reg.authorize("dev", "publish", "a/x") and not reg.authorize("dev", "publish", "b/x")


def test_set_permissions_is_all_or_nothing(reg):
    reg.add_user("dev", "password-1", actor="t")
    reg.set_permissions("dev", ["a/#=read"], actor="t")
    last = reg.last_event_id()
    with pytest.raises(RefusedError, match="'#' must be a whole level"):
        reg.set_permissions("dev", ["a/#=readWrite", "bad#/x=read"], actor="t")
    assert reg.user("dev").permissions == [("a/#", "read")] and reg.last_event_id() == last
    assert reg.set_permissions("dev", [("a/#", "read")], actor="t") == 0  # no change, no event
    assert reg.last_event_id() == last
    with pytest.raises(RefusedError, match="no user"):
        reg.set_permissions("nobody", [], actor="t")


def test_permit_widening_is_not_a_removal(reg):
    reg.add_user("dev", "password-1", actor="t")
    reg.permit("dev", "a/#", "read", actor="t")
    last = reg.last_event_id()
    reg.permit("dev", "a/#", "readWrite", actor="t")
    reg.permit("dev", "a/#", "write", actor="t")
    assert kinds(reg, "dev", last) == [("permission.added", "a/#", "readWrite"), ("permission.removed", "a/#", "write")]


def test_covers():
    assert covers("readWrite", "read") and covers("read", "read")
    assert not covers("read", "readWrite") and not covers("write", "read")


def test_grant_with_requested_and_template(reg):
    reg.unlock(300, actor="t")
    res = reg.record_attempt("http-dev", "secret-1", "cid", "10.0.0.1:1", "http",
                             requested_permissions=[{"resource": "asked/#", "operation": "read"},
                                                    {"resource": "both/#", "operation": "read"}])
    assert res.accepted
    [item] = reg.grant(["http-dev"], ["devices/{username}/#=readWrite", "both/#=readWrite"], actor="t",
                       requested=True)
    assert item.ok and f"#{res.request.id}" in item.message
    assert sorted(reg.user("http-dev").permissions) == [
        ("asked/#", "read"), ("both/#", "readWrite"), ("devices/{username}/#", "readWrite")]


def test_grant_template_only_and_requested_only(reg):
    reg.unlock(300, actor="t")
    asked = [{"resource": "asked/#", "operation": "read"}]
    reg.record_attempt("one", "secret-1", "c1", "p", "http", requested_permissions=asked)
    reg.record_attempt("two", "secret-1", "c2", "p", "http", requested_permissions=asked)
    reg.grant(["one"], ["t/#=write"], actor="t")
    reg.grant(["two"], None, actor="t")  # None: what the device asked for
    assert reg.user("one").permissions == [("t/#", "write")]
    assert reg.user("two").permissions == [("asked/#", "read")]
    with pytest.raises(RefusedError):
        reg.grant(["x"], ["no-access"], actor="t")


def test_parse_permissions():
    assert parse_permissions(" a/#=read, b/+=readWrite  c=write ") == [
        ("a/#", "read"), ("b/+", "readWrite"), ("c", "write")]
    assert parse_permissions("") == []
    with pytest.raises(ValueError, match="PATTERN=ACCESS"):
        parse_permissions("a/#")
    with pytest.raises(ValueError, match="access must be one of read, write, readWrite"):
        parse_permissions("a/#=all")


def test_request_labels():
    assert request_label("pending", True) == CONFLICT == "conflict"
    assert request_label("granted", True) == "granted" and request_label("pending", False) == "pending"
    assert request_label("pending", True, rekey=True) == "re-key" and request_label("granted", False, True) == "granted"
    assert request_label("pending", True, rotation=True) == "rotation"
    assert set(REQUEST_LABELS) == {"pending", "conflict", "re-key", "rotation", "granted", "denied", "expired"}


def test_last_template_per_operator(reg):
    assert reg.last_template("alice") == ""
    reg.remember_template("alice", "devices/{username}/#=readWrite,  t/+=read")
    reg.remember_template("b" * 200, "x/#=write")  # a long operator name still fits the key
    assert reg.last_template("alice") == "devices/{username}/#=readWrite t/+=read"
    assert reg.last_template("b" * 200) == "x/#=write" and reg.last_template("bob") == ""
    with pytest.raises(ValueError):
        reg.remember_template("alice", "no-access")
