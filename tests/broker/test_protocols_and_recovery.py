"""Mosquitto under the registry, as devices and operators meet it (issue 8): the implicit flow with every
protocol version and both real clients, the HTTP explicit flow, keepalive and QoS 1 redelivery, reconcile
after hand edits of the registry plugin's accounts, and recovery when the registry service or Mosquitto is killed.

Real parts only: Debian's mosquitto (supervised by the `server` fixture or by `client-registry serve` in its
own process), mosquitto_pub/sub, paho (MQTT 3.1.1 and 5), hand-built packets, the CLI in other processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bench.procs import free_port
from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.config import SERVICE_USER
from tests.broker import mqtt_raw as raw
from tests.broker import plugin_state
from tests.broker.clients import Device, drain, healthz, mosquitto_pub, puback, raw_connect, read_packet
from tests.broker.conftest import wait_until
from tests.broker.test_mosquitto_security import NOT_AUTHORIZED, console, granted

CLI = str(Path(sys.executable).parent / "client-registry")
REGISTER = "/api/client-registry/register"


# -- 1. the implicit flow with every protocol and client ---------------------------------------------------------
class MosquittoClients:
    """mosquitto_pub / mosquitto_sub speaking one protocol version (-V 31, 311 or 5)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def attempt(self, port: int, name: str, password: str, client_id: str) -> bool:
        res = mosquitto_pub(port, name, password, topic=f"devices/{name}/hello", message="hi", client_id=client_id,
                            extra=("-V", self.version))
        return res.returncode == 0

    def subscribe_once(self, port: int, name: str, password: str, client_id: str, topic_filter: str,
                       wait: int = 5) -> subprocess.CompletedProcess:
        """Subscribe, print the first (retained) message and exit; mosquitto_sub exits at once when the
        broker refused every subscription."""
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", name, "-P", password, "-i", client_id,
               "-V", self.version, "-t", topic_filter, "-C", "1", "-W", str(wait), "-v", "-q", "1"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20)

    def use_topics(self, port: int, name: str, password: str, client_id: str, admin: Device) -> None:
        own, other = f"devices/{name}/#", "devices/someone-else/#"
        res = self.subscribe_once(port, name, password, client_id + "s", own)
        assert res.stdout.strip() == f"devices/{name}/cmd retained-cmd", res.stderr
        # MQTT 3.1 waits out -W (a window); the others exit once denied
        res = self.subscribe_once(port, name, password, client_id + "x", other, wait=1 if self.version == "31" else 10)
        assert res.stdout == "", res.stdout  # the retained message there is not delivered
        if self.version == "31":  # MQTT 3.1 has no failure code: Mosquitto grants QoS 1 and delivers nothing
            assert "Timed out" in res.stderr, res.stderr
        else:
            assert "denied" in res.stderr, res.stderr
        res = mosquitto_pub(port, name, password, topic="devices/someone-else/cmd", message="sneaky",
                            client_id=client_id + "p", extra=("-V", self.version))
        assert res.returncode == 0 or "authori" in res.stderr.lower(), res.stderr
        res = mosquitto_pub(port, name, password, topic=f"devices/{name}/up", message="marker",
                            client_id=client_id + "q", extra=("-V", self.version))
        assert res.returncode == 0, res.stderr


class PahoClients:
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol

    def attempt(self, port: int, name: str, password: str, client_id: str) -> bool:
        dev = Device(port, name, password, client_id=client_id, protocol=self.protocol)
        try:
            return dev.connect().accepted
        finally:
            dev.close()

    def use_topics(self, port: int, name: str, password: str, client_id: str, admin: Device) -> None:
        dev = Device(port, name, password, client_id=client_id, protocol=self.protocol).connect()
        try:
            assert dev.accepted
            assert dev.subscribe(f"devices/{name}/#") == [1]
            assert dev.next_message(2.0) == (f"devices/{name}/cmd", b"retained-cmd")
            assert dev.subscribe("devices/someone-else/#")[0] >= NOT_AUTHORIZED
            assert dev.subscribe("#")[0] >= NOT_AUTHORIZED
            dev.publish("devices/someone-else/cmd", "sneaky")
            dev.publish(f"devices/{name}/up", "marker")
            assert dev.next_message(2.0) == (f"devices/{name}/up", b"marker")  # its own, and nothing else
            assert drain(dev, 0.2) == []
        finally:
            dev.close()


