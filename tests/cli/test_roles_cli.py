"""Roles from the command line, run as a user runs it (the installed console script in a subprocess):
`role add/remove/permit/forbid`, `roles`, `user role add/remove`, `grant --role`, requested roles."""

import json
import os
import subprocess

from store import open_registry
from tests.cli.test_cli import EXE, initialised, ok, run  # noqa: F401 (initialised: the autouse fixture)


def at_terminal(db_path, answer: bytes, *args):
    """Run with a terminal on stdin, answering the question with ``answer``."""
    master, slave = os.openpty()
    try:
        os.write(master, answer)
        return subprocess.run([EXE, *args, "--db", db_path], stdin=slave, capture_output=True, text=True,
                              timeout=60)
    finally:
        os.close(slave)
        os.close(master)


def test_role_commands(db_path):
    assert ok(db_path, "role", "add", "sensors") == "added role sensors\n"
    assert ok(db_path, "role", "permit", "sensors", "telemetry/{username}/#", "write") == \
        "role sensors (0 members) may now write telemetry/{username}/#\n"
    ok(db_path, "role", "permit", "sensors", "broadcast/#", "read")
    ok(db_path, "user", "add", "dev-1", "--password-stdin", stdin="dev-1-pass\n")
    assert ok(db_path, "user", "role", "add", "dev-1", "sensors") == "dev-1 now has role sensors\n"
    roles = json.loads(ok(db_path, "roles", "--json"))
    assert roles == [{"name": "sensors", "members": 1, "created_at": roles[0]["created_at"],
                      "created_by": roles[0]["created_by"],
                      "permissions": [{"pattern": "broadcast/#", "access": "read"},
                                      {"pattern": "telemetry/{username}/#", "access": "write"}]}]
    table = ok(db_path, "roles").splitlines()
    assert table[0].split() == ["ROLE", "MEMBERS", "PERMISSIONS", "CREATED"]
    assert table[1].split()[:4] == ["sensors", "1", "broadcast/#=read", "telemetry/{username}/#=write"]
    users = json.loads(ok(db_path, "users", "--json"))
    assert users[0]["roles"] == ["sensors"]
    assert "ROLES" in ok(db_path, "users") and " sensors " in ok(db_path, "users")
    assert ok(db_path, "role", "forbid", "sensors", "broadcast/#", "--yes") == \
        "role sensors (1 member) no longer has broadcast/#\n"
    assert ok(db_path, "user", "role", "remove", "dev-1", "sensors") == "dev-1 no longer has role sensors\n"
    assert ok(db_path, "role", "remove", "sensors", "--yes") == "removed role sensors\n"
    kinds = [e["kind"] for e in json.loads(ok(db_path, "log", "--json"))]
    assert kinds == ["role.added", "role.permission_added", "role.permission_added", "user.added",
                     "user.role_added", "role.permission_removed", "user.role_removed", "role.removed"]


def test_role_refusals_are_one_line_and_exit_1_or_2_for_a_bad_value(db_path):
    ok(db_path, "role", "add", "sensors")
    for args, message, code in [
        (("role", "add", "sensors"), "role 'sensors' already exists", 1),
        (("role", "add", "bad/name"), "role name must be ASCII letters", 2),
        (("role", "permit", "nope", "a/#", "read"), "no role named 'nope'", 1),
        (("role", "permit", "sensors", "a#", "read"), "'#' must be a whole level", 2),
        (("role", "forbid", "sensors", "zz"), "role 'sensors' has no permission on 'zz'", 1),
        (("role", "remove", "nope"), "no role named 'nope'", 1),
        (("user", "role", "add", "ghost", "sensors"), "no user named 'ghost'", 1),
        (("grant", "ghost", "--role", "nope"), "no role named 'nope'", 1),
    ]:
        result = run(db_path, *args)
        assert result.returncode == code, (args, result.stdout)
        assert result.stderr.startswith("client-registry: ") and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert run(db_path, "role", "permit", "sensors", "a", "everything").returncode == 2


def test_remove_a_role_with_members_needs_force_and_asks_with_the_count(db_path):
    ok(db_path, "role", "add", "fleet")
    ok(db_path, "role", "permit", "fleet", "fleet/#", "read")
    for name in ("dev-1", "dev-2"):
        ok(db_path, "user", "add", name, "--password-stdin", stdin=f"{name}-pass\n")
        ok(db_path, "user", "role", "add", name, "fleet")
    result = run(db_path, "role", "remove", "fleet")
    assert result.returncode == 1 and "role 'fleet' has 2 members" in result.stderr and "force" in result.stderr
    result = at_terminal(db_path, b"n\n", "role", "remove", "fleet", "--force")
    assert result.returncode == 1 and "nothing changed" in result.stderr
    assert "Remove role fleet? Its 2 members lose its permissions" in result.stdout
    result = at_terminal(db_path, b"n\n", "role", "forbid", "fleet", "fleet/#")
    assert result.returncode == 1 and "Its 2 members lose it at once" in result.stdout
    reg = open_registry(db_path)
    assert reg.role("fleet").members == 2 and reg.role("fleet").permissions == [("fleet/#", "read")]
    assert ok(db_path, "role", "remove", "fleet", "--force", "--yes") == "removed role fleet from 2 members\n"
    assert reg.roles() == [] and reg.user("dev-1").roles == []
    reg.close()


def test_grant_with_roles_and_requested_roles(db_path):
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    reg.record_attempt("dev-a", "secret-pw", "c", "p", "mqtt")
    reg.record_attempt("http-dev", "secret-pw", "c", "p", "http", requested_roles=["cams", "sensors"])
    reg.record_attempt("perm-dev", "secret-pw", "c", "p", "http", requested_roles=["sensors"],
                       requested_permissions=[{"resource": "s/perm-dev/#", "operation": "readWrite"}])
    listed = ok(db_path, "requests")
    assert "http-dev asks for roles cams, sensors" in listed
    assert "perm-dev asks for permission s/perm-dev/#=readWrite and role sensors" in listed  # issue 16
    assert json.loads(ok(db_path, "requests", "--json"))[1]["requested_roles"] == ["cams", "sensors"]
    ok(db_path, "role", "add", "sensors")
    ok(db_path, "role", "add", "extra")
    assert "granted dev-a" in ok(db_path, "grant", "dev-a", "--role", "sensors", "-r", "extra",
                                 "-p", "own/{username}/#=readWrite")
    assert reg.user("dev-a").roles == ["sensors", "extra"]
    assert reg.user("dev-a").permissions == [("own/{username}/#", "readWrite")]
    result = run(db_path, "grant", "http-dev", "--requested")
    assert result.returncode == 1 and "no role named 'cams'" in result.stderr
    assert reg.user("http-dev") is None
    ok(db_path, "role", "add", "cams")
    assert "granted http-dev" in ok(db_path, "grant", "http-dev", "--requested", "--role", "extra")
    assert reg.user("http-dev").roles == ["extra", "cams", "sensors"]
    reg.close()
