"""Approval rules: new requests granted by rule while unlocked, within a limit per window."""

import threading
import unicodedata

import pytest

from store import RefusedError

PW = "secret-pw"


def attempt(reg, name, *, client_id="c", peer="10.1.2.3", source="mqtt", password=PW):
    return reg.record_attempt(name, password, client_id, peer, source)


def granted_by(reg, rule):
    return sorted(e.subject for e in reg.events() if e.kind == "request.granted" and e.actor == f"rule:{rule}")


def test_no_rules_nothing_automatic(reg):
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1").outcome == "pending"
    assert reg.users() == [] and reg.rules() == []


def test_a_matching_request_is_granted_with_the_template_and_an_event_naming_the_rule(reg):
    rule = reg.add_rule("sensor-*", permissions=["devices/{username}/#=readWrite"], actor="op")
    reg.unlock(300, actor="op")
    result = attempt(reg, "sensor-1", client_id="c-1")
    assert result.outcome == "granted" and not result.accepted
    assert result.request.status == "granted" and result.request.decided_by == "rule:sensor-*"
    user = reg.user("sensor-1")
    assert user.permissions == [("devices/{username}/#", "readWrite")]
    assert (user.created_by, user.created_how, user.client_id) == ("rule:sensor-*", "registration-mqtt", "c-1")
    assert reg.authorize("sensor-1", "publish", "devices/sensor-1/temp")
    assert not reg.authorize("sensor-1", "publish", "devices/sensor-2/temp")
    created, granted = [e for e in reg.events() if e.subject == "sensor-1"]
    assert created.kind == "request.created"
    assert (granted.kind, granted.actor) == ("request.granted", "rule:sensor-*")
    assert granted.detail == {"request_id": result.request.id, "rule": "sensor-*", "rule_id": rule.id, "roles": [],
                              "permissions": [{"pattern": "devices/{username}/#", "access": "readWrite"}]}
    [view] = reg.rules()
    assert (view.admitted, view.limit, view.expired, view.actor) == (1, 100, False, "rule:sensor-*")


def test_the_glob_is_case_sensitive_and_whole_name(reg):
    reg.add_rule("sensor-*", actor="op")
    reg.unlock(300, actor="op")
    assert attempt(reg, "Sensor-1").outcome == "pending"
    assert attempt(reg, "my-sensor-1").outcome == "pending"
    assert attempt(reg, "sensor-x").outcome == "granted"
    reg.add_rule("meter-[0-9]?", actor="op")
    assert attempt(reg, "meter-1a").outcome == "granted"
    assert attempt(reg, "meter-a1").outcome == "pending"
    assert attempt(reg, "meter-1ab").outcome == "pending"


@pytest.mark.parametrize("network, peer, admitted", [
    ("10.0.0.0/8", "10.200.0.7", True),
    ("10.0.0.0/8", "192.168.1.7", False),
    ("10.0.0.0/8", "::ffff:10.1.1.1", True),  # an IPv4 client on a dual-stack socket
    ("10.0.0.0/8", "fd00::1", False),
    ("fd00::/8", "fd00::1", True),
    ("fd00::/8", "10.1.1.1", False),
    ("10.0.0.0/8", None, False),
    ("10.0.0.0/8", "not-an-address", False),
    ("10.0.0.0/8", "10.0.0.52:40200", True),  # with the port, as some peers are written
    ("10.0.0.0/8", "192.168.1.7:40200", False),
    ("fd00::/8", "[fd00::1]:40200", True),
])
def test_peer_network(reg, network, peer, admitted):
    reg.add_rule("sensor-*", peer_network=network, actor="op")
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1", peer=peer).outcome == ("granted" if admitted else "pending")


def test_protocol_and_client_id(reg):
    reg.add_rule("sensor-*", protocol="http", actor="op")
    reg.add_rule("meter-*", client_id_pattern="meter-fw2-*", actor="op")
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1", source="mqtt").outcome == "pending"
    assert attempt(reg, "sensor-2", source="http", client_id=None).outcome == "granted"
    assert reg.user("sensor-2").created_how == "registration-http"
    assert attempt(reg, "meter-1", client_id="meter-fw1-9").outcome == "pending"
    assert attempt(reg, "meter-2", client_id=None).outcome == "pending"  # no client id: no match
    assert attempt(reg, "meter-3", client_id="meter-fw2-9").outcome == "granted"


def test_the_limit_is_exact_and_counts_per_window(reg, clock):
    reg.add_rule("sensor-*", limit=3, actor="op")
    reg.unlock(300, actor="op")
    outcomes = [attempt(reg, f"sensor-{i}").outcome for i in range(5)]
    assert outcomes == ["granted"] * 3 + ["pending"] * 2
    assert reg.rules()[0].admitted == 3
    reg.unlock(600, actor="op")  # extending the open window is the same window
    assert attempt(reg, "sensor-5").outcome == "pending"
    reg.lock(actor="op")
    assert reg.rules()[0].admitted == 3  # while locked: the last window's count
    clock.advance(1)
    reg.unlock(300, actor="op")  # a new window: the rule may admit 3 more
    assert reg.rules()[0].admitted == 0
    assert [attempt(reg, f"sensor-{i}").outcome for i in range(10, 14)] == ["granted"] * 3 + ["pending"]
    assert len(granted_by(reg, "sensor-*")) == 6