CLIENTS = [
    pytest.param(MosquittoClients("31"), id="mosquitto_pub-V31"),
    pytest.param(MosquittoClients("311"), id="mosquitto_pub-V311"),
    pytest.param(MosquittoClients("5"), id="mosquitto_pub-V5"),
    pytest.param(PahoClients(mqtt.MQTTv311), id="paho-v311"),
    pytest.param(PahoClients(mqtt.MQTTv5), id="paho-v5"),
]


@pytest.mark.parametrize("client", CLIENTS)
def test_implicit_flow_end_to_end(server, admin_reg, client):
    name, password, cid = "flow-dev", "flow-pass-1", "flow-cid"  # MQTT 3.1 allows 23 characters of client id
    port = server.mqtt_port
    admin = console(server, "console-flow", "devices/#")
    try:
        # locked: refused and not listed (the knock is counted, so the service did handle it)
        assert not client.attempt(port, name, password, cid)
        wait_until(lambda: admin_reg.status().refused_recent >= 1, message="the locked knock counted")
        assert admin_reg.requests() == []

        # unlocked: still refused, listed as pending with the client id and peer it came with
        admin_reg.unlock(actor="test")
        server.applied(admin_reg)  # the plugin knows it is unlocked
        assert not client.attempt(port, name, password, cid)
        wait_until(lambda: admin_reg.requests() != [], message="the pending request")
        [req] = admin_reg.requests()
        assert (req.username, req.status, req.source, req.client_id, req.peer) == \
            (name, "pending", "mqtt", cid, "127.0.0.1")

        # granted with a template: the account appears in Mosquitto, the next connect succeeds
        [item] = admin_reg.grant([name], [("devices/{username}/#", "readWrite")], actor="test")
        assert item.ok, item.message
        wait_until(lambda: server.srv.accounts.has_account(name), message=f"{name}'s account in Mosquitto")
        assert client.attempt(port, name, password, cid)
        if isinstance(client, MosquittoClients):  # that mosquitto_pub published on its own topic
            assert admin.next_message(2.0) == (f"devices/{name}/hello", b"hi")

        # inside devices/flow-dev/# only
        admin.client.publish(f"devices/{name}/cmd", b"retained-cmd", qos=1, retain=True).wait_for_publish(5)
        admin.client.publish("devices/someone-else/cmd", b"retained-other", qos=1, retain=True).wait_for_publish(5)
        assert sorted(drain(admin, 0.3)) == [("devices/flow-dev/cmd", b"retained-cmd"),
                                             ("devices/someone-else/cmd", b"retained-other")]
        client.use_topics(port, name, password, cid, admin)
        got = []
        deadline = time.monotonic() + 5
        while (f"devices/{name}/up", b"marker") not in got and time.monotonic() < deadline:
            got += drain(admin, 0.2)
        assert (f"devices/{name}/up", b"marker") in got
        assert ("devices/someone-else/cmd", b"sneaky") not in got + drain(admin, 0.2), got
    finally:
        admin.close()


# -- 2. the HTTP explicit flow -----------------------------------------------------------------------------------
def post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{REGISTER}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_explicit_flow_then_mqtt_with_exactly_the_requested_topics(server, admin_reg):
    name, password = "http-dev", "http-pass-1"
    requested = [{"resource": f"devices/{name}/#", "operation": "readWrite"},
                 {"resource": "news/today", "operation": "read"},
                 {"resource": "reports/http-dev", "operation": "write"}]
    body = {"username": name, "password": password, "permissions": requested}
    port = server.http_port
    admin = console(server, "console-http", "#", "$registry/v1/events/request.granted")
    try:
        assert post(port, body)[0] == 423
        admin_reg.unlock(actor="test")
        server.applied(admin_reg)  # the plugin knows it is unlocked
        status, answer = post(port, body)
        assert status == 202 and answer["status"] == "pending", answer
        [item] = admin_reg.grant([name], None, actor="test")  # what the device asked for
        assert item.ok, item.message
        answers = []
        wait_until(lambda: answers.append(post(port, body)) or answers[-1][0] == 201, message="201 from the poll")
        assert sorted(answers[-1][1]["permissions"], key=str) == sorted(requested, key=str)
        # (connecting before the service applied the grant is test_device_admitted_before_the_grant_is_applied...)
        wait_event(admin, "request.granted")
        use_requested_topics(server, admin, name, password)
    finally:
        admin.close()


