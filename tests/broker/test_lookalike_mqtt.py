"""Names from real devices: a look-alike name over MQTT is recorded with its mark, the two Unicode forms of a
name are one request over MQTT and HTTP, and a lone surrogate over HTTP is a 400 on the username."""

from __future__ import annotations

from tests.broker.clients import Paho, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_flows import cli
from tests.broker.test_http import post

CYRILLIC = "s\u0435nsor-1"  # Cyrillic е among Latin letters: looks exactly like sensor-1
COMPOSED, DECOMPOSED = "caf\u00e9-7", "cafe\u0301-7"


def test_a_cyrillic_look_alike_over_mqtt_is_recorded_with_its_mark(server, admin_reg, db_path):
    port = server.mqtt_port
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    res = mosquitto_pub(port, CYRILLIC, "secret-pw-1", client_id="dev-cyr")
    assert res.returncode != 0 and "not authori" in res.stderr
    wait_until(lambda: admin_reg.requests(), message="the request")
    [req] = admin_reg.requests()
    assert (req.username, req.client_id, req.source) == (CYRILLIC, "dev-cyr", "mqtt")
    assert req.marks == ("mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)",)
    table = cli(db_path, "requests").stdout
    [row] = [line for line in table.splitlines() if CYRILLIC in line and not line.startswith("⚠ #")]
    assert row.startswith(f"{req.id}   ⚠ {CYRILLIC}") and row.rstrip().endswith("U+0435")

    # The look-alike and the real name stay two names: granting one never lets the other in.
    assert admin_reg.grant([CYRILLIC], actor="test")[0].ok
    wait_until(lambda: mosquitto_pub(port, CYRILLIC, "secret-pw-1").returncode == 0, timeout=10,
               message="the granted look-alike gets in")
    assert mosquitto_pub(port, "sensor-1", "secret-pw-1").returncode != 0
    wait_until(lambda: any(r.username == "sensor-1" for r in admin_reg.requests()), message="the real name's request")
    [plain] = [r for r in admin_reg.requests() if r.username == "sensor-1"]
    assert plain.marks == () and not admin_reg.is_user("sensor-1")


def test_a_name_not_sent_in_nfc_is_refused_and_never_listed_over_mqtt_as_over_http(server, admin_reg, db_path):
    """Mosquitto compares names byte for byte: a device sending the decomposed form could never log in as the
    NFC account a grant would make, so its attempt is refused with the rule and never recorded, even by a rule
    that would admit the name."""
    nfd_rule = "username must be sent in Unicode NFC form (the broker compares names byte for byte)"
    admin_reg.add_rule("caf*", permissions=["devices/{username}/#=readWrite"], actor="test")
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    device = Paho(server.mqtt_port, DECOMPOSED, "secret-pw-7", client_id="cafe-nfd").connect()
    assert not device.connected.is_set() and device.reason_code in (4, 5, 134, 135), device.reason_code
    device.close()
    wait_until(lambda: any(nfd_rule in line for line in list(server.lines)), message="the refusal in the log")
    status, body = post(server.http_port, {"username": DECOMPOSED, "password": "secret-pw-7"})
    assert (status, body["field"], body["message"]) == (400, "username", nfd_rule)
    assert mosquitto_pub(server.mqtt_port, DECOMPOSED, "secret-pw-7", client_id="cafe-nfd").returncode != 0
    assert admin_reg.requests(include_all=True) == [] and admin_reg.user(COMPOSED) is None
    assert DECOMPOSED not in cli(db_path, "requests", "--all").stdout
    # The NFC form of the same name is admitted by the rule, and its device gets in.
    assert mosquitto_pub(server.mqtt_port, COMPOSED, "secret-pw-7", client_id="cafe").returncode != 0
    wait_until(lambda: [r.status for r in admin_reg.requests(include_all=True)] == ["granted"],
               message="the NFC name admitted by the rule")
    wait_until(lambda: mosquitto_pub(server.mqtt_port, COMPOSED, "secret-pw-7").returncode == 0, timeout=10,
               message="the NFC device gets in")
    status, body = post(server.http_port, {"username": DECOMPOSED, "password": "secret-pw-7"})
    assert (status, body["field"]) == (400, "username")  # a user's name in another form: still refused
    assert [u.name for u in admin_reg.users() if u.name.startswith("caf")] == [COMPOSED]


def test_a_lone_surrogate_over_http_is_400_on_the_username(server, admin_reg):
    admin_reg.unlock(300, actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    status, body = post(server.http_port, b'{"username": "sens\\ud800or", "password": "secret-pw"}')
    assert (status, body["field"]) == (400, "username")
    assert body["message"] == "username must be valid UTF-8 (lone surrogate U+D800)"
    status, body = post(server.http_port, b'{"username": "sensor-9", "password": "secret-\\udfff"}')
    assert (status, body["field"]) == (400, "password")
    assert admin_reg.requests() == []