def test_a_window_that_closed_by_itself_is_a_new_window_at_the_next_unlock(reg, clock):
    reg.add_rule("sensor-*", limit=1, actor="op")
    reg.unlock(60, actor="op")
    assert attempt(reg, "sensor-1").outcome == "granted"
    clock.advance(61)
    reg.unlock(60, actor="op")
    assert attempt(reg, "sensor-2").outcome == "granted"


def test_a_full_rule_lets_the_next_matching_rule_admit(reg):
    reg.add_rule("sensor-*", name="first", limit=1, permissions=["a/#=read"], actor="op")
    reg.add_rule("sensor-*", name="second", limit=1, permissions=["b/#=read"], actor="op")
    reg.unlock(300, actor="op")
    assert [attempt(reg, f"sensor-{i}").outcome for i in range(3)] == ["granted", "granted", "pending"]
    assert reg.user("sensor-0").permissions == [("a/#", "read")]
    assert reg.user("sensor-1").permissions == [("b/#", "read")]


def test_the_limit_holds_across_processes(make_reg):
    """Two registries on one file (two servers) racing for the last slots never admit more than the limit."""
    first, second = make_reg(), make_reg()
    first.add_rule("sensor-*", limit=10, actor="op")
    first.unlock(300, actor="op")
    outcomes = []

    def knock(reg, offset):
        for i in range(15):
            outcomes.append(attempt(reg, f"sensor-{offset + i}").outcome)

    threads = [threading.Thread(target=knock, args=(r, n)) for r, n in ((first, 0), (second, 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("granted") == 10 and outcomes.count("pending") == 20
    assert len(first.users()) == 10 and first.rules()[0].admitted == 10


def test_an_expired_rule_never_matches_and_is_listed_as_expired(reg, clock):
    reg.add_rule("sensor-*", expires_in=3600, actor="op")
    reg.unlock(7 * 24 * 3600, actor="op")
    assert attempt(reg, "sensor-1").outcome == "granted"
    clock.advance(3601)
    assert attempt(reg, "sensor-2").outcome == "pending"
    [view] = reg.rules()
    assert view.expired and view.expires_at == pytest.approx(clock.now - 1)


def test_locked_nothing_is_recorded_nothing_granted(reg):
    reg.add_rule("sensor-*", actor="op")
    assert attempt(reg, "sensor-1").outcome == "locked"
    assert reg.requests(include_all=True) == [] and reg.users() == []
    assert reg.rules()[0].admitted == 0


def test_a_conflicting_request_is_never_granted(reg):
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1", password="first-pw").outcome == "pending"
    reg.add_rule("sensor-*", actor="op")
    assert attempt(reg, "sensor-1", password="other-pw").outcome == "conflict"
    assert attempt(reg, "sensor-1", password="first-pw").outcome == "retry"  # pending before the rule: a person
    assert reg.users() == [] and reg.rules()[0].admitted == 0
    assert {r.label for r in reg.requests()} == {"conflict"}


def test_a_name_that_is_a_user_is_never_a_request(reg):
    reg.add_rule("sensor-*", actor="op")
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1").outcome == "granted"
    assert attempt(reg, "sensor-1", password="another-pw").outcome == "known_user"
    assert reg.login("sensor-1", "another-pw").outcome == "refused"
    assert [r.status for r in reg.requests(include_all=True)] == ["granted"]


@pytest.mark.parametrize("name, why", [
    ("sensor-\u200b1", "invisible zero width space"),
    ("sensor-\u0430bc", "Cyrillic a after the prefix: mixed scripts"),
    ("sensor-\u20111", "U+2011 looks like '-'"),
    ("sensor-\uff11", "fullwidth digit one"),
])
def test_a_look_alike_name_matching_the_glob_waits_for_a_person(reg, name, why):
    reg.add_rule("sensor-*", actor="op")
    reg.unlock(300, actor="op")
    result = attempt(reg, name)
    assert result.outcome == "pending", why
    assert result.request.marks
    assert reg.users() == []


def test_a_valid_non_ascii_name_is_admitted_only_if_sent_in_nfc(reg):
    reg.add_rule("capteur-*", actor="op")
    reg.unlock(300, actor="op")
    composed = "capteur-\u00e9t\u00e9"
    decomposed = unicodedata.normalize("NFD", composed)
    assert attempt(reg, decomposed).outcome == "invalid"  # its account would not match the bytes it sends
    assert reg.requests(include_all=True) == []
    assert attempt(reg, "capteur-\u00e9").outcome == "granted"
    assert reg.user("capteur-\u00e9") is not None


def test_add_rule_refuses_bad_input_in_one_line(reg):
    cases = [
        (dict(pattern=""), "must not be empty"),
        (dict(pattern="sensor-*", peer_network="10.0.0.0/33"), "not a network"),
        (dict(pattern="sensor-*", protocol="coap"), "protocol must be one of mqtt, http"),
        (dict(pattern="sensor-*", limit=0), "limit must be between 1"),
        (dict(pattern="sensor-*", expires_in=0), "expiry must be"),
        (dict(pattern="sensor-*", permissions=["a/#=everything"]), "access must be one of"),
        (dict(pattern="sensor-*", name="42"), "must not be a number"),
        (dict(pattern="x" * 70), "needs a shorter rule name"),
        (dict(pattern="x-*", name="n" * 65), "at most 64"),
        (dict(pattern="sensor-\n*"), "control characters"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RefusedError, match=message):
            reg.add_rule(**kwargs, actor="op")
    reg.add_rule("sensor-*", actor="op")
    with pytest.raises(RefusedError, match="a rule named 'sensor-\\*' exists"):
        reg.add_rule("sensor-*", actor="op")
    assert len(reg.rules()) == 1
    assert [e.kind for e in reg.events()] == ["rule.added"]


def test_a_network_is_stored_as_a_network(reg):
    rule = reg.add_rule("sensor-*", peer_network="10.1.2.3/8", actor="op")
    assert rule.peer_network == "10.0.0.0/8"


def test_remove_rule_by_name_or_id(reg):
    one = reg.add_rule("sensor-*", actor="op")
    reg.add_rule("meter-*", actor="op")
    reg.remove_rule(str(one.id), actor="op")
    reg.remove_rule("meter-*", actor="op")
    assert reg.rules() == []
    with pytest.raises(RefusedError, match="no rule named 'meter-\\*'"):
        reg.remove_rule("meter-*", actor="op")
    with pytest.raises(RefusedError, match="no rule #7"):
        reg.remove_rule(7, actor="op")
    assert [e.kind for e in reg.events()][-2:] == ["rule.removed", "rule.removed"]
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1").outcome == "pending"


def test_revoke_admitted_undoes_this_window_and_keeps_them_out(reg, clock):
    reg.add_rule("sensor-*", permissions=["devices/{username}/#=readWrite"], actor="op")
    reg.unlock(300, actor="op")
    attempt(reg, "sensor-old")
    reg.lock(actor="op")
    clock.advance(1)
    reg.unlock(300, actor="op")
    for i in range(3):
        attempt(reg, f"sensor-{i}")
    reg.grant([attempt(reg, "manual-1").request.id], actor="op")
    before = reg.last_event_id()
    assert reg.revoke_admitted("sensor-*", actor="op") == ["sensor-0", "sensor-1", "sensor-2"]
    assert sorted(u.name for u in reg.users()) == ["manual-1", "sensor-old"]
    kinds = [(e.kind, e.subject, e.detail.get("rule")) for e in reg.events(since=before)]
    assert kinds == [(k, f"sensor-{i}", "sensor-*") for i in range(3) for k in ("user.removed", "request.denied")]
    assert attempt(reg, "sensor-1").outcome == "denied"  # the same credentials stay out
    assert reg.rules()[0].admitted == 3  # undone admissions still count
    reg.remove_rule("sensor-*", actor="op")
    assert reg.revoke_admitted("sensor-*", actor="op") == []  # by name after removal: nothing left this window


def test_nothing_secret_in_rule_events(reg):
    reg.add_rule("sensor-*", actor="op")
    reg.unlock(300, actor="op")
    attempt(reg, "sensor-1", password="Marker-Password-77")
    assert "Marker-Password-77" not in repr([e.as_dict() for e in reg.events()])


def test_a_rule_grants_its_roles_in_order(reg):
    reg.add_role("sensors", actor="op")
    reg.role_permit("sensors", "telemetry/{username}/#", "write", actor="op")
    reg.add_role("firmware", actor="op")
    reg.role_permit("firmware", "fw/updates/#", "read", actor="op")
    rule = reg.add_rule("sensor-*", roles=["sensors", "firmware"], permissions=["own/{username}=read"], actor="op")
    assert rule.roles == ["sensors", "firmware"]
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1").outcome == "granted"
    granted = next(e for e in reg.events() if e.kind == "request.granted")
    assert granted.detail["roles"] == ["sensors", "firmware"] and granted.actor == "rule:sensor-*"
    assert reg.authorize("sensor-1", "publish", "telemetry/sensor-1/t")
    assert reg.authorize("sensor-1", "subscribe", "fw/updates/#")
    assert reg.authorize("sensor-1", "subscribe", "own/sensor-1")


def test_a_rule_refuses_unknown_roles_and_waits_for_a_person_when_one_is_gone(reg):
    with pytest.raises(RefusedError, match="no role named 'nope'"):
        reg.add_rule("sensor-*", roles=["nope"], actor="op")
    assert reg.rules() == []
    reg.add_role("sensors", actor="op")
    reg.add_rule("sensor-*", roles=["sensors"], actor="op")
    reg.remove_role("sensors", actor="op")
    reg.unlock(300, actor="op")
    assert attempt(reg, "sensor-1").outcome == "pending"
    assert reg.users() == [] and reg.rules()[0].admitted == 0  # the slot was not kept
