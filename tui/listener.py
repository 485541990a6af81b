"""The MQTT listener: a paho-mqtt client run inside a Textual thread worker.

It logs in with the console (admin) account, subscribes to the relay's event
topics, batches what it receives and posts it to the app about every 250 ms.
paho reconnects by itself with exponential backoff (``reconnect_delay_set``, its
network loop on its own thread, as broker/mosquitto/link.py does); the worker
reports each state; the app resyncs from the database whenever it reports
``connected`` (after the SUBACK, so no event can fall between the resync and the
subscription).

Cancellation is cooperative: ``should_stop()`` is polled at least every 50 ms,
including while paho waits to retry, so quitting the app stops it promptly.
"""

from __future__ import annotations

import json
import queue
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import paho.mqtt.client as mqtt
from textual.message import Message

from broker.address import parse_mqtt_url
from store.event_topics import EVENTS_FILTER, STATUS_TOPIC

from .messages import EventsBatch, ListenerState, RelayedEvent, ServiceStatus

SUBSCRIPTIONS = [(EVENTS_FILTER, 1), (STATUS_TOPIC, 1)]
STATUS_GRACE = 2.0  # seconds after the subscription without a retained status: no registry service there
BATCH_SECONDS = 0.25  # events reach the tables in batches: each batch re-renders the visible rows (a flood at
#                      100/s: key latency p50 80 -> 64 ms, p95 ~160 -> ~130 ms against 0.1 s; bench/dash_child)
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class MqttTarget:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False  # mqtts://: the broker's certificate is checked against ``ca`` (else the system's CAs)
    ca: str | None = None

    @classmethod
    def parse(cls, url: str | None, ca: str | None = None) -> MqttTarget:
        """Parse ``mqtt://user:pass@host:port`` or ``mqtts://...`` (every part optional; ``host:port`` also
        works); ValueError (broker.address.AddressError) with one line when it cannot be used."""
        if not url:
            return cls()
        parts = parse_mqtt_url(url)
        return cls(parts.host, parts.port, parts.username, parts.password, parts.tls, ca if parts.tls else None)

    def with_credentials(self, username: str, password: str) -> MqttTarget:
        return replace(self, username=username, password=password)

    @property
    def address(self) -> str:
        return f"{'mqtts://' if self.tls else ''}{self.host}:{self.port}"

    def secure(self, client: mqtt.Client) -> None:
        """Over TLS when the URL said mqtts:// (the host name checked against the broker's certificate)."""
        if self.tls:
            client.tls_set(ca_certs=self.ca)


class _Client(mqtt.Client):
    """paho's client, keeping why its last connection attempt failed (paho's on_connect_fail does not say)."""

    last_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


