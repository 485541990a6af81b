"""Issue 18 item 1: TLS by flags. `tls init` makes the site CA and a server certificate; `serve --tls` adds a TLS
listener to its Mosquitto and `--http-tls` serves the registration API over HTTPS; `--mqtt-bind none` leaves no
plain listener on the network. Real `serve`, real Mosquitto, real TLS clients (mosquitto_pub --cafile, curl
--cacert, the dashboard's paho listener over mqtts://)."""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker.address import parse_mqtt_url
from store import open_registry
from store.console import read_console_credentials
from tests.broker.conftest import wait_until
from tui.listener import EventListener, MqttTarget
from tui.messages import ListenerState, ServiceStatus

CLI = str(Path(sys.executable).parent / "client-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "--db", db, *args], capture_output=True, text=True, timeout=60, check=False)


def tls_init(db: str) -> subprocess.CompletedProcess:
    res = cli(db, "tls", "init", "--name", "127.0.0.1", "--name", "localhost")
    assert res.returncode == 0, res.stderr
    return res


def network_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: only the route is looked up
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def pub_tls(port: int, ca: Path, name: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "--cafile", str(ca), "-h", "127.0.0.1", "-p", str(port), "-u", name,
                           "-P", password, "-t", f"devices/{name}/hello", "-m", "hi", "-q", "1"],
                          capture_output=True, text=True, timeout=20, check=False)


def register(http_port: int, ca: Path, name: str, password: str) -> int:
    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(ca),
                          "-X", "POST", f"https://127.0.0.1:{http_port}/api/client-registry/register",
                          "-H", "content-type: application/json",
                          "-d", json.dumps({"username": name, "password": password})],
                         capture_output=True, text=True, timeout=20, check=False)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


@pytest.fixture
def tls_served(tmp_path):
    """`serve --tls --http-tls --mqtt-bind none` on the files `tls init` made."""
    db = str(tmp_path / "registry.db")
    tls_init(db)
    tls_port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CLIENT_REGISTRY_CONSOLE_PASSWORD", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([CLI, "--db", db, "serve", "--tls", "--http-tls", "--mqtt-bind", "none",
                                 "--mqtt-tls-bind", f"127.0.0.1:{tls_port}", "--http-bind", f"127.0.0.1:{http_port}",
                                 "--mosquitto-user", "root" if os.geteuid() == 0 else os.environ.get("USER", "")],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "client-registry serving" in log.read_text() or proc.poll() is not None, timeout=30,
                   message="serve to start")
        assert proc.poll() is None, log.read_text()
        yield db, tls_port, http_port, log.read_text()
    finally:
        proc.terminate()
        proc.wait(20)


def test_tls_init_writes_private_files_once_and_says_what_next(tmp_path):
    db = str(tmp_path / "registry.db")
    out = tls_init(db).stdout
    for name in ("tls-ca.pem", "tls-ca.key", "tls-server.pem", "tls-server.key", "tls-crl.pem"):
        path = tmp_path / f"registry.{name}"
        assert str(path) in out
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 in (0, 0o040), (name, oct(mode))  # the owner's, at most Mosquitto's group may read
    assert stat.S_IMODE((tmp_path / "registry.tls-ca.key").stat().st_mode) == 0o600  # never Mosquitto's
    assert "serve" in out and "--tls" in out and "mosquitto_pub --cafile" in out
    before = (tmp_path / "registry.tls-ca.key").read_bytes()
    again = cli(db, "tls", "init")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "exists already" in again.stderr
    assert (tmp_path / "registry.tls-ca.key").read_bytes() == before  # never overwritten
    bad = cli(str(tmp_path / "other.db"), "tls", "init", "--name", "no such host")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, code, said", [
    (["--tls"], 1, "registry.tls-server.pem not found"),
    (["--tls-cert", "CERT", "--tls-key", "CA_KEY"], 1, "is not the key of"),
    (["--tls-cert", "CERT", "--tls-key", "MISSING"], 1, "MISSING not found"),
    (["--tls-cert", "CERT"], 2, "--tls-cert needs --tls-key"),
    (["--mqtt-bind", "none"], 2, "--mqtt-bind none leaves devices nowhere"),
    (["--tls-require-certificate"], 2, "needs a certificate"),
    (["--tls-cert", "CERT", "--tls-key", "KEY", "--tls-require-certificate"], 1, "needs the CA"),
    (["--tls", "--mqtt-tls-bind", "127.0.0.1:99999"], 2, "invalid port"),
], ids=["no-init-files", "key-of-another", "missing-key", "no-key", "nothing-to-listen", "require-no-cert",
        "require-no-ca", "bad-port"])
