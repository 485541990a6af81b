"""Simulated device firmware for trying the registry out (``client-registry simulate``).

Each device makes up a username (``--prefix sensor``: ``sensor-3f2a``, for a rule or glob such as
``sensor-*``) and a random password, prints the pairing code that the operator will see in the dashboard, and
keeps trying to CONNECT with exponential backoff. Once granted it reports what it may use: the topics the
registry grants it (read from the registry's database when there is one here), each subscribable one checked
against the broker's SUBACK; without a database, a few likely topics probed. It stays connected, publishing
a heartbeat, and says in one line when the broker drops it (disabled, removed, broker gone), then knocks again.
"""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from store import pairing_code

from .listener import MqttTarget

WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "gale", "harbor", "iris", "juniper",
         "kestrel", "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra")
KINDS = ("sensor", "meter", "valve", "pump", "cam", "gateway", "plc", "probe")


def make_username(rng: random.Random, prefix: str | None = None) -> str:
    if prefix:
        return f"{prefix}-{rng.randrange(16**4):04x}"
    return f"{rng.choice(KINDS)}-{rng.choice(WORDS)}-{rng.randrange(16**4):04x}"


GrantsLookup = Callable[[str], "list[tuple[str, str]] | None"]  # username -> [(topic filter, access)] or None


def probe_topics(username: str) -> list[str]:
    return [f"devices/{username}/#", f"{username}/#", "sensors/#", "#"]


@dataclass
class Device:
    username: str
    password: str
    client_id: str
    code: str = ""
    attempts: int = 0
    admitted: bool = False
    allowed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.code = pairing_code(self.username, self.password)


def _on_connect(client, userdata, flags, reason_code, properties=None) -> None:
    result, got = userdata  # per attempt: a late callback of an old client cannot touch a new attempt
    result["rc"] = reason_code
    got.set()


def _on_subscribe(client, userdata, mid, reason_codes, properties=None) -> None:
    result, got = userdata
    result.setdefault("subacks", {})[mid] = reason_codes
    got.set()


def _on_disconnect(client, userdata, flags, reason_code, properties=None) -> None:
    result, got = userdata
    result["dropped"] = reason_code
    got.set()