class EventListener:
    """Runs until ``should_stop()`` is true: paho's own thread connects, reconnects with backoff
    (``reconnect_delay_set``) and receives; its callbacks only queue what happened, and this thread posts it
    to the app in order (events batched), so the app hears from one thread as before."""

    def __init__(
        self,
        target: MqttTarget,
        post: Callable[[Message], object],
        should_stop: Callable[[], bool],
        *,
        batch_seconds: float = BATCH_SECONDS,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.target = target
        self.post = post
        self.should_stop = should_stop
        self.batch_seconds = batch_seconds
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._heard: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()  # from paho's thread
        self._batch: list[RelayedEvent] = []
        self._batch_started = 0.0
        self._resubscribe_at: float | None = None  # the subscription was refused: asked again then
        self._refusal_said = False  # the disconnection that follows a refused login is not news
        self._first_attempt = True
        self._subscribed_at: float | None = None  # on this connection; None: not subscribed
        self._status_heard = False  # a retained status arrived on this connection (or was said absent)
        self._retry_in: float | None = None  # paho's next reconnect delay, as it computes it

    # -- paho callbacks (paho's thread): what happened, queued for run() --------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:  # Mosquitto closes the connection next; paho reconnects after its delay
            self._heard.put(("refused", f"refused: {reason_code}"))
            return
        client.subscribe(SUBSCRIPTIONS)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self._heard.put(("unsubscribed", f"refused: subscription to {EVENTS_FILTER} refused "
                                             "(is the console account an admin?)"))
        else:
            self._heard.put(("subscribed", None))

    def _on_message(self, client, userdata, message) -> None:
        self._heard.put(("message", message))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._heard.put(("lost", "connection lost"))

    def _on_connect_fail(self, client, userdata) -> None:
        exc = client.last_error
        self._heard.put(("failed", exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)))

    # -- this thread --------------------------------------------------------------------------------------
    def _message(self, message) -> None:
        if message.topic == STATUS_TOPIC:
            self._status_heard = True
            try:
                status = json.loads(message.payload.decode("utf-8"))
                if status.get("service") != "client-registry":
                    raise ValueError("not a client-registry status")
                self.post(ServiceStatus(str(status.get("broker") or ""), str(status.get("state") or ""),
                                        str(status.get("http") or ""), str(status.get("mqtt_tls") or "")))
            except (ValueError, AttributeError, UnicodeDecodeError):
                self.post(ServiceStatus("", "absent"))
            return
        try:
            payload = json.loads(message.payload.decode("utf-8"))
            event = RelayedEvent.from_payload(payload)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return  # not ours / malformed: ignore, the DB resync covers us
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(event)

    def _flush(self, force: bool = False) -> None:
        if self._batch and (force or time.monotonic() - self._batch_started >= self.batch_seconds):
            batch, self._batch = self._batch, []
            self.post(EventsBatch(batch))

    def _handle(self, what: str, detail: object) -> None:
        if what == "message":
            self._message(detail)
        elif what == "subscribed":
            self._first_attempt = False
            self._flush(force=True)
            self._subscribed_at, self._status_heard, self._retry_in = time.monotonic(), False, None
            self.post(ListenerState("connected", self.target.address))
        elif what in ("lost", "failed", "refused", "unsubscribed"):
            self._flush(force=True)
            self._subscribed_at = self._resubscribe_at = None
            if what == "lost" and self._refusal_said:
                self._refusal_said = False
                return  # Mosquitto closed the connection it refused: said already, with paho's delay
            self._refusal_said = what == "refused"
            # paho's delay: the first after a good connection, doubled after each failed attempt; its very
            # first attempt, when it fails, is followed by two waits (loop_forever's first connect, then its loop)
            retry_in = self._retry_in = (self.backoff_first if self._retry_in is None
                                         else min(self._retry_in * 2, self.backoff_max))
            if what == "failed" and self._first_attempt:
                self._retry_in = min(2 * self.backoff_first, self.backoff_max)
                retry_in = self.backoff_first + self._retry_in
            self._first_attempt = False
            if what == "unsubscribed":  # still connected: the subscription is asked for again after the delay
                self._resubscribe_at = time.monotonic() + self._retry_in
            self.post(ListenerState("refused" if what in ("refused", "unsubscribed") else "retrying", str(detail),
                                    retry_in=retry_in))

    def _new_client(self) -> _Client:
        client = _Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"client-registry-console-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        self.target.secure(client)
        client.reconnect_delay_set(self.backoff_first, self.backoff_max)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    def run(self) -> None:
        self.post(ListenerState("connecting", self.target.address))
        client = self._new_client()
        client.connect_async(self.target.host, self.target.port, keepalive=10)
        client.loop_start()
        try:
            while not self.should_stop():
                try:
                    what, detail = self._heard.get(timeout=0.05)
                except queue.Empty:
                    pass
                else:
                    self._handle(what, detail)
                self._flush()
                if self._resubscribe_at is not None and time.monotonic() >= self._resubscribe_at:
                    self._resubscribe_at = None
                    client.subscribe(SUBSCRIPTIONS)
                if (self._subscribed_at is not None and not self._status_heard
                        and time.monotonic() - self._subscribed_at > STATUS_GRACE):
                    self._status_heard = True  # said once per connection
                    self.post(ServiceStatus("", "absent"))
        finally:
            client.disconnect()
            client.loop_stop()
            self._flush(force=True)
        self.post(ListenerState("stopped"))
