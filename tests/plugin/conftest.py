"""Fixtures: a real Mosquitto 2 running the registry plugin (v2: accounts in the plugin) on an ephemeral
127.0.0.1 port, a real AF_UNIX datagram socket standing in for the registry service, and a paho client
that drives the plugin as the service does (control messages on $CONTROL/client-registry/v1)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.mqtt import _varint  # the one encoder of MQTT's variable-length integers
from bench.procs import free_port
from broker.mosquitto import plugin_wire as wire
from broker.mosquitto.plugin_build import plugin_path
from tests.waits import wait_until

SECRET = bytes(range(32))
SERVICE_USER, SERVICE_PASSWORD = "registry-service", "service-password"
DEVICE_USER, DEVICE_PASSWORD = "device-1", "device-password"
# CONNACK answers of Mosquitto 2.0.11 when a plugin says MOSQ_ERR_AUTH.
REFUSED = {3: 5, 4: 5, 5: 135}
ACCEPTED = 0
NO_CONNACK = None


def verifier(username: str | bytes, password: str | bytes, secret: bytes = SECRET) -> bytes:
    enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    return hmac.new(secret, enc(username) + b"\0" + enc(password), hashlib.sha256).digest()


def account(username: str, password: str, flags: int = 0, client_id: str = "",
            acls: Iterable[tuple[int, str]] = ()) -> wire.Account:
    return wire.Account(username, verifier(username, password), flags, client_id, tuple(acls))


SERVICE = account(SERVICE_USER, SERVICE_PASSWORD, wire.SERVICE, acls=[(wire.READ | wire.WRITE, "$registry/#")])
DEVICE = account(DEVICE_USER, DEVICE_PASSWORD, acls=[(wire.READ | wire.WRITE, "devices/device-1/#"),
                                                     (wire.READ, "broadcast/#")])


# --- MQTT CONNECT over a plain socket (bytes fields, so tests can send what real clients refuse to) ---

def _field(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def connect_packet(client_id: bytes, username: bytes | None = None, password: bytes | None = None, *,
                   level: int = 4, clean: bool = True) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    name = b"MQIsdp" if level == 3 else b"MQTT"
    body = _field(name) + bytes([level, flags]) + struct.pack("!H", 60)
    if level == 5:
        body += _varint(0)  # no properties
    body += _field(client_id)
    if username is not None:
        body += _field(username)
    if password is not None:
        body += _field(password)
    return bytes([0x10]) + _varint(len(body)) + body


def attempt(port: int, client_id: bytes | str, username: bytes | str | None = None,
            password: bytes | str | None = None, *, level: int = 4, timeout: float = 5.0) -> int | None:
    """Send one CONNECT; the CONNACK code (reason code for MQTT 5), or None if the broker closed
    the connection without one. Raises on timeout: the broker must always answer."""
    enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(connect_packet(enc(client_id), enc(username), enc(password), level=level))
        data = b""
        while len(data) < 4:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return NO_CONNACK
            data += chunk
        assert data[0] == 0x20, f"expected CONNACK, got {data[:8]!r}"
        return data[3]


# --- the registry's end of the plugin socket ---

class Registry:
    """A bound AF_UNIX SOCK_DGRAM socket at the path the plugin sends to; datagrams parsed by plugin_wire."""

    def __init__(self, path: Path, rcvbuf: int | None = None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(str(path))
        self.presence: list[wire.Presence] = []  # presence reports seen while waiting for something else
        self.skipped: list = []  # attempts and knocks seen while waiting for presence

    def raw(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no datagram within {timeout}s") from None

    def next(self, kind: type = wire.Attempt, timeout: float = 5.0):
        """The next datagram of this kind (Attempt, Knocks, Presence); presence reports met on the way are
        kept in self.presence, anything else of another kind fails the test."""
        deadline = time.monotonic() + timeout
        while True:
            item = wire.parse_datagram(self.raw(max(0.01, deadline - time.monotonic())))
            if isinstance(item, kind):
                return item
            if isinstance(item, wire.Presence):
                self.presence.append(item)
                continue
            if kind is wire.Presence:  # waiting for presence: attempts and knocks are not the question
                self.skipped.append(item)
                continue
            raise AssertionError(f"expected {kind.__name__}, got {item!r}")

    def changes(self, n: int, timeout: float = 5.0) -> list[tuple[bool, bytes, bytes]]:
        """The next n presence changes (across reports)."""
        out: list[tuple[bool, bytes, bytes]] = []
        for report in self.presence:
            out.extend(report.changes)
        self.presence.clear()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            report = self.next(wire.Presence, max(0.01, deadline - time.monotonic()))
            out.extend(report.changes)
        return out

    def pending(self) -> bytes | None:
        self.sock.setblocking(False)
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            return None

    def fill(self) -> int:
        """Queue junk until the socket refuses more, so every later send gets EAGAIN."""
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        sent = 0
        try:
            while True:
                sender.sendto(b"filler" * 50, str(self.path))
                sent += 1
        except BlockingIOError:
            return sent
        finally:
            sender.close()

    def drain(self) -> int:
        count = 0
        while self.pending() is not None:
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()


# --- the broker ---

def dynsec_client(username: str, password: str, iterations: int = 101, roles: list | None = None) -> dict:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"username": username, "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": iterations, "roles": roles or []}


def write_snapshot(path: Path, accounts: Iterable[wire.Account], *, seq: int = 1,
                   unlocked_until: float | None = None) -> list[bytes]:
    records = [a.record() for a in accounts]
    path.write_bytes(wire.snapshot(seq, unlocked_until, records))
    return records


class Mosquitto:
    """Mosquitto with the registry plugin. `plugin_lines` replaces the default plugin section (attach mode)."""

    def __init__(self, directory: Path, plugin: Path, socket_option: str | None = None,
                 snapshot: Path | None = None, plugin_lines: list[str] | None = None,
                 extra: list[str] | None = None, secret: bytes = SECRET):
        self.dir = directory
        self.plugin = plugin
        self.socket_option = socket_option
        self.snapshot = snapshot
        self.plugin_lines = plugin_lines
        self.extra = extra or []
        self.secret_path = directory / "registry.secret"
        self.secret_path.write_text(secret.hex() + "\n")
        self.log_path = directory / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def options(self) -> list[str]:
        lines = [f"plugin_opt_secret_file {self.secret_path}"]
        if self.snapshot is not None:
            lines.append(f"plugin_opt_snapshot {self.snapshot}")
        if self.socket_option is not None:
            lines.append(f"plugin_opt_socket {self.socket_option}")
        return lines

    def _config(self) -> str:
        lines = ["user root", "per_listener_settings false", "allow_anonymous false",
                 f"listener {self.port} 127.0.0.1", *self.extra]
        if self.plugin_lines is None:
            lines += [f"plugin {self.plugin}", *self.options()]
        else:
            lines += self.plugin_lines
        lines.append("log_dest stderr")
        lines.append("log_type all")
        return "\n".join(lines) + "\n"

    def start(self, expect_running: bool = True) -> Mosquitto:
        for _ in range(5):  # the ephemeral port can be taken between probe and bind
            self.port = free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(self._config())
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            wait_until(lambda: " running" in self.log() or self.proc.poll() is not None, 10, "mosquitto to start")
            if self.proc.poll() is None:
                return self
            if "Address already in use" not in self.log():
                if expect_running:
                    raise RuntimeError(f"mosquitto exited {self.proc.returncode}:\n{self.log()}")
                return self
        raise RuntimeError(f"mosquitto could not bind a port:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def plugin_log(self) -> list[str]:
        return [line for line in self.log().splitlines() if "registry_plugin:" in line]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- MQTT clients ---

class Client:
    """A paho client on its own network thread; messages and disconnects land in queues."""

    def __init__(self, port: int, username: str, password: str, *, client_id: str = "",
                 protocol=mqtt.MQTTv311, clean: bool = True, will: tuple[str, bytes] | None = None):
        self.messages: queue.Queue = queue.Queue()
        self.disconnected: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.published: queue.Queue = queue.Queue()
        kwargs = {"clean_session": clean} if protocol != mqtt.MQTTv5 else {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                             reconnect_on_failure=False, **kwargs)
        self.c.username_pw_set(username, password)
        if will:
            self.c.will_set(will[0], will[1], qos=0)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.on_publish = lambda c, u, mid, rc, p: self.published.put(mid)
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        try:
            self.rc = self.connack.get(timeout=10)
        except queue.Empty:
            raise AssertionError("no CONNACK") from None

    @property
    def ok(self) -> bool:
        return not self.rc.is_failure

    def subscribe(self, topic: str, qos: int = 0) -> list[int]:
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def message(self, timeout: float = 5.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_disconnect(self, timeout: float = 10.0):
        try:
            return self.disconnected.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("not disconnected") from None

    def is_connected(self) -> bool:
        return self.c.is_connected()

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


class Service(Client):
    """The registry service's end of the control topic."""

    def __init__(self, port: int, username: str = SERVICE_USER, password: str = SERVICE_PASSWORD, **kw):
        super().__init__(port, username, password, client_id=kw.pop("client_id", "registry-service"), **kw)
        self.answers: queue.Queue = queue.Queue()
        if self.ok:
            self.c.message_callback_add(wire.RESPONSE_TOPIC, lambda c, u, m: self.answers.put(m.payload))
            self.suback = self.subscribe(wire.RESPONSE_TOPIC, 1)
        self._seq = 1000

    def send_raw(self, payload: bytes) -> None:
        self.publish(wire.CONTROL_TOPIC, payload, qos=1)

    def answer(self, timeout: float = 5.0) -> wire.Answer | None:
        try:
            return wire.parse_answer(self.answers.get(timeout=timeout))
        except queue.Empty:
            return None

    def send(self, records: Iterable[bytes], seq: int | None = None) -> wire.Answer:
        if seq is None:
            self._seq += 1
            seq = self._seq
        self.send_raw(wire.control_message(seq, list(records)))
        answer = self.answer()
        assert answer is not None, "no answer from the plugin"
        assert answer.seq == seq
        return answer

    def query(self) -> wire.Answer:
        return self.send([])


