"""`client-registry serve` as a real process: start-up line, signals, port already taken, quiet stderr."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.waits import wait_until

CLI = str(Path(sys.executable).parent / "client-registry")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")


def start(db: str, mqtt_bind="127.0.0.1:0", http_bind="127.0.0.1:0") -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CLIENT_REGISTRY_CONSOLE_PASSWORD", None)
    return subprocess.Popen([CLI, "serve", "--db", db, "--mqtt-bind", mqtt_bind, "--http-bind", http_bind],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_serving(proc: subprocess.Popen) -> tuple[int, int, list[str]]:
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"serving: mqtt [^ ]+:(\d+) \([^)]*\), http [^ ]+:(\d+)", line)
        if m:
            return int(m.group(1)), int(m.group(2)), lines
    raise AssertionError(f"server did not start: {lines}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_serve_runs_and_stops_cleanly(tmp_path, sig):
    db = str(tmp_path / "registry.db")
    proc = start(db)
    try:
        mqtt_port, http_port, lines = wait_serving(proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        creds = (tmp_path / "registry.console.credentials")
        assert creds.exists()
        # Every file the registry and its Mosquitto create is private, the database's WAL and SHM included.
        made = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
        for name in ("registry.db", "registry.db-wal", "registry.db-shm", "registry.secret",
                     "registry.console.credentials", "registry.service.credentials", "registry.mosquitto.conf",
                     "registry.accounts.snapshot", "registry.sock", "registry.mosquitto.pid"):
            assert made.pop(name) == "0o600", name
        assert made.pop("registry.mosquitto-data") == "0o700"
        assert not made, made
        password = creds.read_text().strip()
        res = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-u",
                              "client-registry-console", "-P", password, "-t", "hello/world", "-m", "hi"],
                             capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stderr
        res = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-u", "nobody-here",
                              "-P", "wrong-password", "-t", "x", "-m", "hi"],
                             capture_output=True, text=True, timeout=20)
        assert res.returncode != 0
        from store import open_registry

        reg = open_registry(db)  # locked: the plugin counts the unknown name, the service records the knock
        try:
            wait_until(lambda: reg.status().refused_recent >= 1, message="the refused attempt recorded")
            assert reg.status().knocking == 1, "the locked knock was not recorded"
        finally:
            reg.close()
        mosquitto_pid = int((tmp_path / "registry.mosquitto.pid").read_text())
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    all_lines = lines + err.splitlines(keepends=True)
    assert all(STAMP.match(line) for line in all_lines), all_lines  # Mosquitto's output too, through our log
    assert "Traceback" not in err and password not in err and "wrong-password" not in err
    assert any("mosquitto 2." in line and "supervised" in line for line in all_lines)
    assert "stopped" in all_lines[-1]
    assert sum("client-registry stopped" in line for line in all_lines) == 1
    # its Mosquitto went with it (SIGHUP: the terminal closed)
    wait_until(lambda: not Path(f"/proc/{mosquitto_pid}").exists(), message="the supervised Mosquitto to exit")


@pytest.mark.parametrize("which", ["mqtt", "http"])
def test_port_taken_is_one_clear_line_and_exit_1(tmp_path, which):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        binds = {"mqtt_bind": "127.0.0.1:0", "http_bind": "127.0.0.1:0", f"{which}_bind": f"127.0.0.1:{port}"}
        proc = start(str(tmp_path / "registry.db"), **binds)
        _out, err = proc.communicate(timeout=30)
    finally:
        blocker.close()
    assert proc.returncode == 1
    # Checked before anything starts: no Mosquitto output, no other line.
    assert err == f"client-registry: cannot listen for {which.upper()} on 127.0.0.1:{port}: address already in use\n"


def test_a_refused_service_account_is_one_line_and_exit_1(tmp_path):
    """Mosquitto starts but refuses the service account (here its plugin is pointed at a snapshot that does not
    exist, so it holds no accounts): one line naming the refusal and what the plugin said, nothing left running."""
    include = tmp_path / "include.conf"
    include.write_text(f"plugin_opt_snapshot {tmp_path / 'nowhere'}\n")  # overrides the generated one
    res = subprocess.run([CLI, "serve", "--db", str(tmp_path / "registry.db"), "--mqtt-bind", "127.0.0.1:0",
                          "--http-bind", "127.0.0.1:0", "--mosquitto-include", str(include)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith("client-registry: cannot log in to Mosquitto as the service account: Not authorized "
                                 "(mosquitto said: registry_plugin: snapshot "), res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "registry.mosquitto.pid").exists()


def test_embedded_shutdown_with_live_clients_is_quiet(db_path, admin_reg, capfd, caplog):
    """The dashboard embeds the server: stopping it with clients still connected must print nothing."""
    from tests.broker import mqtt_raw as raw
    from tests.broker.clients import Paho
    from tests.broker.conftest import ServerThread

    st = ServerThread(db_path).start()
    admin = Paho(st.mqtt_port, st.console.username, st.console.password, client_id="live-admin").connect()
    half_open = raw.open_socket(st.mqtt_port)  # connected, never sends CONNECT
    try:
        assert admin.subscribe("$registry/#") == [1]
        st.stop()
        assert admin.disconnected.wait(5)
    finally:
        admin.close()
        half_open.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []  # e.g. asyncio's "Exception in callback"


@pytest.mark.parametrize("case", ["no compiler", "no mosquitto", "old schema"])
def test_what_is_missing_is_one_line_and_exit_1(tmp_path, case):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # nothing built yet
    args = [CLI, "serve", "--db", str(tmp_path / "registry.db"), "--mqtt-bind", "127.0.0.1:0",
            "--http-bind", "127.0.0.1:0"]
    if case == "no compiler":
        env["CC"] = "/nonexistent/cc"
        expected = "client-registry: cannot build the registry plugin: "
    elif case == "no mosquitto":
        args += ["--mosquitto", "/nonexistent/mosquitto"]
        expected = "client-registry: mosquitto not found in /nonexistent/mosquitto"
    else:
        import sqlite3

        with sqlite3.connect(tmp_path / "registry.db") as con:  # a database of client-registry 0.1
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        expected = "client-registry: database "
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1 and res.stderr.startswith(expected), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    if case == "old schema":
        assert "client-registry 0.1" in res.stderr and "cannot convert" in res.stderr


def test_per_address_limit_is_a_setting_and_throttling_is_visible(tmp_path):
    db = str(tmp_path / "registry.db")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([CLI, "serve", "--db", db, "--mqtt-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0",
                             "--per-address-limit", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        mqtt_port, _, _ = wait_serving(proc)
        subprocess.run([CLI, "--db", db, "unlock"], check=True, capture_output=True, timeout=30)
        for i in range(5):
            res = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-u", f"crowd-{i}",
                                  "-P", "crowd-password", "-t", "t", "-m", "x"], capture_output=True, timeout=20)
            assert res.returncode != 0
        deadline = time.monotonic() + 30  # the service records the refusals as the plugin reports them
        while True:
            out = subprocess.run([CLI, "--db", db, "status"], capture_output=True, text=True, timeout=30).stdout
            if "throttled" in out or time.monotonic() > deadline:
                break
        assert "2 pending, 3 throttled from 127.0.0.1 (limit 2 new requests per address per minute)" in out, out
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_retained_status_names_the_broker_and_the_http_api(server):
    """What a dashboard reads to know it watches a registry: the service, its broker, and where the HTTP API
    serves (published once the API is up, so the address is the real one)."""
    from tests.broker.clients import Paho

    admin = Paho(server.mqtt_port, server.console.username, server.console.password, client_id="status-test").connect()
    try:
        admin.subscribe("$registry/v1/status")
        _topic, payload = admin.next_message(timeout=5)[:2]
        status = json.loads(payload)
    finally:
        admin.close()
    assert status["service"] == "client-registry" and status["state"] == "running"
    assert status["broker"].startswith("mosquitto 2.") and status["broker"].endswith("supervised")
    assert status["http"] == f"127.0.0.1:{server.http_port}"


def test_two_embedded_servers_in_one_process_each_log_their_own_lines(tmp_path):
    """The broker's loggers are the process's; each embedder's ``log=`` still gets its own server's lines."""
    from store import open_registry
    from tests.broker.clients import mosquitto_pub
    from tests.broker.conftest import ServerThread, wait_until

    first = ServerThread(str(tmp_path / "first.db")).start()
    second = ServerThread(str(tmp_path / "second.db")).start()
    admin = open_registry(first.db)
    try:
        admin.unlock(300)
        first.applied(admin)
        assert mosquitto_pub(first.mqtt_port, "knocks-on-first", "pw-1").returncode != 0  # a request: refused
        wait_until(lambda: any("knocks-on-first" in line for line in first.lines), message="the refusal line")
        assert second.mqtt_port != first.mqtt_port
        assert not any("knocks-on-first" in line for line in second.lines)
        assert any(f"listening on 127.0.0.1:{second.mqtt_port}" in line for line in second.lines)
        assert not any(f"listening on 127.0.0.1:{first.mqtt_port}" in line for line in second.lines)
    finally:
        admin.close()
        first.stop()
        second.stop()
