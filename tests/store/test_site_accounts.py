"""Attach mode: the accounts the site's own broker has (read by the server from the site's files) are never a
device's: refused when asked for, refused again at grant time (also by a glob or an approval rule) and never
added by an operator. The registry never modifies or shadows an account it did not create."""

from __future__ import annotations

import pytest

from store import RefusedError

SITE_RULE = "this username is an account of the site's own broker, which the registry does not manage"


def test_a_site_account_is_never_requested_granted_or_added(reg):
    assert reg.set_site_accounts(["site-admin", "plant-op"], "dynamic-security.json") is True
    assert reg.set_site_accounts(["plant-op", "site-admin"], "dynamic-security.json") is False  # unchanged
    reg.add_rule("site-*", permissions=["site/#=readWrite"], actor="op")
    reg.unlock(300, actor="op")
    for source in ("http", "mqtt"):
        result = reg.record_attempt("site-admin", "device-pw-1", "c1", "10.0.0.5", source)
        assert (result.outcome, result.field, result.reason, result.accepted) == (
            "reserved", "username", SITE_RULE, False)
    assert reg.login("site-admin", "device-pw-1", "c1", "10.0.0.5", "mqtt").outcome == "reserved"
    assert reg.requests(include_all=True) == [] and reg.users() == []
    with pytest.raises(RefusedError, match="account of the site's own broker"):
        reg.add_user("site-admin", "operator-pw", actor="op")
    assert reg.site_accounts() == ["plant-op", "site-admin"]
    kinds = [e.kind for e in reg.events()]
    assert kinds.count("site_accounts.changed") == 1 and "site-admin" not in str([e.detail for e in reg.events()])


def test_a_name_the_site_creates_after_the_request_is_refused_at_grant_time(reg):
    reg.unlock(300, actor="op")
    for name in ("site-new", "site-other", "dev-1"):
        assert reg.record_attempt(name, "device-pw-1", None, "10.0.0.5", "http").outcome == "pending"
    reg.set_site_accounts(["site-admin", "site-new", "site-other"], "passwd")  # the site added two since
    [one] = reg.grant(["site-new"], ["site/#=readWrite"], actor="op", force=True)
    assert not one.ok and one.message == f"request #1 (site-new): {SITE_RULE}"
    by_glob = {r.item: r for r in reg.grant(["site-other", "dev-1"], actor="op")}  # what a glob grant expands to
    assert not by_glob["site-other"].ok and SITE_RULE in by_glob["site-other"].message
    assert by_glob["dev-1"].ok
    assert [u.name for u in reg.users()] == ["dev-1"]
    assert {r.username: r.status for r in reg.requests(include_all=True)} == {
        "site-new": "pending", "site-other": "pending", "dev-1": "granted"}
    reg.set_site_accounts([], "passwd")  # the site removed them: a person may grant them now
    assert reg.grant(["site-new"], actor="op")[0].ok
    assert reg.site_clashes() == []
    reg.set_site_accounts(["site-new"], "passwd")  # and created it again: a clash the operator is told of
    assert reg.site_clashes() == ["site-new"] and reg.user("site-new") is not None  # nothing changed by itself