class Simulator:
    def __init__(self, target: MqttTarget, devices: int = 1, *, out: Callable[[str], None] = print,
                 backoff_first: float = 1.0, backoff_max: float = 15.0, heartbeat: float = 10.0,
                 seed: int | None = None, prefix: str | None = None, grants: GrantsLookup | None = None) -> None:
        rng = random.Random(seed)
        self.target = target
        names: list[str] = []
        while len(names) < devices:  # distinct names: two devices never knock as one
            name = make_username(rng, prefix)
            if name not in names:
                names.append(name)
        self.devices = [Device(name, secrets.token_urlsafe(12), f"sim-{i}-{secrets.token_hex(3)}")
                        for i, name in enumerate(names)]
        self.grants = grants
        self.out = out
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def say(self, device: Device, text: str) -> None:
        with self._lock:
            self.out(f"[{device.username}] {text}")

    def all_admitted(self) -> bool:
        return all(d.admitted for d in self.devices)

    def _wait(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def run_device(self, device: Device) -> None:
        self.say(device, f"pairing code {device.code}: ask the operator to grant me")
        backoff = self.backoff_first
        while not self.stop.is_set():
            device.attempts += 1
            result: dict = {}
            got = threading.Event()
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device.client_id,
                                 protocol=mqtt.MQTTv311, userdata=(result, got))
            client.username_pw_set(device.username, device.password)
            self.target.secure(client)
            client.on_connect = _on_connect
            client.on_subscribe = _on_subscribe
            client.on_disconnect = _on_disconnect
            try:
                client.connect(self.target.host, self.target.port, keepalive=30)
                client.loop_start()
                got.wait(10)
            except OSError as exc:
                result["error"] = exc.strerror or str(exc)
            rc = result.get("rc")
            if rc is not None and not rc.is_failure:
                self.say(device, f"got in after {device.attempts} attempt(s)")
                if self._stay(device, client, result, got):
                    return  # stopped
                device.attempts, backoff = 0, self.backoff_first  # dropped: knock again, as firmware would
                continue
            try:
                client.loop_stop()
                client.disconnect()
            except Exception:
                pass
            why = result.get("error") or (str(rc) if rc is not None else "no answer")
            if device.admitted and device.attempts == 1:  # it was in: say once what that refusal means
                self.say(device, f"refused now ({why}): my account was disabled or removed, or the broker changed")
            self.say(device, f"attempt {device.attempts}: {why}; retrying in {backoff:.0f}s (code {device.code})")
            self._wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.backoff_max)

    def _suback(self, client: mqtt.Client, result: dict, got: threading.Event, topic: str) -> bool:
        """Does the broker let this device subscribe to ``topic``? (its SUBACK; unsubscribed again)"""
        got.clear()
        _, mid = client.subscribe(topic, qos=0)
        deadline = time.monotonic() + 5
        while mid not in result.get("subacks", {}) and time.monotonic() < deadline and not self.stop.is_set():
            got.wait(0.1)
        rcs = result.get("subacks", {}).get(mid)
        allowed = bool(rcs) and not rcs[0].is_failure
        if allowed:
            client.unsubscribe(topic)
        return allowed

    def _report(self, device: Device, client: mqtt.Client, result: dict, got: threading.Event) -> None:
        """What the device may use: the registry's grants when it can read them (reads checked against the
        broker), else a few likely topics probed."""
        granted = self.grants(device.username) if self.grants else None
        if granted is None:
            device.allowed = [t for t in probe_topics(device.username) if self._suback(client, result, got, t)]
            self.say(device, "may use: " + ", ".join(device.allowed) if device.allowed else
                     "connected, but may not subscribe to any of " + ", ".join(probe_topics(device.username))
                     + " (no permissions yet?)")
            return
        if not granted:
            self.say(device, "connected, with no permissions yet (the operator gave no template or role)")
            return
        parts = []
        for topic, access in granted:
            if access in ("read", "readWrite") and not self._suback(client, result, got, topic):
                parts.append(f"{topic} ({access}; the broker refused a subscribe!)")
                continue
            device.allowed.append(topic)
            parts.append(f"{topic} ({access})")
        self.say(device, "may use: " + ", ".join(parts))

    def _stay(self, device: Device, client: mqtt.Client, result: dict, got: threading.Event) -> bool:
        """Connected: report, then heartbeat until stopped (True) or dropped by the broker (False)."""
        device.allowed = []
        self._report(device, client, result, got)
        # Admitted once it has said what it may use: --until-admitted must not cut the report short.
        device.admitted = True
        while not self.stop.is_set():
            if "dropped" in result:
                self.say(device, f"disconnected by the broker ({result['dropped']}): knocking again")
                client.loop_stop()
                return False
            client.publish(f"devices/{device.username}/heartbeat", str(int(time.time())), qos=0)
            got.clear()
            got.wait(self.heartbeat)
        client.loop_stop()
        client.disconnect()
        return True

    def run(self, until_admitted: bool = False) -> None:
        threads = [threading.Thread(target=self.run_device, args=(d,), daemon=True) for d in self.devices]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                if until_admitted and self.all_admitted():
                    break
                time.sleep(0.1)
        finally:
            self.stop.set()
            for t in threads:
                t.join(5)


def run_simulation(devices: int, mqtt_url: str | None, *, until_admitted: bool = False, prefix: str | None = None,
                   grants: GrantsLookup | None = None, ca: str | None = None) -> int:
    """``ca``: for an mqtts:// URL, the CA the broker's certificate is checked against (tui.launch.tls_ca)."""
    try:
        target = MqttTarget.parse(mqtt_url, ca)
    except ValueError as exc:
        print(f"client-registry: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(target, devices, out=lambda line: print(line, flush=True), prefix=prefix, grants=grants)
    print(f"simulating {devices} device(s) against {target.address} (Ctrl-C to stop)", flush=True)
    try:
        sim.run(until_admitted=until_admitted)
    except KeyboardInterrupt:
        sim.stop.set()
    return 0
