"""Small blocking wrappers around real MQTT clients: paho-mqtt 2.x and Debian's mosquitto_pub/sub."""

from __future__ import annotations

import json
import queue
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.mqtt import _str, _varint, packet  # the one encoder of raw packets


class Paho:
    """A paho client on its own network thread, with events a test can wait on (no auto-reconnect)."""

    def __init__(self, port: int, username: str, password: str, client_id: str = "", clean: bool = True,
                 protocol: int = mqtt.MQTTv311) -> None:
        kwargs = {"clean_session": clean} if protocol != mqtt.MQTTv5 else {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                                  reconnect_on_failure=False, **kwargs)
        self.client.username_pw_set(username, password)
        self.port = port
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.answered = threading.Event()
        self.reason_code: int | None = None
        self.subacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.reason_code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        if self.reason_code == 0:
            self.connected.set()
        else:
            self.disconnected.set()
        self.answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks.put([rc.value for rc in reason_codes])

    def connect(self, timeout: float = 5.0) -> Paho:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self.answered.wait(timeout):
            raise TimeoutError("no CONNACK")
        return self

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        self.client.subscribe(topic_filter, qos)
        return self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(5)

    def next_message(self, timeout: float = 2.0):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def healthz(port: int) -> tuple[int, dict]:
    """GET /healthz: (status code, body), 503 included; (0, {"error": ...}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError as exc:
        return 0, {"error": str(exc)}


def mosquitto_pub(port: int, username: str, password: str, topic: str = "sensors/t", message: str = "hello",
                  client_id: str | None = None, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", username, "-P", password,
           "-t", topic, "-m", message, "-q", "1", *extra]
    if client_id:
        cmd += ["-i", client_id]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def mosquitto_sub_once(port: int, username: str, password: str, topic_filter: str, count: int = 1,
                       wait: int = 5, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", username, "-P", password,
           "-t", topic_filter, "-C", str(count), "-W", str(wait), "-v", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=wait + 15)


# -- additions for the Mosquitto security and recovery tests -----------------------------------------------------
class Device(Paho):
    """A Paho client with what the security tests measure: when it was disconnected (monotonic clock), the
    CONNACK's session-present flag, and a session that survives a disconnect when asked (MQTT 3.1.1 clean
    session 0, or MQTT 5 clean start 0 with a session expiry interval)."""

    def __init__(self, port: int, username: str, password: str, client_id: str = "", *, keep_session: bool = False,
                 protocol: int = mqtt.MQTTv311, session_expiry: int = 3600) -> None:
        super().__init__(port, username, password, client_id=client_id, clean=not keep_session, protocol=protocol)
        self.keep_session = keep_session
        self.protocol = protocol
        self.session_expiry = session_expiry
        self.session_present: bool | None = None
        self.disconnected_at: float | None = None

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def connect(self, timeout: float = 5.0) -> Device:
        if self.protocol != mqtt.MQTTv5:
            return super().connect(timeout)  # type: ignore[return-value]
        props = None
        if self.keep_session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=not self.keep_session,
                            properties=props)
        self.client.loop_start()
        if not self.answered.wait(timeout):
            raise TimeoutError("no CONNACK")
        return self

    @property
    def accepted(self) -> bool:
        return self.connected.is_set()

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT (a device losing power): its Will fires."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def drain(client: Paho, timeout: float = 0.5) -> list[tuple[str, bytes]]:
    """Every message the client receives until none arrives for `timeout` seconds."""
    got = []
    while (message := client.next_message(timeout=timeout)) is not None:
        got.append(message)
    return got


def raw_connect(client_id: str, username: str, password: str, *, will_topic: str | None = None,
                will_payload: bytes = b"", will_retain: bool = False, will_qos: int = 0, clean: bool = True,
                keepalive: int = 60, level: int = 4, session_expiry: int = 0) -> bytes:
    """A CONNECT packet, optionally with a Will; level 3 (MQTT 3.1), 4 (3.1.1) or 5."""
    flags = (0x02 if clean else 0) | 0x80 | 0x40
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
    body = (_str("MQIsdp") if level == 3 else _str("MQTT")) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        props = bytes([0x11]) + struct.pack("!I", session_expiry)
        body += _varint(len(props)) + props
    body += _str(client_id)
    if will_topic is not None:
        if level == 5:
            body += _varint(0)  # no Will properties
        body += _str(will_topic) + struct.pack("!H", len(will_payload)) + will_payload
    return packet(1, body + _str(username) + _str(password))


def read_packet(sock: socket.socket, timeout: float = 3.0) -> tuple[int, bytes]:
    """(first header byte, body) of the next packet; ConnectionError when the peer closed, TimeoutError."""
    sock.settimeout(timeout)

    def take(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the peer")
            data += chunk
        return data

    head = take(1)[0]
    mult, length = 1, 0
    while True:
        byte = take(1)[0]
        length += (byte & 0x7F) * mult
        if not byte & 0x80:
            break
        mult *= 128
    return head, take(length) if length else b""


def puback(packet_id: int) -> bytes:
    return packet(4, struct.pack("!H", packet_id))
