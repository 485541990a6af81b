"""Fixtures: a real Mosquitto 2 with dynamic-security followed by the registry plugin, on an ephemeral
127.0.0.1 port, and a real AF_UNIX datagram socket standing in for the registry."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.mosquitto.plugin_build import plugin_path

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
KNOWN_USER = "known-device"
KNOWN_PASSWORD = "right-password"


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# --- MQTT CONNECT over a plain socket (bytes fields, so tests can send what real clients refuse to) ---

def _field(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


from bench.mqtt import _varint  # noqa: E402 - the one encoder of MQTT's variable-length integers


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


NO_CONNACK = None


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

@dataclass(frozen=True)
class Report:
    version: int
    username: bytes
    password: bytes
    client_id: bytes
    address: bytes


def parse_report(datagram: bytes) -> Report:
    assert datagram[:4] == b"CRK1", datagram[:16]
    version, pos, fields = datagram[4], 5, []
    for _ in range(4):
        (length,) = struct.unpack_from("!H", datagram, pos)
        pos += 2
        fields.append(datagram[pos:pos + length])
        assert len(fields[-1]) == length, "field runs past the end"
        pos += length
    assert pos == len(datagram), "trailing bytes"
    return Report(version, *fields)


class Registry:
    """A bound AF_UNIX SOCK_DGRAM socket at the path the plugin sends to."""

    def __init__(self, path: Path, rcvbuf: int | None = None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(str(path))

    def next(self, timeout: float = 5.0) -> Report:
        self.sock.settimeout(timeout)
        try:
            return parse_report(self.sock.recv(65536))
        except (TimeoutError, socket.timeout):
            raise AssertionError(f"no datagram within {timeout}s") from None

    def pending(self) -> bytes | None:
        """A datagram already queued, without waiting."""
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

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dynsec_client(username: str, password: str, iterations: int = 101) -> dict:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"username": username, "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": iterations, "roles": []}


class Mosquitto:
    def __init__(self, directory: Path, plugin: Path, socket_option: str | None):
        self.dir = directory
        self.plugin = plugin
        self.socket_option = socket_option
        self.log_path = directory / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def _config(self) -> str:
        lines = [
            "user root",
            "per_listener_settings false",
            "allow_anonymous false",
            f"listener {self.port} 127.0.0.1",
            f"plugin {DYNSEC_PLUGIN}",
            f"plugin_opt_config_file {self.dir / 'dynamic-security.json'}",
            f"plugin {self.plugin}",
        ]
        if self.socket_option is not None:
            lines.append(f"plugin_opt_socket {self.socket_option}")
        lines.append("log_dest stderr")
        return "\n".join(lines) + "\n"

    def start(self) -> "Mosquitto":
        (self.dir / "dynamic-security.json").write_text(json.dumps({
            "clients": [dynsec_client(KNOWN_USER, KNOWN_PASSWORD)],
            "roles": [], "groups": [],
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                                 "subscribe": False, "unsubscribe": True},
        }))
        for _ in range(5):  # the ephemeral port can be taken between probe and bind
            self.port = _free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(self._config())
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            wait_for(lambda: " running" in self.log() or self.proc.poll() is not None, 10, "mosquitto to start")
            if self.proc.poll() is None:
                return self
            if "Address already in use" not in self.log():
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}:\n{self.log()}")
        raise RuntimeError(f"mosquitto could not bind a port:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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


@pytest.fixture(scope="session")
def plugin_so(tmp_path_factory) -> Path:
    for tool in ("mosquitto", "mosquitto_pub"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed (apt-get install mosquitto mosquitto-clients)")
    if not os.path.exists(DYNSEC_PLUGIN):
        pytest.fail(f"{DYNSEC_PLUGIN} missing (apt-get install mosquitto)")
    return plugin_path(tmp_path_factory.mktemp("plugin-cache"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="crp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_broker(plugin_so, short_dir) -> Iterator[Callable[..., Mosquitto]]:
    """start_broker(socket_option=...) -> a running Mosquitto; default option: short_dir/registry.sock."""
    started: list[Mosquitto] = []

    def start(socket_option: str | None = str(short_dir / "registry.sock")) -> Mosquitto:
        broker = Mosquitto(short_dir, plugin_so, socket_option)
        started.append(broker)
        return broker.start()

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
