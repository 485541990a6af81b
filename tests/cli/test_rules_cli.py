"""`client-registry rule add/remove/undo` and `rules`, run as the installed console script."""

import json

import pytest

from store import open_registry
from tests.cli.test_cli import initialised, ok, run  # noqa: F401  (initialised: the registry exists)


def test_add_list_admit_undo_remove(db_path):
    out = ok(db_path, "rule", "add", "sensor-*", "-p", "devices/{username}/#=readWrite", "--from", "10.0.0.0/8",
             "--protocol", "mqtt", "--client-id", "fw2-*", "--limit", "2", "--expires", "2h")
    assert out.startswith("added rule #1 sensor-*: admits up to 2 devices per unlock window named sensor-* from "
                          "10.0.0.0/8 over mqtt with client id fw2-*, with devices/{username}/#=readWrite; "
                          "expires in 2h")
    assert "the registry is locked" in out
    [rule] = json.loads(ok(db_path, "rules", "--json"))
    assert {k: rule[k] for k in ("id", "name", "pattern", "peer_network", "protocol", "client_id_pattern", "limit",
                                 "admitted", "expired", "roles")} == {
        "id": 1, "name": "sensor-*", "pattern": "sensor-*", "peer_network": "10.0.0.0/8", "protocol": "mqtt",
        "client_id_pattern": "fw2-*", "limit": 2, "admitted": 0, "expired": False, "roles": []}
    assert rule["permissions"] == [{"pattern": "devices/{username}/#", "access": "readWrite"}]

    ok(db_path, "unlock")
    reg = open_registry(db_path)
    try:
        outcomes = [reg.record_attempt(f"sensor-{i}", "secret-pw", "fw2-a", "10.0.0.9", "mqtt").outcome
                    for i in range(3)]
    finally:
        reg.close()
    assert outcomes == ["granted", "granted", "pending"]
    table = ok(db_path, "rules")
    assert "2/2" in table and "10.0.0.0/8" in table
    requests = ok(db_path, "requests", "--all")
    assert requests.count("granted by rule:sensor-*") == 2
    log = ok(db_path, "log")
    assert log.count("rule:sensor-*") == 2 and 'rule="sensor-*"' in log
    users = json.loads(ok(db_path, "users", "--json"))
    assert {u["created_by"] for u in users} == {"rule:sensor-*"}

    out = ok(db_path, "rule", "undo", "sensor-*", "--yes")
    assert out.startswith("removed 2 users admitted by rule sensor-*: sensor-0, sensor-1")
    assert json.loads(ok(db_path, "users", "--json")) == []
    # an undone admission still counts against the limit in this window, and says so
    assert "2/2 (2 undone)" in ok(db_path, "rules")
    assert json.loads(ok(db_path, "rules", "--json"))[0]["undone"] == 2
    assert "removed rule #1 sensor-*" in ok(db_path, "rule", "remove", "1", "--yes")
    assert json.loads(ok(db_path, "rules", "--json")) == []
    kinds = [e["kind"] for e in json.loads(ok(db_path, "log", "--json"))]
    assert kinds[0] == "rule.added" and kinds[-1] == "rule.removed"


@pytest.mark.parametrize("args, message, code", [
    (("rule", "add", "x-*", "--from", "10.0.0.0/33"), "client-registry: '10.0.0.0/33' is not a network", 2),
    (("rule", "add", "x-*", "-p", "a/#=all"), "access must be one of", 2),
    (("rule", "add", "x-*", "--expires", "soon"), "Invalid value for --expires", 2),
    (("rule", "add", "x-*", "--expires", "400d"), "between 1 second and 365 days", 2),
    (("rule", "add", "x-*", "--limit", "0"), "--limit", 2),
    (("rule", "add", "x-*", "--protocol", "coap"), "--protocol", 2),
    (("rule", "remove", "nope", "--yes"), "client-registry: no rule named 'nope'", 1),
    (("rule", "undo", "9", "--yes"), "client-registry: no rule #9", 1),
])
def test_refusals_are_one_line_with_an_exit_code(db_path, args, message, code):
    result = run(db_path, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_rule_with_the_same_name_is_refused(db_path):
    ok(db_path, "rule", "add", "sensor-*")
    result = run(db_path, "rule", "add", "sensor-*")
    assert result.returncode == 1
    assert result.stderr.strip() == ("client-registry: a rule named 'sensor-*' exists: remove it or give this one "
                                     "another name")
    assert "added rule #2 sensor-eu" in ok(db_path, "rule", "add", "sensor-*", "--name", "sensor-eu")


def test_rule_add_with_roles(db_path):
    reg = open_registry(db_path)
    try:
        reg.add_role("sensors", actor="test")
        reg.add_role("firmware", actor="test")
    finally:
        reg.close()
    out = ok(db_path, "rule", "add", "sensor-*", "--role", "sensors", "--role", "firmware", "-p", "own/{username}=read")
    assert "with role:sensors role:firmware own/{username}=read" in out
    assert json.loads(ok(db_path, "rules", "--json"))[0]["roles"] == ["sensors", "firmware"]
    assert "role:sensors role:firmware" in ok(db_path, "rules")
    result = run(db_path, "rule", "add", "meter-*", "--role", "meters")
    assert result.returncode == 1 and result.stderr.strip() == "client-registry: no role named 'meters'"
