"""The service's own MQTT connection to Mosquitto (the service account): dynamic-security commands with their
answers, and event publications. paho runs its network loop on its own thread and reconnects by itself;
asyncio callers await futures resolved from that thread."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future

import paho.mqtt.client as mqtt

from .config import CONTROL_TOPIC

RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
COMMAND_TIMEOUT = 10.0


class LinkError(Exception):
    """The broker could not be reached or did not answer; str() is one line."""


class DynsecError(Exception):
    """A dynamic-security command was refused; str() is Mosquitto's reason."""


class BrokerLink:
    def __init__(self, host: str, port: int, username: str, password: str,
                 log: Callable[[str], None], on_connected: Callable[[bool], None] | None = None) -> None:
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        self.port = port
        self.log = log
        self.on_connected = on_connected or (lambda up: None)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"client-registry-service-{os.getpid()}-{id(self):x}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 2.0)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(100_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._refused: str | None = None
        self._answered = threading.Event()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

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

    def start(self, timeout: float = 10.0) -> None:
        """Connect (blocking, call from a thread); LinkError when the broker refuses or does not answer."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
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

    # -- dynamic security --------------------------------------------------------------------------------
    def _on_message(self, client, userdata, message) -> None:
        if message.topic != RESPONSE_TOPIC:
            return
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            self.log("dynsec: unreadable response from Mosquitto")
            return
        for response in responses:
            key = response.get("correlationData")
            with self._lock:
                future = self._pending.pop(key, None)
            if future is not None and not future.done():
                future.set_result(response)

    def send(self, commands: list[dict]) -> list[Future]:
        """Send dynamic-security commands in one message; one future per command, resolved with its
        response ({"command", "error"?, "data"?})."""
        futures = []
        batch = []
        with self._lock:
            for command in commands:
                key = f"cr-{next(self._ids)}"
                future: Future = Future()
                self._pending[key] = future
                futures.append(future)
                batch.append({**command, "correlationData": key})
        if not self.connected.is_set():
            for future in futures:
                future.set_exception(LinkError("not connected to Mosquitto"))
            return futures
        # QoS 0: with QoS 1, Mosquitto's PUBACK went out first and Nagle's algorithm held the answer behind it
        # until our delayed ACK, 45 ms per command (0.8 ms at QoS 0, measured); a lost connection fails the
        # futures either way (_on_disconnect), and reconcile repairs what was not applied.
        self.client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=0)
        return futures

    async def run(self, commands: list[dict], *, ok: tuple[str, ...] = (),
                  timeout: float = COMMAND_TIMEOUT) -> list[dict]:
        """Run commands and return their responses; DynsecError for the first refused one, unless its error
        text is in ``ok`` (e.g. "Client already exists" when that is fine)."""
        sent = self.send(commands)
        futures = [asyncio.wrap_future(f) for f in sent]
        try:
            async with asyncio.timeout(timeout):
                responses = await asyncio.gather(*futures)
        except TimeoutError:
            with self._lock:  # no answer will come for them: forget them (bounded)
                for key in [k for k, f in self._pending.items() if f in sent]:
                    del self._pending[key]
            raise LinkError(f"Mosquitto did not answer {commands[0].get('command')} within {timeout:.0f} s") from None
        for response in responses:
            error = response.get("error")
            if error and error not in ok:
                raise DynsecError(f"{response.get('command')}: {error}")
        return responses