# --- fixtures ---

@pytest.fixture(scope="session")
def plugin_so(tmp_path_factory) -> Path:
    for tool in ("mosquitto", "mosquitto_pub"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed (apt-get install mosquitto mosquitto-clients)")
    return plugin_path(tmp_path_factory.mktemp("plugin-cache"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="crp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clients() -> Iterator[list]:
    """Clients appended here are closed after the test."""
    started: list = []
    yield started
    for client in started:
        with contextlib.suppress(Exception):  # best-effort cleanup
            client.close()


@pytest.fixture
def start_broker(plugin_so, short_dir) -> Iterator[Callable[..., Mosquitto]]:
    """start_broker(accounts=..., unlocked_until=..., socket_option=..., ...) -> a running Mosquitto whose
    snapshot holds the service account and `accounts`."""
    started: list[Mosquitto] = []

    def start(accounts: Iterable[wire.Account] = (SERVICE, DEVICE), *, unlocked_until: float | None = None,
              socket_option: str | None = str(short_dir / "registry.sock"), snapshot: Path | None = None,
              expect_running: bool = True, **kw) -> Mosquitto:
        if snapshot is None:
            snapshot = short_dir / "snapshot.bin"
            write_snapshot(snapshot, accounts, unlocked_until=unlocked_until)
        broker = Mosquitto(short_dir, plugin_so, socket_option, snapshot, **kw)
        started.append(broker)
        return broker.start(expect_running)

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def registry(short_dir) -> Iterator[Registry]:
    reg = Registry(short_dir / "registry.sock")
    yield reg
    reg.close()


@pytest.fixture
def broker(start_broker, registry) -> Mosquitto:
    return start_broker()


@pytest.fixture
def service(broker, clients) -> Service:
    svc = Service(broker.port)
    clients.append(svc)
    assert svc.ok and svc.suback == [1]
    return svc


def dynsec_config(path: Path, clients: list[dict], roles: list[dict] | None = None) -> None:
    path.write_text(json.dumps({
        "clients": clients, "roles": roles or [], "groups": [],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
    }))
