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
import tempfile
from pathlib import Path

import pytest

from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.config import SERVICE_USER
from store import open_registry
from store.console import CONSOLE_USER
from tests.broker import plugin_state
from tests.broker.clients import Paho, drain, mosquitto_pub
from tests.broker.conftest import wait_until
from tests.broker.test_presence import online, presence_of, presence_source
from tests.broker.test_serve import CLI, wait_serving
from tests.tui.conftest import free_port, wait_port

DYNSEC_SO = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
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


def test_mosquitto_config_then_serve_attached_beside_the_sites_dynamic_security(site, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test plays the site's administrator: run it as root (CI does)")
    if not DYNSEC_SO.is_file():
        pytest.fail(f"{DYNSEC_SO} is missing: apt-get install mosquitto")
    db = str(tmp_path / "registry.db")
    port, http_port = free_port(), free_port()
    conf_d, secret, plugin, sock = (site / "conf.d" / "zz-client-registry.conf", site / "client-registry.secret",
                                    site / "lib" / "registry_plugin.so", site / "run" / "registry.sock")
    snapshot = sock.parent / "accounts.snapshot"
    dynsec = site / "dynamic-security.json"
    site_file = site_dynsec(dynsec)
    main_conf = site / "mosquitto.conf"  # the site's own: its dynamic security, then conf.d (ours is in it)
    main_conf.write_text(f"plugin {DYNSEC_SO}\nplugin_opt_config_file {dynsec}\ninclude_dir {conf_d.parent}\n"
                         "log_dest stderr\npersistence false\n")

    cli(db, "init")
    res = cli(db, "mosquitto-config", "--conf-d", str(conf_d), "--secret", str(secret), "--plugin", str(plugin),
              "--socket", str(sock), "--listener", f"127.0.0.1:{port}", "--write")
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
    assert "dynamic" not in snippet.lower() and str(dynsec) not in res.stdout + res.stderr
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