def test_unusable_tls_options_are_one_line_before_anything_starts(tmp_path, args, code, said):
    made = tmp_path / "made" / "registry.db"
    made.parent.mkdir()
    tls_init(str(made))
    names = {"CERT": "registry.tls-server.pem", "KEY": "registry.tls-server.key", "CA_KEY": "registry.tls-ca.key",
             "MISSING": "gone.key"}
    args = [str(made.parent / names[a]) if a in names else a for a in args]
    said = said.replace("MISSING", str(made.parent / "gone.key"))
    db = str(tmp_path / "registry.db")
    res = cli(db, "serve", "--mqtt-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0", *args)
    assert res.returncode == code, res.stderr
    assert res.stderr.count("\n") == 1 and said in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "registry.mosquitto.conf").exists()  # nothing started


def test_devices_register_and_connect_over_tls_only(tls_served, tmp_path):
    db, tls_port, http_port, log = tls_served
    ca = tmp_path / "registry.tls-ca.pem"
    assert f"mqtts://127.0.0.1:{tls_port}" in log and "https 127.0.0.1" in log

    # No plain listener on the network: Mosquitto's only plain one is the service's, on loopback.
    conf = (tmp_path / "registry.mosquitto.conf").read_text()
    listeners = re.findall(r"^listener (\d+) (\S+)$", conf, re.MULTILINE)
    service_port = next(int(port) for port, host in listeners if int(port) != tls_port)
    assert sorted(host for _, host in listeners) == ["127.0.0.1", "127.0.0.1"]
    assert "set_tcp_nodelay true" in conf and f"crlfile {tmp_path / 'registry.tls-crl.pem'}" in conf
    assert "use_identity_as_username" not in conf
    outside = network_address()
    if outside is not None:  # from the network, the service's port is refused at the TCP level
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, service_port), timeout=2).close()
    plain = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls_port), "-u", "x", "-P", "y",
                            "-t", "t", "-m", "m"], capture_output=True, text=True, timeout=20, check=False)
    assert plain.returncode != 0  # plain MQTT on the TLS port gets nowhere

    # The explicit flow over HTTPS: 423 locked, 202 pending, 201 once granted.
    assert register(http_port, ca, "https-dev", "https-secret-1") == 423
    assert cli(db, "unlock").returncode == 0
    assert register(http_port, ca, "https-dev", "https-secret-1") == 202
    health = subprocess.run(["curl", "-s", "--cacert", str(ca), f"https://127.0.0.1:{http_port}/healthz"],
                            capture_output=True, text=True, timeout=20, check=False)
    assert json.loads(health.stdout)["mqtt_tls"] == f"mqtts://127.0.0.1:{tls_port}"

    # The implicit flow over TLS: a knock, a grant, then the connect succeeds.
    assert pub_tls(tls_port, ca, "tls-dev", "tls-secret-1").returncode != 0
    wait_until(lambda: "tls-dev" in cli(db, "requests").stdout, timeout=10, message="the TLS knock recorded")
    res = cli(db, "grant", "tls-dev", "https-dev", "--yes", "-p", "devices/{username}/#=readWrite")
    assert res.returncode == 0, res.stderr
    assert pub_tls(tls_port, ca, "tls-dev", "tls-secret-1").returncode == 0
    assert register(http_port, ca, "https-dev", "https-secret-1") == 201
    assert pub_tls(tls_port, ca, "https-dev", "https-secret-1").returncode == 0

    # The dashboard's listener over mqtts://, trusting the site CA beside the database.
    from tui.launch import tls_ca

    reg = open_registry(db)
    try:
        creds = read_console_credentials(reg)
    finally:
        reg.close()
    assert creds is not None
    target = MqttTarget.parse(f"mqtts://127.0.0.1:{tls_port}", tls_ca(db, None)).with_credentials(
        creds.username, creds.password)
    heard: list = []
    stop = threading.Event()
    listener = EventListener(target, heard.append, stop.is_set)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: any(isinstance(m, ServiceStatus) and m.state == "running" for m in heard), timeout=10,
                   message=f"the service's status over mqtts:// ({heard})")
        status = next(m for m in heard if isinstance(m, ServiceStatus))
        assert status.tls == f"mqtts://127.0.0.1:{tls_port}"  # what the dashboard's header names
        assert status.http.startswith("https://")  # --http-tls: the header says the API is HTTPS
    finally:
        stop.set()
        thread.join(10)
    assert not any(isinstance(m, ListenerState) and m.state == "refused" for m in heard)

    # `simulate` over mqtts:// (the tls init CA beside the database): its device knocks over TLS, gets in.
    sim = subprocess.Popen([CLI, "--db", db, "simulate", "-n", "1", "--prefix", "simtls", "--until-admitted",
                            "--mqtt", f"mqtts://127.0.0.1:{tls_port}"], stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "simtls-" in cli(db, "requests").stdout, timeout=15, message="the simulated knock")
        assert cli(db, "grant", "simtls-*", "--yes").returncode == 0
        assert sim.wait(30) == 0
        assert "got in" in sim.stdout.read()
    finally:
        sim.kill()
        sim.wait()


