"""Names: one NFC form for every rule, text UTF-8 can carry, and look-alike names marked (never refused)."""

import json
import unicodedata

import pytest

from store import RefusedError
from store.names import name_marks, suspicious_characters
from store.validation import normalise_username, password_problem, registration_problem, username_problem

COMPOSED = "caf\u00e9-1"  # é as one code point
DECOMPOSED = "cafe\u0301-1"  # e + COMBINING ACUTE ACCENT: the same name to a reader
assert COMPOSED != DECOMPOSED and unicodedata.normalize("NFC", DECOMPOSED) == COMPOSED


# -- NFC -------------------------------------------------------------------------------------------------------
def test_a_name_not_sent_in_nfc_is_refused_and_never_recorded(reg):
    """Mosquitto and the plugin compare names byte for byte: a device sending the decomposed form could never
    log in as the (NFC) account it would be granted, so its attempt is refused with the rule, as over HTTP."""
    rule = "username must be sent in Unicode NFC form (the broker compares names byte for byte)"
    reg.add_rule("caf*", permissions=["devices/{username}/#=readWrite"], actor="op")  # would admit it
    reg.unlock(300, actor="op")
    refused = reg.record_attempt(DECOMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt")
    assert (refused.outcome, refused.field, refused.reason) == ("invalid", "username", rule)
    login = reg.login(DECOMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt")
    assert (login.accepted, login.outcome, login.reason) == (False, "invalid", rule)
    assert reg.login_many([(DECOMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt")])[0].outcome == "invalid"
    assert reg.record_rekey(DECOMPOSED, "secret-pw", "c1", "10.0.0.1").outcome == "invalid"
    assert reg.requests(include_all=True) == [] and reg.users() == []
    reg.lock(actor="op")
    assert reg.record_attempt(DECOMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt").outcome == "invalid"
    reg.record_knocks([(DECOMPOSED, 3)])  # what the plugin counted while locked: refused names are not knocks
    assert reg.status().knocking == 0  # not even counted
    reg.unlock(300, actor="op")
    assert reg.record_attempt(COMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt").outcome == "granted"


def test_a_different_password_is_a_conflict_whatever_form_the_operator_types(reg):
    reg.unlock(300, actor="op")
    a = reg.record_attempt(COMPOSED, "first-password", "c1", "10.0.0.1", "mqtt")
    b = reg.record_attempt(COMPOSED, "other-password", "c2", "10.0.0.2", "http")
    assert (a.outcome, b.outcome) == ("pending", "conflict")
    rows = reg.requests()
    assert [r.username for r in rows] == [COMPOSED, COMPOSED] and all(r.conflict for r in rows)
    # grant by either form of the name finds both requests, so it needs an id and force
    [refused] = reg.grant([DECOMPOSED], actor="op")
    assert not refused.ok and "2 conflicting requests" in refused.message
    [granted] = reg.grant([str(b.request.id)], actor="op", force=True)
    assert granted.ok
    assert reg.authenticate(COMPOSED, "other-password") and reg.authenticate(DECOMPOSED, "other-password")
    assert not reg.authenticate(DECOMPOSED, "first-password")
    assert reg.login(COMPOSED, "other-password").outcome == "accepted"
    assert reg.login(COMPOSED, "first-password").outcome == "refused"  # a user: never a new request
    assert reg.login(DECOMPOSED, "other-password").outcome == "invalid"  # the broker would not know that form
    assert {r.status for r in reg.requests(include_all=True)} == {"granted", "denied"}


def test_denied_stays_denied_when_denied_by_the_other_form(reg):
    reg.unlock(300, actor="op")
    reg.record_attempt(COMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt")
    assert reg.deny([DECOMPOSED], actor="op")[0].ok
    assert reg.record_attempt(COMPOSED, "secret-pw", "c1", "10.0.0.1", "mqtt").outcome == "denied"


def test_users_are_looked_up_by_their_nfc_name(reg):
    reg.add_user(DECOMPOSED, "secret-pw", actor="op")
    assert [u.name for u in reg.users()] == [COMPOSED]
    with pytest.raises(RefusedError, match="already exists"):
        reg.add_user(COMPOSED, "another-pw", actor="op")
    assert reg.user(DECOMPOSED).name == COMPOSED and reg.is_user(DECOMPOSED)
    reg.permit(DECOMPOSED, "devices/{username}/#", "readWrite", actor="op")
    assert reg.authorize(DECOMPOSED, "publish", f"devices/{COMPOSED}/t")
    assert reg.grants(DECOMPOSED).topics == ((f"devices/{COMPOSED}/#", "readWrite"),)
    reg.forbid(COMPOSED, "devices/{username}/#", actor="op")  # the cache of either form is dropped
    assert not reg.authorize(DECOMPOSED, "publish", f"devices/{COMPOSED}/t")
    reg.set_password(DECOMPOSED, "new-secret", actor="op")
    assert reg.authenticate(COMPOSED, "new-secret")
    reg.disable_user(DECOMPOSED, actor="op")
    reg.enable_user(COMPOSED, actor="op")
    reg.remove_user(DECOMPOSED, actor="op")
    assert reg.users() == []
    assert {e.subject for e in reg.events()} == {COMPOSED}  # the broker applies events by this name


def test_rules_count_characters_of_the_nfc_form():
    assert normalise_username(DECOMPOSED) == COMPOSED and normalise_username(42) == 42
    assert username_problem("e\u0301e\u0301") == "username must be at least 3 characters"  # 4 code points, 2 letters
    assert username_problem("e\u0301" * 128) is None  # 256 code points, 128 characters


# -- text UTF-8 can carry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("username, rule", [
    ("sens\ud800or", "username must be valid UTF-8 (lone surrogate U+D800)"),
    ("bad-\udcff", "username must be valid UTF-8 (lone surrogate U+DCFF)"),  # an undecodable byte, surrogateescaped
    (b"sensor-\xff", "username must be valid UTF-8"),
    (b"sensor-1", "username must be a string, not bytes"),
])
def test_names_utf8_cannot_carry_are_refused_with_the_rule(reg, username, rule):
    reg.unlock(300, actor="op")
    assert username_problem(username) == rule
    result = reg.record_attempt(username, "secret-pw", "c", "10.0.0.1", "http")
    assert (result.outcome, result.field, result.reason) == ("invalid", "username", rule)
    login = reg.login(username, "secret-pw")
    assert (login.accepted, login.outcome, login.reason) == (False, "not_credentials", rule)
    assert not reg.authenticate(username, "secret-pw")
    with pytest.raises(RefusedError, match=r"valid UTF-8|not bytes"):
        reg.add_user(username, "secret-pw", actor="op")
    assert reg.requests(include_all=True) == [] and reg.users() == []
    reg.lock(actor="op")
    assert reg.record_attempt(username, "secret-pw", "c", "10.0.0.1", "http").outcome == "invalid"  # not a knock
    assert reg.status().knocking == 0


def test_lone_surrogates_elsewhere_are_refused(reg):
    reg.unlock(300, actor="op")
    assert password_problem("secret-\ud800") == "password must be valid UTF-8 (lone surrogate U+D800)"
    assert reg.record_attempt("sensor-1", "secret-\ud800", None, "p", "http").field == "password"
    assert registration_problem("sensor-1", "secret-pw", [{"resource": "a/\udfff", "operation": "read"}]) == (
        "permissions", "permissions[0]: topic pattern must be valid UTF-8 (lone surrogate U+DFFF)")
    assert registration_problem("sensor-1", "secret-pw", None, {"note": "\ud83d"})[0] == "context"
    assert reg.user("x\ud800y") is None
    [item] = reg.grant(["x\ud800y"], actor="op")
    assert not item.ok and "valid UTF-8" in item.message


# -- look-alike names are marked ---------------------------------------------------------------------------------
CYRILLIC_E = "s\u0435nsor-1"  # Cyrillic е among Latin letters


@pytest.mark.parametrize("name, marks, odd", [
    (CYRILLIC_E, ["mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)"], ["\u0435"]),
    ("sensor\u20111", ["look-alike U+2011 NON-BREAKING HYPHEN (looks like '-')"], ["\u2011"]),
    ("sensor\u200b-1", ["invisible U+200B ZERO WIDTH SPACE"], ["\u200b"]),
    ("soft\u00adhyphen", ["invisible U+00AD SOFT HYPHEN"], ["\u00ad"]),
    ("\u202esensor", ["invisible U+202E RIGHT-TO-LEFT OVERRIDE"], ["\u202e"]),
    ("\uff53ensor-1", ["look-alike U+FF53 FULLWIDTH LATIN SMALL LETTER S (looks like 's')"], ["\uff53"]),
    ("sensor\u00a01", ["look-alike space U+00A0 NO-BREAK SPACE"], ["\u00a0"]),
    ("\u0440\u0430ypal", ["mixed scripts: Latin+Cyrillic (U+0440 CYRILLIC SMALL LETTER ER, "
                          "U+0430 CYRILLIC SMALL LETTER A)"], ["\u0440", "\u0430"]),
    ("\u03a3ensor\u2011\u200b", ["mixed scripts: Latin+Greek (U+03A3 GREEK CAPITAL LETTER SIGMA)",
                                 "look-alike U+2011 NON-BREAKING HYPHEN (looks like '-')",
                                 "invisible U+200B ZERO WIDTH SPACE"], ["\u03a3", "\u2011", "\u200b"]),
])
def test_look_alike_names_are_marked(name, marks, odd):
    assert name_marks(name) == marks
    assert suspicious_characters(name) == odd


@pytest.mark.parametrize("name", [
    "sensor-1", "thermo-[bold]x[/]", "a" * 128,  # ASCII
    "\u0434\u0430\u0442\u0447\u0438\u043a-1",  # датчик-1: Cyrillic only
    "\u03b1\u03b9\u03c3\u03b8\u03b7\u03c4\u03ae\u03c1\u03b1\u03c2-2",  # Greek only
    COMPOSED, "stra\u00dfe-7", "\u6771\u4eac-\u30bb\u30f3\u30b5\u30fc-1",  # Latin, Han and Katakana: allowed
    "\U0001f525\U0001f4a7\U0001f321\ufe0f-sensor",  # an emoji's presentation selector is not invisible
])
def test_ordinary_names_are_not_marked(name):
    assert name_marks(name) == [] and suspicious_characters(name) == []


def test_a_marked_name_is_recorded_not_refused_and_its_view_carries_the_marks(reg):
    reg.unlock(300, actor="op")
    marked = reg.record_attempt(CYRILLIC_E, "secret-pw", "c1", "10.0.0.1", "mqtt")
    plain = reg.record_attempt("sensor-1", "secret-pw", "c2", "10.0.0.2", "mqtt")
    assert marked.outcome == plain.outcome == "pending"
    assert marked.request.marks == ("mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)",)
    assert plain.request.marks == ()
    rows = {r.username: r for r in reg.requests()}
    assert json.loads(json.dumps(rows[CYRILLIC_E].as_dict()))["marks"] == list(marked.request.marks)
    assert rows["sensor-1"].as_dict()["marks"] == []
    page, _ = reg.request_page(10)
    assert {r.username: r.marks for r in page} == {CYRILLIC_E: marked.request.marks, "sensor-1": ()}
    assert reg.grant([CYRILLIC_E], actor="op")[0].ok  # marked, never refused: the operator decides


# -- stacked combining marks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, marked", [
    ("a" + "\u0301" * 15 + "-1", True),  # NFC composes the first: á and 14 more acute accents
    ("sex\u0301\u0302\u0303\u0304sor", True),  # four on one letter (x composes with none of them)
    ("sex\u0301\u0302\u0303sor", False),  # three: still a (strange) letter
    ("Vi\u1ec7t-c\u00e0-ph\u00ea", False),  # Vietnamese, NFC: no marks left to stack
    ("\u0915\u094d\u0937\u093f-01", False),  # Devanagari conjunct with a vowel sign
])
def test_combining_marks_stacked_beyond_three_are_marked_and_wait_for_a_person(reg, name, marked):
    name = unicodedata.normalize("NFC", name)
    marks = name_marks(name)
    assert any(m.startswith("stacked marks: more than 3 combining marks on U+") for m in marks) == marked, marks
    if marked:
        assert suspicious_characters(name) and all(unicodedata.combining(ch) for ch in suspicious_characters(name))
    reg.add_rule("*", permissions=["devices/{username}/#=readWrite"], actor="op")
    reg.unlock(300, actor="op")
    result = reg.record_attempt(name, "secret-pw", "c1", "10.0.0.1", "mqtt")
    assert result.outcome == ("pending" if marked else "granted")
    assert (reg.requests(include_all=True)[0].marks != ()) == marked