def wait_event(admin: Device, kind: str, timeout: float = 5.0) -> dict:
    """The next `$registry/v1/events/<kind>` the admin receives (other messages are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        got = admin.next_message(timeout=left)
        if got is not None and got[0] == f"$registry/v1/events/{kind}":
            return json.loads(got[1])
    raise AssertionError(f"no {kind} event within {timeout} s")


def use_requested_topics(server, admin: Device, name: str, password: str) -> None:
    dev = Device(server.mqtt_port, name, password, client_id="http-dev-1").connect()
    try:
        assert dev.accepted, "the HTTP-granted credentials do not log in over MQTT"
        assert dev.subscribe(f"devices/{name}/#") == [1]
        assert dev.subscribe("news/today") == [1]
        assert dev.subscribe("news/#")[0] >= NOT_AUTHORIZED  # wider than requested
        assert dev.subscribe("reports/http-dev")[0] >= NOT_AUTHORIZED  # write only
        admin.publish("news/today", "sunny")
        admin.publish("news/tomorrow", "rain")
        dev.publish("news/today", "forged-news")  # read only: dropped
        dev.publish("reports/http-dev", "report-1")  # write only: delivered to the admin
        dev.publish(f"devices/{name}/up", "marker")
        got = []
        deadline = time.monotonic() + 5
        while (f"devices/{name}/up", b"marker") not in got and time.monotonic() < deadline:
            got += drain(admin, 0.2)
        assert ("reports/http-dev", b"report-1") in got and ("news/today", b"forged-news") not in got, got
        received = drain(dev, 0.3)
        assert ("news/today", b"sunny") in received and (f"devices/{name}/up", b"marker") in received
        assert ("news/tomorrow", b"rain") not in received and ("reports/http-dev", b"report-1") not in received
    finally:
        dev.close()


@pytest.fixture
def slow_relay_server(db_path, admin_reg):
    """The server with its changelog polled every 0.5 s, as on a loaded host: what a device does between the
    operator's grant and the service applying it becomes visible."""
    from tests.broker.conftest import ServerThread

    st = ServerThread(db_path, relay_interval=0.5).start()
    yield st
    st.stop()


@pytest.mark.parametrize("path", ["http", "mqtt"])
def test_device_admitted_before_the_grant_is_applied_is_not_kicked_by_it(slow_relay_server, admin_reg, path):
    """A device that proves its password right after the grant (HTTP poll answering 201, or a forwarded MQTT
    attempt) gets its account at once; when the service then applies the `request.granted` event it must not
    disconnect the session that is already in (a P record that changes the verifier, flags or client id
    kicks the account's sessions in the plugin; the same account again must not)."""
    server = slow_relay_server
    name, password = f"early-{path}", "early-pass-1"
    body = {"username": name, "password": password,
            "permissions": [{"resource": f"devices/{name}/#", "operation": "readWrite"}]}
    admin = console(server, "console-early", "$registry/v1/events/#")
    dev = None
    try:
        admin_reg.unlock(actor="test")
        server.applied(admin_reg)  # the plugin knows it is unlocked
        if path == "http":
            assert post(server.http_port, body)[0] == 202
        else:
            assert not PahoClients(mqtt.MQTTv311).attempt(server.mqtt_port, name, password, "early-0")
        # The attempt woke the relay, which has just published it: its next look at the changelog is 0.5 s
        # away, and the grant, the device's proof and its connect all happen well within that.
        wait_event(admin, "request.created")
        [item] = admin_reg.grant([name], [("devices/{username}/#", "readWrite")], actor="test")
        assert item.ok, item.message
        if path == "http":
            wait_until(lambda: post(server.http_port, body)[0] == 201, message="201 from the poll")
        # a device retrying at once: its forwarded attempt brings the account in, the next gets in
        for attempt in range(3):
            dev = Device(server.mqtt_port, name, password, client_id=f"early-{attempt}").connect()
            if dev.accepted:
                break
            dev.close()
            wait_until(lambda: server.srv.accounts.has_account(name), message="the account")
        assert dev.accepted
        assert dev.subscribe(f"devices/{name}/#") == [1]
        wait_event(admin, "request.granted")  # the service has applied the grant now
        assert not dev.disconnected.wait(0.5), "the session was disconnected when the grant was applied"
        assert dev.subscribe(f"devices/{name}/x") == [1]
    finally:
        if dev is not None:
            dev.close()
        admin.close()