def test_mqtts_urls():
    url = parse_mqtt_url("mqtts://dash:pw@broker.example")
    assert (url.host, url.port, url.tls, url.username) == ("broker.example", 8883, True, "dash")
    assert parse_mqtt_url("mqtt://h").tls is False and parse_mqtt_url("mqtt://h").port == 1883
    assert MqttTarget.parse("mqtts://h:9000", "/ca.pem").address == "mqtts://h:9000"
    assert MqttTarget.parse("mqtt://h", "/ca.pem").ca is None  # a CA only matters over TLS


def test_wrong_ca_is_refused_by_the_dashboard_listener(tmp_path):
    """A broker whose certificate the CA did not sign is never talked to: the listener says why and retries."""
    other = tmp_path / "other" / "registry.db"
    other.parent.mkdir()
    tls_init(str(other))
    port = free_port()
    conf = tmp_path / "m.conf"
    user = pwd.getpwuid(os.getuid()).pw_name  # (as root Mosquitto would drop to `mosquitto`, who cannot enter tmp)
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {user}\n"
                    f"certfile {tmp_path / 'other' / 'registry.tls-server.pem'}\n"
                    f"keyfile {tmp_path / 'other' / 'registry.tls-server.key'}\n")
    mine = tmp_path / "registry.db"
    tls_init(str(mine))
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port), message="mosquitto")
        heard: list = []
        stop = threading.Event()
        from tui.launch import tls_ca

        listener = EventListener(MqttTarget.parse(f"mqtts://127.0.0.1:{port}", tls_ca(str(mine), None)),
                                 heard.append, stop.is_set, backoff_first=0.2, backoff_max=0.5)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: any(isinstance(m, ListenerState) and "certificate" in str(m.detail) for m in heard),
                       timeout=10, message=f"the refusal said ({heard})")
        finally:
            stop.set()
            thread.join(10)
        assert not any(isinstance(m, ListenerState) and m.state == "connected" for m in heard)
    finally:
        broker.terminate()
        broker.wait(10)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False



def test_the_dashboard_does_not_embed_a_second_server_beside_a_tls_only_service(tls_served, tmp_path):
    """Nothing answers on 127.0.0.1:1883 (`--mqtt-bind none`), yet the database's Mosquitto runs: the dashboard
    says where to connect instead of taking over the service's files and stopping its Mosquitto."""
    from tui.launch import LaunchError, prepare_dashboard

    db, tls_port, _http_port, _log = tls_served
    conf = (tmp_path / "registry.mosquitto.conf").read_text()
    with pytest.raises(LaunchError, match=r"a service runs this database's Mosquitto .* --mqtt \(mqtts://"):
        prepare_dashboard(db, None, http_bind="none")
    assert (tmp_path / "registry.mosquitto.conf").read_text() == conf
    assert pub_tls(tls_port, tmp_path / "registry.tls-ca.pem", "nobody", "pw-123456").returncode == 5  # running
