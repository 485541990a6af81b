"""The MQTT listener: a paho-mqtt client run inside a Textual thread worker.

It logs in with the console (admin) account, subscribes to the relay's event
topics, batches what it receives and posts it to the app about every 250 ms.
It reconnects with exponential backoff and reports its state; the app resyncs
from the database whenever it reports ``connected`` (after the SUBACK, so no
event can fall between the resync and the subscription).

Cancellation is cooperative: ``should_stop()`` is polled at least every 50 ms,
including while waiting to retry, so quitting the app stops it promptly.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from textual.message import Message

from .messages import EventsBatch, ListenerState, RelayedEvent, ServiceStatus

EVENTS_TOPIC = "$registry/v1/events/#"
STATUS_TOPIC = "$registry/v1/status"  # retained by the service: which broker, running or stopped
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

    @classmethod
    def parse(cls, url: str | None) -> "MqttTarget":
        """Parse ``mqtt://user:pass@host:port`` (every part optional; ``host:port`` also works)."""
        if not url:
            return cls()
        if "://" not in url:
            url = "mqtt://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt://host:port)")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 1883,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def with_credentials(self, username: str, password: str) -> "MqttTarget":
        return MqttTarget(self.host, self.port, username, password)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class EventListener:
    """Runs the paho loop on the calling thread until ``should_stop()`` is true."""

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
        self._batch: list[RelayedEvent] = []
        self._batch_started = 0.0
        self._connected = False
        self._subscribed = False
        self._refused: str | None = None
        self._sub_mid: int | None = None
        self._subscribed_at = 0.0
        self._status_heard = False  # a retained status arrived on this connection (or was said absent)

    # -- paho callbacks (run on this thread, inside client.loop) ----------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            return
        self._connected = True
        result, mid = client.subscribe([(EVENTS_TOPIC, 1), (STATUS_TOPIC, 1)])
        self._sub_mid = mid

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        if mid != self._sub_mid:
            return
        if any(rc.is_failure for rc in reason_codes):
            self._refused = "subscription to $registry/v1/events/# refused (is the console account an admin?)"
            return
        self._subscribed = True
        self._subscribed_at = time.monotonic()
        self.post(ListenerState("connected", self.target.address))

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == STATUS_TOPIC:
            self._status_heard = True
            try:
                status = json.loads(message.payload.decode("utf-8"))
                if status.get("service") != "client-registry":
                    raise ValueError("not a client-registry status")
                self.post(ServiceStatus(str(status.get("broker") or ""), str(status.get("state") or ""),
                                        str(status.get("http") or "")))
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

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected = False

    # -- loop ----------------------------------------------------------------------
    def _flush(self, force: bool = False) -> None:
        if self._batch and (force or time.monotonic() - self._batch_started >= self.batch_seconds):
            batch, self._batch = self._batch, []
            self.post(EventsBatch(batch))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"client-registry-console-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def run(self) -> None:
        backoff = self.backoff_first
        self.post(ListenerState("connecting", self.target.address))
        while not self.should_stop():
            self._connected = self._subscribed = self._status_heard = False
            self._refused = None
            client = self._new_client()
            problem = ""
            try:
                client.connect(self.target.host, self.target.port, keepalive=10)
                deadline = time.monotonic() + 5.0
                while not self.should_stop():
                    rc = client.loop(timeout=0.05)
                    self._flush()
                    if self._refused:
                        problem = f"refused: {self._refused}"
                        break
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        problem = "connection lost"
                        break
                    if self._subscribed:
                        backoff = self.backoff_first
                        if not self._status_heard and time.monotonic() - self._subscribed_at > STATUS_GRACE:
                            self._status_heard = True  # said once per connection
                            self.post(ServiceStatus("", "absent"))
                    elif time.monotonic() > deadline:
                        problem = "no answer from broker"
                        break
            except (OSError, ValueError) as exc:
                problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            finally:
                self._flush(force=True)
                try:
                    client.disconnect()
                except Exception:  # noqa: BLE001 - closing a dead socket must not kill the worker
                    pass
                try:
                    client.loop(timeout=0.01)
                except Exception:  # noqa: BLE001
                    pass
                try:
                    client.socket() and client.socket().close()
                except Exception:  # noqa: BLE001
                    pass
            if self.should_stop():
                break
            state = "refused" if problem.startswith("refused") else "retrying"
            self.post(ListenerState(state, problem, retry_in=backoff))
            self._sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)
        self.post(ListenerState("stopped"))