# -- 4d. keepalive -------------------------------------------------------------------------------------------------
def test_keepalive_closes_a_silent_client_and_fires_its_will(server, admin_reg):
    """MQTT: a server closes a client that sends nothing for 1.5 x keepalive, and its Will fires. Mosquitto
    2.0.11 looks for such clients in a sweep every 5 s (src/keepalive.c: `last_keepalive_check + 5 <= now`)
    and counts whole seconds, so a 2 s keepalive is closed after more than 3 s and at most about 9 s later,
    depending on where its silence falls between two sweeps (measured 3.7-8.9 s); never before 1.5 x."""
    name, password = "silent-dev", "silent-pass-1"
    granted(server, admin_reg, name, password, (f"devices/{name}/#", "readWrite"))
    admin = console(server, "console-keepalive", f"devices/{name}/#")
    sock = raw.open_socket(server.mqtt_port)
    try:
        sock.sendall(raw_connect("silent-1", name, password, keepalive=2, will_topic=f"devices/{name}/status",
                                 will_payload=b"offline", will_qos=1))
        head, body = read_packet(sock)
        assert head == 0x20 and body[1] == 0
        start = time.monotonic()
        assert raw.closed_by_peer(sock, 12.0), "a silent client was never disconnected"
        elapsed = time.monotonic() - start
        print(f"\nkeepalive 2 s: closed after {elapsed:.2f} s")
        assert 3.0 - 0.05 <= elapsed <= 3.0 + 5.0 + 1.5, f"closed after {elapsed:.2f} s"
        assert admin.next_message(2.0) == (f"devices/{name}/status", b"offline")
    finally:
        sock.close()
        admin.close()


# -- 4e. QoS 1 redelivery ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [pytest.param(mqtt.MQTTv311, id="mqtt311"), pytest.param(mqtt.MQTTv5, id="mqtt5")])
def test_qos1_published_while_offline_is_delivered_after_reconnect(server, admin_reg, protocol):
    name, password = "queue-dev", "queue-pass-1"
    granted(server, admin_reg, name, password, (f"devices/{name}/#", "readWrite"))
    admin = console(server, "console-queue", "nothing/here")
    try:
        dev = Device(server.mqtt_port, name, password, client_id="queue-1", keep_session=True,
                     protocol=protocol).connect()
        assert dev.accepted and dev.subscribe(f"devices/{name}/cmd", qos=1) == [1]
        dev.close()
        sent = [f"cmd-{i}".encode() for i in range(5)]
        for payload in sent:
            admin.publish(f"devices/{name}/cmd", payload, qos=1)
        dev = Device(server.mqtt_port, name, password, client_id="queue-1", keep_session=True,
                     protocol=protocol).connect()
        try:
            assert dev.accepted and dev.session_present
            got = [dev.next_message(3.0) for _ in sent]
            assert got == [(f"devices/{name}/cmd", p) for p in sent]
        finally:
            dev.close()
    finally:
        admin.close()


def test_qos1_in_flight_is_redelivered_after_the_connection_drops(server, admin_reg):
    """A QoS 1 PUBLISH the device received but never acknowledged comes again, marked DUP, when it reconnects
    with its session."""
    name, password = "inflight-dev", "inflight-pass-1"
    granted(server, admin_reg, name, password, (f"devices/{name}/#", "readWrite"))
    admin = console(server, "console-inflight", "nothing/here")
    sock = raw.open_socket(server.mqtt_port)
    try:
        sock.sendall(raw_connect("inflight-1", name, password, clean=False))
        assert read_packet(sock)[1][1] == 0
        sock.sendall(raw.subscribe(1, f"devices/{name}/cmd", qos=1))
        head, body = read_packet(sock)
        assert head == 0x90 and body[-1] == 1, (hex(head), body)
        admin.publish(f"devices/{name}/cmd", "must-arrive", qos=1)
        head, body = read_packet(sock)
        assert head & 0xF0 == 0x30 and (head >> 1) & 3 == 1 and body.endswith(b"must-arrive")
        sock.close()  # no PUBACK, no DISCONNECT

        sock = raw.open_socket(server.mqtt_port)
        sock.sendall(raw_connect("inflight-1", name, password, clean=False))
        head, body = read_packet(sock)
        assert head == 0x20 and body == b"\x01\x00"  # session present
        head, body = read_packet(sock)
        assert head & 0xF0 == 0x30 and head & 0x08, f"no DUP redelivery: {head:#x}"
        assert body.endswith(b"must-arrive")
        packet_id = body[2 + int.from_bytes(body[:2], "big"):][:2]
        sock.sendall(puback(int.from_bytes(packet_id, "big")))
    finally:
        sock.close()
        admin.close()


