"""Small blocking wrappers around real MQTT clients: paho-mqtt 2.x and Debian's mosquitto_pub/sub."""

from __future__ import annotations

import queue
import subprocess
import threading

import paho.mqtt.client as mqtt


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

    def connect(self, timeout: float = 5.0) -> "Paho":
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
