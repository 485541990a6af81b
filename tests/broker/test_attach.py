"""Attaching to a Mosquitto the site runs: `client-registry mosquitto-config --write`, then the operator's steps as
it prints them (as root; the site's Mosquitto drops to the `mosquitto` user as systemd's does), then
`serve --broker-url`. The site's Mosquitto keeps its own dynamic security, with its own client and role; the
registry plugin (loaded twice by our conf.d snippet, after the site's plugin) answers the registry's accounts:
the site's client works as before, a device registers and gets in through a broker the registry did not start,
and the site's dynamic-security file is never touched by the registry."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.procs import free_port
from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.config import SERVICE_USER
from store import open_registry
from store.console import CONSOLE_USER
from tests.broker import plugin_state
from tests.broker.clients import Paho, drain, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_http import post
from tests.broker.test_presence import online, presence_of, presence_source
from tests.broker.test_serve import CLI, wait_serving
from tests.tui.conftest import wait_port

SITE_USER, SITE_PASSWORD, SITE_ROLE = "site-admin", "site-admin-pass-1", "site-operators"


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([CLI, "--db", db, *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res


def site_dynsec(path: Path) -> bytes:
    """The site's own dynamic-security file, as `mosquitto_ctrl dynsec` would leave it: one client with its own
    role on `site/#`, nothing allowed by default (Mosquitto 2.0.11's PBKDF2-SHA512, 101 iterations)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", SITE_PASSWORD.encode(), salt, 101)
    acls = [{"acltype": kind, "topic": "site/#", "priority": 0, "allow": True}
            for kind in ("publishClientSend", "subscribePattern", "publishClientReceive")]
    data = {"defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                                 "unsubscribe": True},
            "clients": [{"username": SITE_USER, "textname": "the site's own", "roles": [{"rolename": SITE_ROLE}],
                         "password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
                         "iterations": 101}],
            "groups": [], "roles": [{"rolename": SITE_ROLE, "acls": acls}]}
    text = json.dumps(data, indent=2).encode() + b"\n"
    path.write_bytes(text)
    shutil.chown(path, "mosquitto", "mosquitto")  # Mosquitto rewrites it on the site's own commands
    path.chmod(0o600)
    return text


@pytest.fixture
def site():
    """A folder the site's Mosquitto (user `mosquitto`) can reach, like /etc/mosquitto and /var/lib/mosquitto."""
    folder = Path(tempfile.mkdtemp(prefix="cr-site-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_mosquitto_config_then_serve_attached_beside_the_sites_dynamic_security(site, tmp_path, dynsec_plugin):
    if os.geteuid() != 0:
        pytest.fail("this test plays the site's administrator: run it as root (CI does)")
    db = str(tmp_path / "registry.db")
    port, http_port = free_port(), free_port()
    conf_d, secret, plugin, sock = (site / "conf.d" / "zz-client-registry.conf", site / "client-registry.secret",
                                    site / "lib" / "registry_plugin.so", site / "run" / "registry.sock")
    snapshot = sock.parent / "accounts.snapshot"
    dynsec = site / "dynamic-security.json"
    site_file = site_dynsec(dynsec)
    main_conf = site / "mosquitto.conf"  # the site's own: its dynamic security, then conf.d (ours is in it)
    main_conf.write_text(f"plugin {dynsec_plugin}\nplugin_opt_config_file {dynsec}\ninclude_dir {conf_d.parent}\n"
                         "log_dest stderr\npersistence false\n")

    cli(db, "init")
    res = cli(db, "mosquitto-config", "--conf-d", str(conf_d), "--secret", str(secret), "--plugin", str(plugin),
              "--socket", str(sock), "--listener", f"127.0.0.1:{port}", "--site-conf", str(main_conf), "--write")
    snippet = conf_d.read_text()
    written = [line.strip() for line in res.stderr.splitlines() if line.startswith("wrote ")]
    assert {f"wrote {conf_d}", f"wrote {secret}", f"wrote {plugin}"} <= set(written), res.stderr
    assert not any("dynamic-security" in line for line in written)
    lines = snippet.splitlines()
    assert lines.count(f"plugin {plugin}") == 2  # the plugin twice: first part, then last part
    parts = [line for line in lines if line.startswith("plugin_opt_part ")]
    assert parts == ["plugin_opt_part first", "plugin_opt_part last"]
    assert lines.index(parts[0]) < lines.index(parts[1])
    for option in (f"plugin_opt_secret_file {secret}", f"plugin_opt_snapshot {snapshot}", f"plugin_opt_socket {sock}"):
        assert lines.count(option) == 2, option
    assert "dynamic" not in snippet.lower()
    # the site's file is only read, for its names: named once, in the line that says so
    assert [line for line in (res.stdout + res.stderr).splitlines() if str(dynsec) in line] == [
        f"site accounts (never taken by the registry) from: {dynsec}"]
    # the secret: a copy Mosquitto's group may read, nobody else
    assert secret.read_text() == (tmp_path / "registry.secret").read_text()
    assert (secret.stat().st_mode & 0o777) == 0o640 and secret.stat().st_gid == shutil._get_gid("mosquitto")
    steps = [line.strip() for line in res.stderr.splitlines()[res.stderr.splitlines().index("then:") + 1:]]
    assert "systemctl restart mosquitto" in steps
    serve_line = next(s for s in steps if " serve --broker-url " in s)
    assert f"--broker-url mqtt://127.0.0.1:{port}" in serve_line and "--socket-group mosquitto" in serve_line
    assert steps.index(serve_line) < steps.index("systemctl restart mosquitto")  # serve first: the snapshot
    assert dynsec.read_bytes() == site_file  # mosquitto-config did not touch the site's file

    # The operator's steps, as printed (systemctl replaced by starting the site's Mosquitto by hand).
    sock.parent.mkdir(mode=0o750)
    shutil.chown(sock.parent, group="mosquitto")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CLIENT_REGISTRY_CONSOLE_PASSWORD", None)
    serve = subprocess.Popen(
        [CLI, "--db", db, "serve", "--broker-url", f"mqtt://127.0.0.1:{port}", "--plugin-socket", str(sock),
         "--socket-group", "mosquitto", "--http-bind", f"127.0.0.1:{http_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    broker = None
    clients: list[Paho] = []
    try:
        wait_until(lambda: snapshot.exists() or serve.poll() is not None, timeout=20, message="the snapshot")
        assert serve.poll() is None, serve.communicate(timeout=10)
        broker = subprocess.Popen(["mosquitto", "-c", str(main_conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_port(port)
        _, _, out = wait_serving(serve)
        assert any(f"attached to mqtt://127.0.0.1:{port}" in line for line in out)
        assert (sock.stat().st_mode & 0o777) == 0o660 and sock.stat().st_gid == shutil._get_gid("mosquitto")
        assert (snapshot.stat().st_mode & 0o777) == 0o640 and snapshot.stat().st_gid == shutil._get_gid("mosquitto")
        _, _, records = plugin_state.read_snapshot(snapshot)
        assert wire.parse_account(records[SERVICE_USER]).flags == wire.SERVICE and SITE_USER not in records
        console_password = (tmp_path / "registry.console.credentials").read_text().strip()
        console = Paho(port, CONSOLE_USER, console_password, client_id="console-attach").connect()
        clients.append(console)
        assert console.connected.is_set() and console.subscribe("plant/#") == [1]

        # The site's own client, answered by the site's dynamic security: its topics and nothing else.
        site_client = Paho(port, SITE_USER, SITE_PASSWORD, client_id="site-admin-1").connect()
        clients.append(site_client)
        assert site_client.connected.is_set(), f"the site's client was refused ({site_client.reason_code})"
        assert site_client.subscribe("site/#") == [1]
        assert site_client.subscribe("plant/#") == [0x80]
        site_client.publish("site/hello", "from the site")
        assert site_client.next_message(2.0) == ("site/hello", b"from the site")
        assert mosquitto_pub(port, SITE_USER, "wrong-password", topic="site/x").returncode != 0

        # A device registers through the registry and gets in.
        cli(db, "unlock")
        assert mosquitto_pub(port, "site-dev", "site-secret", topic="plant/site-dev/x").returncode != 0
        wait_until(lambda: any(r["username"] == "site-dev" for r in json.loads(cli(db, "requests", "--json").stdout)),
                   message="the device's request (forwarded by the plugin's last part)")
        cli(db, "grant", "site-dev", "--permission", "plant/{username}/#=write")  # returns once applied
        assert mosquitto_pub(port, "site-dev", "site-secret", topic="plant/site-dev/x", message="hi").returncode == 0
        assert console.next_message(2.0) == ("plant/site-dev/x", b"hi")
        assert mosquitto_pub(port, "site-dev", "wrong-secret").returncode != 0
        dev = Paho(port, "site-dev", "site-secret", client_id="site-dev-1").connect()
        clients.append(dev)
        assert dev.connected.is_set() and dev.subscribe("site/#") == [0x80]  # not the site's topics
        site_client.publish("site/hello", "again")
        assert site_client.next_message(2.0) == ("site/hello", b"again")
        assert drain(dev, 0.3) == []

        # Who is online comes from the plugin in attach mode too.
        reg = open_registry(db)
        try:
            assert presence_source(reg) == "registry plugin" and reg.presence().watched
            wait_until(lambda: online(reg, "site-dev"), message="the device online")
            dev.close()
            wait_until(lambda: presence_of(reg, "site-dev").online is False, message="the device offline")
        finally:
            reg.close()
        assert dynsec.read_bytes() == site_file  # the registry never wrote the site's dynamic-security file
    finally:
        for client in clients:
            client.close()
        serve.terminate()
        serve.communicate(timeout=20)
        if broker is not None:
            alive = broker.poll() is None
            broker.terminate()
            broker.wait(10)
    # The site's broker was not ours to stop; the service left it running until the test stopped it.
    assert serve.returncode == 0 and alive
    assert dynsec.read_bytes() == site_file


def add_site_client(path: Path, username: str, password: str) -> None:
    """The site's administrator adds a client to its dynamic-security file (as `mosquitto_ctrl` would)."""
    data = json.loads(path.read_text())
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    data["clients"].append({"username": username, "roles": [], "password": base64.b64encode(digest).decode(),
                            "salt": base64.b64encode(salt).decode(), "iterations": 101})
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_a_device_never_takes_the_name_of_a_site_account(site, tmp_path, dynsec_plugin):
    """The site's dynamic-security client and password-file user, found by mosquitto-config in the site's own
    configuration: a device asking for one over HTTP gets 409 with the reason (even with a rule that would
    admit it), and a name the site creates after a device asked for it is refused at grant time, by name and
    by glob. The site's client keeps working and its file is never written."""
    if os.geteuid() != 0:
        pytest.fail("this test plays the site's administrator: run it as root (CI does)")
    db = str(tmp_path / "registry.db")
    port, http_port = free_port(), free_port()
    conf_d, secret, plugin, sock = (site / "conf.d" / "zz-client-registry.conf", site / "client-registry.secret",
                                    site / "lib" / "registry_plugin.so", site / "run" / "registry.sock")
    dynsec, passwd = site / "dynamic-security.json", site / "extra.passwd"
    site_file = site_dynsec(dynsec)
    passwd.write_text("plant-op:$7$101$c2FsdA==$aGFzaA==\n")  # another site file, named with --site-accounts
    main_conf = site / "mosquitto.conf"
    main_conf.write_text(f"plugin {dynsec_plugin}\nplugin_opt_config_file {dynsec}\ninclude_dir {conf_d.parent}\n"
                         "log_dest stderr\npersistence false\n")
    cli(db, "init")
    res = cli(db, "mosquitto-config", "--conf-d", str(conf_d), "--secret", str(secret), "--plugin", str(plugin),
              "--socket", str(sock), "--listener", f"127.0.0.1:{port}", "--site-conf", str(main_conf),
              "--site-accounts", str(passwd), "--write")
    assert f"site accounts (never taken by the registry) from: {passwd}, {dynsec}" in res.stderr
    sock.parent.mkdir(mode=0o750)
    shutil.chown(sock.parent, group="mosquitto")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CLIENT_REGISTRY_CONSOLE_PASSWORD", None)
    serve = subprocess.Popen(
        [CLI, "--db", db, "serve", "--broker-url", f"mqtt://127.0.0.1:{port}", "--plugin-socket", str(sock),
         "--socket-group", "mosquitto", "--http-bind", f"127.0.0.1:{http_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    broker = None
    site_client = None
    try:
        wait_until(lambda: (sock.parent / "accounts.snapshot").exists() or serve.poll() is not None, timeout=20,
                   message="the snapshot")
        broker = subprocess.Popen(["mosquitto", "-c", str(main_conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_port(port)
        wait_serving(serve)
        cli(db, "rule", "add", "*", "--permission", "site/#=readWrite")  # would admit anything
        cli(db, "unlock")
        reason = "this username is an account of the site's own broker, which the registry does not manage"
        for name in (SITE_USER, "plant-op"):
            status, body = post(http_port, {"username": name, "password": "device-pw-1"})
            assert (status, body.get("error"), body.get("message")) == (409, "reserved", reason), (name, body)
        cli(db, "rule", "remove", "*", "--yes")
        status, body = post(http_port, {"username": "site-later", "password": "device-pw-2"})
        assert status == 202, body
        added = subprocess.run([CLI, "--db", db, "user", "add", "shared-name", "--password-stdin"],
                               input="registry-pw-1\n", capture_output=True, text=True, timeout=60, check=False)
        assert added.returncode == 0, added.stderr
        add_site_client(dynsec, "shared-name", "the-sites-own-pw")  # a registry user's name, taken by the site
        add_site_client(dynsec, "site-later", "the-sites-own-pw")  # the site creates that name meanwhile
        reg = open_registry(db)
        try:
            wait_until(lambda: "site-later" in reg.site_accounts(), message="the server to read the site's change")
        finally:
            reg.close()
        for args in (("grant", "site-later"), ("grant", "site-*", "--yes")):
            refused = subprocess.run([CLI, "--db", db, *args], capture_output=True, text=True, timeout=60, check=False)
            assert refused.returncode == 1 and reason in refused.stderr, refused.stderr
        users = [u["name"] for u in json.loads(cli(db, "users", "--json").stdout)]
        assert SITE_USER not in users and "plant-op" not in users and "site-later" not in users
        site_client = Paho(port, SITE_USER, SITE_PASSWORD, client_id="site-admin-1").connect()
        assert site_client.connected.is_set() and site_client.subscribe("site/#") == [1]
    finally:
        if site_client is not None:
            site_client.close()
        serve.terminate()
        _, log = serve.communicate(timeout=20)
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    assert json.loads(dynsec.read_text())["clients"][0] == json.loads(site_file)["clients"][0]
    # a registry user the site later named too: said, never changed by the registry on its own
    assert "registry user(s) have the name of a site account ('shared-name')" in log, log


def test_mosquitto_config_keeps_owner_and_mode_and_running_it_twice_changes_nothing(site, tmp_path):
    """The site gave the registry's files to Mosquitto's user (0640): rewriting them keeps that, a second run
    leaves every file as it was (same bytes, owner, mode, inode), and what it prints says so; the steps name
    the registry's user for the socket folder, as the README does."""
    if os.geteuid() != 0:
        pytest.fail("this test plays the site's administrator: run it as root (CI does)")
    db = str(tmp_path / "registry.db")
    conf_d, secret, plugin, sock = (site / "conf.d" / "zz-client-registry.conf", site / "client-registry.secret",
                                    site / "lib" / "registry_plugin.so", site / "run" / "registry.sock")
    main_conf = site / "mosquitto.conf"
    main_conf.write_text(f"include_dir {conf_d.parent}\n")
    cli(db, "init")
    for path in (conf_d, secret, plugin):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# an older version\n")
        shutil.chown(path, "mosquitto", "mosquitto")
        path.chmod(0o640)
    args = ("mosquitto-config", "--conf-d", str(conf_d), "--secret", str(secret), "--plugin", str(plugin),
            "--socket", str(sock), "--listener", "127.0.0.1:1883", "--site-conf", str(main_conf), "--write")
    uid, gid = shutil._get_uid("mosquitto"), shutil._get_gid("mosquitto")

    def state(path: Path) -> tuple:
        st = path.stat()
        return path.read_bytes(), st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_ino, st.st_mtime_ns

    running = subprocess.Popen(["mosquitto", "-p", str(free_port())], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # a broker already running (the site's)
    try:
        first = cli(db, *args)
        after_first = {path: state(path) for path in (conf_d, secret, plugin)}
        second = cli(db, *args)
    finally:
        running.terminate()
        running.wait(10)
    for path, (data, owner, group, mode, _, _) in after_first.items():
        assert (owner, group, mode) == (uid, gid, 0o640), path
        assert data != b"# an older version\n", path
        assert f"wrote {path}" in first.stderr
    assert secret.read_bytes() == (tmp_path / "registry.secret").read_bytes()
    assert {path: state(path) for path in after_first} == after_first  # the second run changed nothing
    for path in after_first:
        assert f"unchanged {path}" in second.stderr and f"wrote {path}" not in second.stderr
    # what it rewrote reaches a running Mosquitto only when it restarts: said when something changed
    assert "warning: a running Mosquitto (pid " in first.stderr and "systemctl restart mosquitto" in first.stderr
    assert "warning: a running Mosquitto" not in second.stderr
    owner = Path(db).parent.owner()
    assert f"install -d -m 0750 -o {owner} -g mosquitto {sock.parent}" in second.stderr
    # Not root: a file it could not give back to its owner is refused before anything is written, naming the
    # chown to run.
    shared = site / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    theirs = shared / "zz-client-registry.conf"
    theirs.write_text("# the site's\n")
    shutil.chown(theirs, "mosquitto", "mosquitto")
    theirs.chmod(0o640)
    code = ("import sys; from pathlib import Path; from broker.mosquitto.attach import install_file\n"
            "try: install_file(Path(sys.argv[1]), b'new', mode=0o644)\n"
            "except OSError as exc: print(exc); sys.exit(1)")
    nobody = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", sys.executable,
                             "-c", code, str(theirs)], capture_output=True, text=True, timeout=60, check=False,
                            cwd=Path(__file__).parents[2])
    assert nobody.returncode == 1, nobody.stdout + nobody.stderr
    assert f"{theirs} belongs to mosquitto:mosquitto" in nobody.stdout and "chown nobody:nogroup" in nobody.stdout
    assert theirs.read_text() == "# the site's\n" and (theirs.stat().st_mode & 0o777) == 0o640