# -- 5. reconcile --------------------------------------------------------------------------------------------------
def test_reconcile_repairs_hand_edits_of_the_plugins_accounts(server, admin_reg):
    """The plugin's accounts drifted by hand (control messages the service did not send): its copy then
    disagrees with what Mosquitto holds, and reconcile (the plugin's count and digest against the copy, the
    copy against the store) puts Mosquitto back to exactly the registry's accounts."""
    name, password = "drift-dev", "drift-pass-1"
    port = server.mqtt_port
    granted(server, admin_reg, name, password, (f"devices/{name}/#", "readWrite"))
    want = plugin_state.expected_account(admin_reg, name)
    assert plugin_state.plugin_agrees(server)

    # 1. its account deleted by hand: the device is refused, reconcile brings the account back
    before = plugin_state.by_hand(server)
    answer = plugin_state.by_hand(server, wire.delete_record(name))
    assert answer.status == 0 and answer.accounts == before.accounts - 1
    assert not plugin_state.plugin_agrees(server)
    dev = Device(port, name, password, client_id="drift-0").connect()
    dev.close()
    assert not dev.accepted  # (the hand edit did take effect)
    assert server.call(server.srv.reconcile()) >= 1
    assert plugin_state.plugin_agrees(server)
    assert plugin_state.account(server, name) == want
    dev = Device(port, name, password, client_id="drift-1").connect()
    dev.close()
    assert dev.accepted, "refused after reconcile brought the account back"

    # 2. an account put by hand that is no registry user (with the device's ACLs), and
    # 3. the device's own account widened by hand
    intruder = plugin_state.record_for("intruder", admin_reg.verifier_of("intruder", "intruder-pass-1"),
                                       acls=want.acls)
    widened = plugin_state.record_for(name, want.verifier.hex(), acls=((plugin_state.READ_WRITE, "#"),))
    assert plugin_state.by_hand(server, intruder, widened).status == 0
    probe = Device(port, "intruder", "intruder-pass-1", client_id="intruder-1").connect()
    probe.close()
    assert probe.accepted  # (the hand edit did take effect)
    dev = Device(port, name, password, client_id="drift-w").connect()
    try:
        assert dev.accepted and dev.subscribe("#") == [1]  # (so did this one)
    finally:
        dev.close()
    before = len(server.lines)
    fixes = server.call(server.srv.reconcile())
    assert fixes >= 1
    assert plugin_state.plugin_agrees(server)
    assert server.call(server.srv.reconcile()) == 0  # and then nothing is left to fix
    assert any("accounts loaded into Mosquitto" in line for line in server.lines[before:])
    assert "intruder" not in server.srv.accounts.records and SERVICE_USER in server.srv.accounts.records
    assert plugin_state.account(server, name) == want
    probe = Device(port, "intruder", "intruder-pass-1", client_id="intruder-2").connect()
    probe.close()
    assert not probe.accepted
    dev = Device(port, name, password, client_id="drift-2").connect()
    try:
        assert dev.accepted and dev.subscribe("#")[0] >= NOT_AUTHORIZED
        assert dev.subscribe(f"devices/{name}/#") == [1]
    finally:
        dev.close()


