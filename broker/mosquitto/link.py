"""The service's own MQTT connection to Mosquitto (the service account): the registry plugin's control messages with
their answers, and event publications. paho runs its network loop on its own thread and reconnects by itself; asyncio
callers await futures resolved from that thread."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future

import paho.mqtt.client as mqtt

from .plugin_wire import CONTROL_TOPIC, RESPONSE_TOPIC, Answer, WireError, control_message, parse_answer

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0


class LinkError(Exception):
    """The broker could not be reached or did not answer; str() is one line."""


class BrokerLink:
    def __init__(self, host: str, port: int, username: str, password: str,
                 on_connected: Callable[[bool], None] | None = None) -> None:
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        self.port = port
        self.on_connected = on_connected or (lambda up: None)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"client-registry-service-{os.getpid()}-{id(self):x}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.username_pw_set(username, password)
        # Back within 0.1 s of a Mosquitto restart (the fleet's changes wait meanwhile). paho declares ints but
        # computes the back-off with any number (2.x: min(delay * 2, max)).
        self.client.reconnect_delay_set(0.1, 2.0)  # type: ignore[arg-type]
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(100_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._refused: str | None = None
        self._answered = threading.Event()
        self._pending: dict[int, Future] = {}  # control message seq -> its answer
        self._lock = threading.Lock()

    @property
    def refused(self) -> str | None:
        """Why Mosquitto refused the service account's last connect (e.g. "Not authorized"), while it does."""
        return None if self.connected.is_set() else self._refused

    # -- connection ------------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._answered.set()
            return
        client.subscribe(RESPONSE_TOPIC, qos=0)  # QoS 0 both ways: see send()
        self._refused = None
        self.connected.set()
        self._answered.set()
        self.on_connected(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LinkError("the connection to Mosquitto was lost"))
        if was:
            self.on_connected(False)

    def start(self, timeout: float = 10.0, *, patient: bool = False) -> None:
        """Connect (blocking, call from a thread); LinkError when the broker refuses or does not answer.
        ``patient``: a refusal is not the end (an attached Mosquitto that has not loaded the registry plugin's
        snapshot yet refuses the service until it is restarted): keep trying until ``timeout``."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if patient:
            if not self.connected.wait(timeout):
                reason = self._refused or f"no answer from {self.host}:{self.port}"
                self.stop()
                raise LinkError(f"cannot log in to Mosquitto as the service account within {timeout:.0f} s: "
                                f"{reason}")
            return
        if not self._answered.wait(timeout) or not self.connected.wait(0):
            reason = self._refused or f"no answer from {self.host}:{self.port} within {timeout:.0f} s"
            self.stop()
            raise LinkError(f"cannot log in to Mosquitto as the service account: {reason}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- events ------------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a publication (thread-safe; paho sends it, and resends it after a reconnect)."""
        self.client.publish(topic, payload, qos=qos, retain=retain)

    # -- the registry plugin's control channel ----------------------------------------------------------
    def _on_message(self, client, userdata, message) -> None:
        if message.topic != RESPONSE_TOPIC:
            return
        try:
            answer = parse_answer(message.payload)
        except WireError:
            log.warning("plugin: unreadable answer from Mosquitto")
            return
        with self._lock:
            future = self._pending.pop(answer.seq, None)
        if future is not None and not future.done():
            future.set_result(answer)

    def send(self, seq: int, records: list[bytes]) -> Future:
        """Send one control message; the future resolves with the plugin's Answer."""
        future: Future = Future()
        if not self.connected.is_set():
            future.set_exception(LinkError("not connected to Mosquitto"))
            return future
        with self._lock:
            self._pending[seq] = future
        # QoS 0 both ways: at QoS 1 Mosquitto's PUBACK went first and Nagle's algorithm held the answer behind
        # it until our delayed ACK (45 ms a message, measured with dynamic security); a lost connection fails
        # the futures either way (_on_disconnect), and reconcile repairs what was not applied.
        self.client.publish(CONTROL_TOPIC, control_message(seq, records), qos=0)
        return future

    async def control(self, seq: int, records: list[bytes], *, timeout: float = COMMAND_TIMEOUT) -> Answer:
        """Send records to the plugin and wait for its answer; LinkError when none comes or it refused."""
        sent = self.send(seq, records)
        try:
            async with asyncio.timeout(timeout):
                answer = await asyncio.wrap_future(sent)
        except TimeoutError:
            with self._lock:  # no answer will come for it: forget it (bounded)
                self._pending.pop(seq, None)
            raise LinkError(f"Mosquitto's registry plugin did not answer within {timeout:.0f} s") from None
        if answer.status != 0:
            raise LinkError("Mosquitto's registry plugin refused a change (its log says why)")
        return answer
