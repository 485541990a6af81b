"""Usage errors exit 2 everywhere, values the store's rules reject included; refused operations exit 1. Each
path is one line on stderr, and nothing is written."""

from __future__ import annotations

import pytest

from store import open_registry

from .test_cli import initialised, ok, run  # noqa: F401 (initialised: the autouse fixture, `init` first)

BAD_VALUES = [
    ("grant", "sensor-1", "-p", "nonsense"),
    ("grant", "sensor-1", "-p", "a/#/b=read"),
    ("grant", "sensor-1", "-p", "a/b=everything"),
    ("grant", "sensor-1", "--role", "bad name"),
    ("user", "add", "ab", "--password-stdin"),
    ("user", "add", "new-dev", "--password-stdin"),  # stdin "abc": too short a password
    ("user", "add", "client-registry-service", "--password-stdin"),
    ("user", "passwd", "dev-1", "--password-stdin"),
    ("permit", "dev-1", "a/#/b", "read"),
    ("permit", "dev-1", "a/b", "everything"),
    ("role", "add", "bad name"),
    ("role", "permit", "fleet", "x/#/y", "read"),
    ("role", "permit", "fleet", "x/y", "everything"),
    ("user", "role", "add", "dev-1", "bad name"),
    ("rule", "add", "sensor-*", "--from", "10.0.0.300/8"),
    ("rule", "add", "sensor-*", "--limit", "0"),
    ("rule", "add", "sensor-*", "--expires", "5q"),
    ("rule", "add", "sensor-*", "-p", "x/#/y=read"),
    ("rule", "add", "sensor-*", "--client-id", ""),
    ("unlock", "--minutes", "abc"),
    ("unlock", "--minutes", "-5"),
    ("requests", "--no-such-option"),
]

REFUSED = [
    ("grant", "ghost"),
    ("user", "disable", "ghost"),
    ("user", "passwd", "ghost", "--password-stdin"),
    ("role", "remove", "nope", "--yes"),
    ("user", "role", "add", "dev-1", "nope"),
    ("grant", "sensor-1", "--role", "nope"),
    ("rule", "remove", "nope", "--yes"),
]


@pytest.fixture
def registry_with_a_user(db_path):
    ok(db_path, "user", "add", "dev-1", "--password-stdin", stdin="dev-1-pass\n")
    ok(db_path, "role", "add", "fleet")
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    reg.record_attempt("sensor-1", "secret-pw", "c1", "10.0.0.1", "mqtt")
    before = reg.last_event_id()
    reg.close()
    return before


@pytest.mark.parametrize("args", BAD_VALUES, ids=" ".join)
def test_a_bad_value_is_a_usage_error(db_path, registry_with_a_user, args):
    result = run(db_path, *args, stdin="abc\n")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]  # click's usage block ends in its one line; ours is that line alone
    assert last.startswith("Error: ") or (result.stderr == last + "\n" and last.startswith("client-registry: "))
    assert open_registry(db_path).last_event_id() == registry_with_a_user  # nothing written


@pytest.mark.parametrize("args", REFUSED, ids=" ".join)
def test_a_refused_operation_exits_1(db_path, registry_with_a_user, args):
    result = run(db_path, *args, stdin="long-enough-pw\n")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("client-registry: ") and result.stderr.count("\n") == 1
    assert open_registry(db_path).last_event_id() == registry_with_a_user