# -- 6. the registry service killed --------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        return b"mosquitto" in Path(f"/proc/{pid}/cmdline").read_bytes() and \
            Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Served:
    """`client-registry serve` in its own process on fixed ports (so it can be started again on them), its
    output in a file; remembers every process to clean up, the orphaned Mosquitto included."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db = str(tmp_path / "registry.db")
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.mosquitto_pids: set[int] = set()
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen:
        log = self.dir / f"serve-{len(self.procs)}.log"
        self.logs.append(log)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CLIENT_REGISTRY_CONSOLE_PASSWORD", None)
        with open(log, "w") as out:
            proc = subprocess.Popen([CLI, "--db", self.db, "serve", "--mqtt-bind", f"127.0.0.1:{self.mqtt_port}",
                                     "--http-bind", f"127.0.0.1:{self.http_port}"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = log.read_text()
            if re.search(r"client-registry serving: mqtt", text):
                self.mosquitto_pids.add(self.mosquitto_pid())
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"serve did not start (exit {proc.poll()}):\n{log.read_text()}")

    def mosquitto_pid(self) -> int:
        return int((self.dir / "registry.mosquitto.pid").read_text().strip())

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([CLI, "--db", self.db, *args], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"client-registry {' '.join(args)}: {res.stderr}"
        return res

    def attempt(self, name: str, password: str) -> bool:
        return mosquitto_pub(self.mqtt_port, name, password, topic=f"devices/{name}/hello").returncode == 0

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pid in self.mosquitto_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path)
    yield s
    s.cleanup()


def _granted_then_service_killed(served: Served, name: str, password: str) -> int:
    """serve; a device knocks while unlocked and is granted from the CLI; then SIGKILL the service. Returns the
    pid of the Mosquitto it leaves behind."""
    proc = served.start()
    served.cli("unlock")
    assert not served.attempt(name, password)
    served.cli("grant", name, "--permission", "devices/{username}/#=readWrite")
    wait_until(lambda: served.attempt(name, password), timeout=10, message="the granted device connects")
    mosquitto = served.mosquitto_pid()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return mosquitto


def test_service_killed_mosquitto_keeps_admitting_granted_and_refusing_unknown(served):
    name, password = "kept-dev", "kept-pass-1"
    mosquitto = _granted_then_service_killed(served, name, password)
    assert pid_alive(mosquitto), "the supervised Mosquitto died with the service"
    assert served.attempt(name, password), "the granted device is refused while the service is down"
    slowest = 0.0
    for i in range(20):
        sock = raw.open_socket(served.mqtt_port)
        try:
            start = time.monotonic()
            sock.sendall(raw.connect(f"unknown-{i}", f"unknown-{i}", "whatever-1"))
            rc = raw.read_connack(sock, timeout=2.0)
            elapsed = time.monotonic() - start
        finally:
            sock.close()
        assert rc == 5, f"attempt {i}: CONNACK {rc}"
        assert elapsed < 2.0
        slowest = max(slowest, elapsed)
    assert not served.attempt("unknown-x", "whatever-1")  # a real client too
    print(f"\nservice down: 20 unknown names refused, slowest in {slowest * 1000:.1f} ms")
    assert pid_alive(mosquitto)


def test_serve_again_replaces_the_orphaned_mosquitto(served):
    name, password = "again-dev", "again-pass-1"
    orphan = _granted_then_service_killed(served, name, password)
    assert pid_alive(orphan)
    served.start()  # same database, same ports
    assert served.mosquitto_pid() != orphan
    wait_until(lambda: not pid_alive(orphan), message="the orphaned Mosquitto stopped")
    assert served.attempt(name, password), "the granted device is refused after the service came back"


# -- 7. Mosquitto killed -----------------------------------------------------------------------------------------
def test_mosquitto_killed_is_restarted_and_devices_come_back(server, admin_reg):
    name, password = "phoenix-dev", "phoenix-pass-1"
    granted(server, admin_reg, name, password, (f"devices/{name}/#", "readWrite"))
    supervisor = server.srv.supervisor
    assert healthz(server.http_port)[0] == 200
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            code, body = healthz(server.http_port)
            seen.append((code, body.get("broker_state")))
            stop.wait(0.05)

    # what a restarted Mosquitto loads: the snapshot, written about a second behind the plugin's changes
    snapshot = server.srv.accounts.snapshot_path
    wait_until(lambda: plugin_state.read_snapshot(snapshot)[2].get(name) == server.srv.accounts.records[name],
               message="the device's account in the snapshot")
    watcher = threading.Thread(target=watch, daemon=True)
    old_pid = supervisor.proc.pid
    watcher.start()
    try:
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: supervisor.restarts == 1 and server.srv.broker_state == "running", timeout=15,
                   message="Mosquitto restarted")
    finally:
        stop.set()
        watcher.join(10)
    assert supervisor.proc.pid != old_pid
    assert (503, "restarting") in seen, f"healthz never said the broker was down: {sorted(set(seen))}"
    code, body = healthz(server.http_port)
    assert code == 200 and body["broker_state"] == "running"

    # the fleet comes back: the granted device connects, the relay's events flow again
    wait_until(lambda: server.srv.link.connected.is_set(), message="the service's link back")
    dev = Device(server.mqtt_port, name, password, client_id="phoenix-1").connect()
    try:
        assert dev.accepted, "the granted device is refused after Mosquitto restarted"
    finally:
        dev.close()
    admin = console(server, "console-phoenix", "$registry/v1/events/#")
    try:
        admin_reg.unlock(actor="test")
        server.applied(admin_reg)  # the plugin knows it is unlocked
        got = []
        deadline = time.monotonic() + 5
        while not any(t.endswith("registry.unlocked") for t, _ in got) and time.monotonic() < deadline:
            got += drain(admin, 0.2)
        assert any(t.endswith("registry.unlocked") for t, _ in got), got
    finally:
        admin.close()
