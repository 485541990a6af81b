"""The headless CLI, run as a user runs it: the installed console script in a subprocess."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from store import open_registry

# The console script installed beside the interpreter that runs the tests (the README's virtualenv).
EXE = shutil.which("client-registry", path=os.path.dirname(sys.executable))


def run(db, *args, stdin=None):
    env = {**os.environ, "CLIENT_REGISTRY_DB": ""}
    return subprocess.run([EXE, *args, "--db", db] if db else [EXE, *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)


def ok(db, *args, stdin=None):
    result = run(db, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def seconds_left(line: str, opened: float, window: int) -> int:
    """The countdown of a `status` line (``m:ss``, ``h:mm:ss`` from an hour), checked against the window
    opened at ``opened`` (monotonic) for ``window`` s: a loaded machine may take seconds between the two."""
    m = re.match(r"UNLOCKED (?:(\d+):)?(\d{1,2}):(\d\d) left", line)
    assert m, line
    hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), int(m.group(3))
    assert (m.group(1) is not None) == (window >= 3600) and (hours == 0 or len(m.group(2)) == 2), line
    left = hours * 3600 + minutes * 60 + seconds
    assert window - (time.monotonic() - opened) - 1 <= left <= window, line
    return left


@pytest.fixture(autouse=True)
def initialised(db_path):
    """The registry exists (`client-registry init`), as after `serve` or the dashboard on a machine."""
    assert "created a registry at" in ok(db_path, "init")
    assert "a registry exists at" in ok(db_path, "init")


def test_console_script_is_installed():
    assert EXE, "client-registry is not on PATH: install the project as the README says"


def test_the_registration_flow(db_path):
    assert ok(db_path, "status").startswith("LOCKED; 0 pending")
    assert "UNLOCKED 2:00" in ok(db_path, "unlock", "--minutes", "2")
    reg = open_registry(db_path)
    reg.record_attempt("sensor-1", "secret-pw", "client-a", "10.1.2.3", "mqtt")
    rows = json.loads(ok(db_path, "requests", "--json"))
    assert [(r["username"], r["status"], r["pairing_code"]) for r in rows] == [
        ("sensor-1", "pending", reg.requests()[0].pairing_code)]
    assert "password" not in json.dumps(rows) and "hash" not in json.dumps(rows)
    table = ok(db_path, "requests")
    assert "sensor-1" in table and "client-a" in table and "10.1.2.3" in table
    assert "granted sensor-1" in ok(db_path, "grant", "sensor-1", "-p", "devices/{username}/#=readWrite")
    assert reg.authenticate("sensor-1", "secret-pw")
    users = json.loads(ok(db_path, "users", "--json"))
    assert users[0]["permissions"] == [{"pattern": "devices/{username}/#", "access": "readWrite"}]
    log = json.loads(ok(db_path, "log", "--json"))
    assert [e["kind"] for e in log] == ["registry.unlocked", "request.created", "request.granted"]
    assert [e["kind"] for e in json.loads(ok(db_path, "log", "--since", str(log[1]["id"]), "--json"))] == [
        "request.granted"]
    assert "LOCKED" in ok(db_path, "lock")
    reg.close()


def test_refusals_are_one_line_and_exit_1(db_path):
    result = run(db_path, "grant", "ghost")
    assert result.returncode == 1 and result.stderr.strip() == "client-registry: 'ghost' has no pending request"
    result = run(db_path, "user", "disable", "ghost")
    assert (result.returncode, result.stderr) == (1, "client-registry: no user named 'ghost'\n")


def test_partial_grant_reports_each_item_and_exits_1(db_path):
    reg = open_registry(db_path)
    reg.unlock(60, actor="op")
    reg.record_attempt("sensor-1", "secret-pw", "c", "p", "mqtt")
    result = run(db_path, "grant", "sensor-1", "ghost")
    assert result.returncode == 1
    assert "granted sensor-1" in result.stdout and "ghost" in result.stderr
    assert reg.user("sensor-1") is not None
    reg.close()


def test_usage_errors_exit_2(db_path):
    assert run(db_path, "no-such-command").returncode == 2
    assert run(db_path, "permit", "alice", "a/#", "everything").returncode == 2
    assert run(db_path, "grant", "x", "-p", "nonsense").returncode == 2
    assert run(db_path, "unlock", "--minutes", "0").returncode == 2


def test_users_and_permissions(db_path):
    assert "added alice (admin)" in ok(db_path, "user", "add", "alice", "--admin", "--password-stdin",
                                       stdin="alice-password\n")
    ok(db_path, "user", "add", "bob", "--password-stdin", stdin="bob-password\n")
    ok(db_path, "permit", "bob", "sensors/#", "read")
    ok(db_path, "user", "disable", "bob")
    table = ok(db_path, "users")
    assert "alice" in table and "admin" in table and "sensors/#=read" in table and "disabled" in table
    ok(db_path, "user", "enable", "bob")
    ok(db_path, "user", "passwd", "bob", "--password-stdin", stdin="bob-new-password\n")
    reg = open_registry(db_path)
    assert reg.authenticate("bob", "bob-new-password") and reg.authenticate("alice", "alice-password")
    reg.close()
    ok(db_path, "forbid", "bob", "sensors/#")
    ok(db_path, "user", "remove", "bob", "--yes")
    assert "bob" not in ok(db_path, "users")
    result = run(db_path, "user", "add", "carol", "--password-stdin", stdin="123\n")
    assert result.returncode == 2 and "at least 5" in result.stderr and "123" not in result.stderr
    result = run(db_path, "user", "add", "carol")  # no terminal to prompt on
    assert result.returncode == 1 and "--password-stdin" in result.stderr


def test_hostile_strings_never_reach_the_terminal_raw(db_path):
    reg = open_registry(db_path)
    reg.unlock(60, actor="op")
    reg.record_attempt("[red]evil\u202e", "secret-pw", "cid\x1b[2J\x07", "p", "mqtt")
    reg.close()
    out = ok(db_path, "requests")
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "[red]evil\\u202e" in out and "cid\\x1b[2J\\x07" in out


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.write_bytes(b"garbage" * 200), "corrupt or not a client-registry database"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_bad_database_is_one_line_and_exit_1(tmp_path, setup, message):
    path = tmp_path / "broken.db"
    setup(path)
    result = run(str(path), "status")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_from_environment(tmp_path):
    env = {**os.environ, "CLIENT_REGISTRY_DB": str(tmp_path / "env.db")}
    subprocess.run([EXE, "init"], env=env, check=True, capture_output=True)
    subprocess.run([EXE, "unlock"], env=env, check=True, capture_output=True)
    assert open_registry(str(tmp_path / "env.db")).status().unlocked


@pytest.mark.parametrize("command", [["status"], ["unlock"], ["requests"], ["users"], ["log"], ["grant", "x"],
                                     ["user", "add", "x", "--password-stdin"]])
def test_a_missing_database_is_never_created_silently(tmp_path, command):
    missing = tmp_path / "typo" / "registry.db"
    result = run(str(missing), *command, stdin="password-1\n")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"client-registry: no registry database at {missing}: create it with "
                                     f"`client-registry --db {missing} init` (or start `client-registry serve` or "
                                     f"the dashboard on it)")
    assert not missing.parent.exists()  # no folder, no secret, no empty database


def test_private_by_default(tmp_path):
    """The data folder 0700 and every file the registry creates 0600, whatever the umask."""
    folder = tmp_path / "data"
    db = str(folder / "site.db")
    old = os.umask(0o000)
    try:
        ok(db, "init")
        ok(db, "user", "add", "alice", "--password-stdin", stdin="alice-password\n")  # WAL and SHM exist now
    finally:
        os.umask(old)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    created = sorted(p.name for p in folder.iterdir())
    assert {"site.db", "site.secret"} <= set(created)
    for path in folder.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", (path.name, oct(path.stat().st_mode))
    other = str(folder / "other.db")
    ok(other, "init")
    assert (folder / "other.secret").read_bytes() != (folder / "site.secret").read_bytes()  # one per database


def test_status_shows_throttled_addresses_and_the_servers_limit(db_path):
    from store import RegistryConfig

    server_side = open_registry(db_path, config=RegistryConfig(per_peer_per_minute=3))
    server_side.note_limits()  # what `serve --per-address-limit 3` does at start
    opened = time.monotonic()
    server_side.unlock(600, actor="op")
    for i in range(15):
        server_side.record_attempt(f"dev-{i}", "dev-password", "c", "10.0.0.7", "mqtt")
    out = ok(db_path, "status")
    seconds_left(out, opened, 600)  # 10:00 at once, a second or more less on a loaded machine
    assert out.strip().split(" left ", 1)[1] == ("(by op); 3 pending, 12 throttled from 10.0.0.7 "
                                                 "(limit 3 new requests per address per minute)")
    data = json.loads(ok(db_path, "status", "--json"))
    assert (data["throttled"], data["throttled_from"], data["per_address_limit"]) == (12, [["10.0.0.7", 12]], 3)


def test_global_options_before_or_after_the_command(db_path):
    """`client-registry --mqtt URL` (the README's form) reaches the dashboard; --db works on either side."""
    for args in (["--mqtt", "http://example.com"], ["--mqtt", "http://example.com", "dashboard"],
                 ["--http-bind", "127.0.0.1:0", "--no-embed", "--mqtt", "http://example.com"],
                 ["dashboard", "--mqtt", "http://example.com"]):
        result = subprocess.run([EXE, "--db", db_path, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "mqtt://" in result.stderr and "No such option" not in result.stderr
    assert ok(None, "--db", db_path, "status").startswith("LOCKED")
    assert ok(db_path, "status").startswith("LOCKED")


def test_the_console_account_cannot_be_removed_or_disabled(db_path):
    reg = open_registry(db_path)
    from store.console import ensure_console_account

    ensure_console_account(reg)
    for verb in ("remove", "disable"):
        result = run(db_path, "user", verb, "client-registry-console", "--yes")
        assert result.returncode == 1
        assert result.stderr.startswith("client-registry: client-registry-console is the account every dashboard "
                                        f"logs in with: it cannot be {verb}d")
    assert reg.user("client-registry-console") is not None and not reg.user("client-registry-console").disabled


def test_destructive_commands_ask_at_a_terminal(db_path):
    """At a terminal `user remove` asks first (no: nothing changes); a script (no terminal) is refused in one
    line naming --yes, and nothing changes; with --yes it is done without a question."""
    ok(db_path, "user", "add", "keep-me", "--password-stdin", stdin="keep-me-pw\n")
    master, slave = os.openpty()
    try:
        os.write(master, b"n\n")
        result = subprocess.run([EXE, "user", "remove", "keep-me", "--db", db_path], stdin=slave,
                                capture_output=True, text=True, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert result.returncode == 1 and "Remove keep-me" in result.stdout and "nothing changed" in result.stderr
    assert open_registry(db_path).user("keep-me") is not None
    result = run(db_path, "user", "remove", "keep-me")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("client-registry: Remove keep-me, its permissions and its broker account, and disconnect"
                             " it: no terminal to ask; pass --yes to confirm\n")
    assert open_registry(db_path).user("keep-me") is not None
    assert "removed keep-me" in ok(db_path, "user", "remove", "keep-me", "--yes")


def test_grant_requested_and_template_together(db_path):
    """--requested and --permission combine (the store's grant option, as the dashboard's dialog does); the
    permissions are read by the store's parser (comma-separated allowed), a bad one is a usage error."""
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    reg.record_attempt("http-dev", "secret-pw", "c", "10.0.0.1", "http",
                       requested_permissions=[{"resource": "asked/#", "operation": "read"}])
    bad = run(db_path, "grant", "http-dev", "-p", "x/#=everything")
    assert bad.returncode == 2 and "access must be one of read, write, readWrite" in bad.stderr
    ok(db_path, "grant", "http-dev", "--requested", "-p", "devices/{username}/#=readWrite, t/+=write")
    assert sorted(reg.user("http-dev").permissions) == [
        ("asked/#", "read"), ("devices/{username}/#", "readWrite"), ("t/+", "write")]
    reg.close()


def _follow(db_path, *args):
    env = {**os.environ, "CLIENT_REGISTRY_DB": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([EXE, *args, "--db", db_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _read_until(proc, needle: str) -> list[str]:
    lines = []
    for line in proc.stdout:  # blocks until the next line: the process prints as things happen
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never printed: {lines} {proc.stderr.read()}")


def test_log_follow_prints_events_as_they_happen(db_path):
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    proc = _follow(db_path, "log", "--follow")
    try:
        assert "registry.unlocked" in _read_until(proc, "registry.unlocked")[-1]
        reg.record_attempt("late-dev", "secret-1", "c", "10.0.0.1", "mqtt")
        assert "late-dev" in _read_until(proc, "request.created")[-1]
        reg.lock(actor="t")
        _read_until(proc, "registry.locked")
    finally:
        proc.terminate()
        proc.wait(10)
        reg.close()


def test_requests_watch_shows_the_list_again_on_a_change(db_path):
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    reg.record_attempt("first-dev", "secret-1", "c", "10.0.0.1", "mqtt")
    proc = _follow(db_path, "requests", "--watch")
    try:
        _read_until(proc, "first-dev")
        reg.record_attempt("second-dev", "secret-1", "c2", "10.0.0.2", "mqtt")
        assert "1 change, 2 pending" in _read_until(proc, "2 pending")[-1]
        _read_until(proc, "second-dev")
    finally:
        proc.terminate()
        proc.wait(10)
        reg.close()


def test_grant_by_pattern_previews_asks_and_grants_what_it_showed(db_path):
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    for i in range(3):
        reg.record_attempt(f"sensor-{i}", "secret-pw", f"c{i}", "10.0.0.1", "mqtt")
    reg.record_attempt("pump-1", "secret-pw", "c9", "10.0.0.1", "mqtt")
    missing = run(db_path, "grant", "valve-*", "--yes")
    assert missing.returncode == 1 and "no pending request matches 'valve-*'" in missing.stderr
    out = ok(db_path, "grant", "sensor-*", "-p", "devices/{username}/#=readWrite", "--yes")
    assert out.count("granted sensor-") == 3 and "pump-1" not in out
    assert "ID" in out.splitlines()[0] and "sensor-2" in out.splitlines()[3]  # the preview table came first
    assert sorted(u.name for u in reg.users()) == ["sensor-0", "sensor-1", "sensor-2"]
    assert reg.user("sensor-1").permissions == [("devices/{username}/#", "readWrite")]
    assert [r.username for r in reg.requests()] == ["pump-1"]
    reg.close()


def test_grant_by_pattern_asks_on_a_terminal(db_path, tmp_path):
    """On a terminal the preview is followed by a question; 'n' grants nothing."""
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    reg.record_attempt("sensor-a", "secret-pw", "c", "10.0.0.1", "mqtt")
    script = tmp_path / "typescript"
    result = subprocess.run(["script", "-qec", f"{EXE} grant 'sensor-*' --db {db_path}", str(script)],
                            input="n\n", capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CLIENT_REGISTRY_DB": ""})
    assert "sensor-a" in result.stdout and "Grant this request? [y/N]" in result.stdout
    assert result.returncode == 1 and "nothing changed" in result.stdout
    assert reg.user("sensor-a") is None and [r.username for r in reg.requests()] == ["sensor-a"]
    reg.close()


def test_a_script_without_yes_gets_no_multi_target_change(db_path):
    """Without a terminal nobody can answer the question: a glob grant, a glob deny and a deny of several are
    refused in one line naming --yes, and nothing changes; a single named deny needs no question."""
    reg = open_registry(db_path)
    reg.unlock(300, actor="t")
    for name in ("sensor-0", "sensor-1", "pump-1", "pump-2", "valve-1"):
        reg.record_attempt(name, "secret-pw", f"c-{name}", "10.0.0.1", "mqtt")
    for args, question in ((("grant", "sensor-*"), "Grant these 2 requests"),
                           (("deny", "sensor-*"), "Deny these 2 requests"),
                           (("deny", "pump-1", "pump-2"), "Deny 2 requests (pump-1, pump-2)")):
        result = run(db_path, *args, stdin="")
        assert result.returncode == 1, args
        assert result.stderr == f"client-registry: {question}: no terminal to ask; pass --yes to confirm\n"
    assert sorted(r.username for r in reg.requests()) == ["pump-1", "pump-2", "sensor-0", "sensor-1", "valve-1"]
    assert reg.users() == []
    assert "denied valve-1" in ok(db_path, "deny", "valve-1", stdin="")
    out = ok(db_path, "deny", "sensor-*", "--yes")
    assert out.count("denied sensor-") == 2 and "pump" not in out
    assert sorted(r.username for r in reg.requests()) == ["pump-1", "pump-2"]
    reg.close()


def test_long_windows_count_hours_and_the_log_shows_moments_as_local_time(db_path):
    """A 4-hour window reads 4:00:00 (not 240:00); the log's `until` is a local time like the line's own."""
    opened = time.monotonic()
    seconds_left(ok(db_path, "unlock", "--minutes", "240"), opened, 240 * 60)  # 4:00:00 (not 240:00) at once
    seconds_left(ok(db_path, "status"), opened, 240 * 60)  # h:mm:ss, within what passed since the unlock
    line = next(x for x in ok(db_path, "log").splitlines() if "registry.unlocked" in x)
    until = json.loads(ok(db_path, "log", "--json"))[-1]["detail"]["until"]
    assert line.endswith(f" until={time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(until))}")
