"""Simulated device firmware for trying the registry out (``client-registry simulate``).

Each device makes up a username and a random password, prints the pairing code
that the operator will see in the dashboard, and keeps trying to CONNECT with
exponential backoff. Once granted it reports which of a few likely topics it may
use (by subscribing and reading the SUBACK) and stays connected, publishing a
heartbeat, until stopped.
"""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt

from store import pairing_code

from .listener import MqttTarget

WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "gale", "harbor", "iris", "juniper",
         "kestrel", "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra")
KINDS = ("sensor", "meter", "valve", "pump", "cam", "gateway", "plc", "probe")


def make_username(rng: random.Random) -> str:
    return f"{rng.choice(KINDS)}-{rng.choice(WORDS)}-{rng.randrange(16**4):04x}"


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


class Simulator:
    def __init__(self, target: MqttTarget, devices: int = 1, *, out: Callable[[str], None] = print,
                 backoff_first: float = 1.0, backoff_max: float = 15.0, heartbeat: float = 10.0,
                 seed: int | None = None) -> None:
        rng = random.Random(seed)
        self.target = target
        self.devices = [
            Device(make_username(rng), secrets.token_urlsafe(12), f"sim-{i}-{secrets.token_hex(3)}")
            for i in range(devices)
        ]
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
            client.on_connect = _on_connect
            client.on_subscribe = _on_subscribe
            try:
                client.connect(self.target.host, self.target.port, keepalive=30)
                client.loop_start()
                got.wait(10)
            except OSError as exc:
                result["error"] = exc.strerror or str(exc)
            rc = result.get("rc")
            if rc is not None and not rc.is_failure:
                self.say(device, f"got in after {device.attempts} attempt(s)")
                self._stay(device, client, result, got)
                return
            try:
                client.loop_stop()
                client.disconnect()
            except Exception:  # noqa: BLE001
                pass
            why = result.get("error") or (str(rc) if rc is not None else "no answer")
            self.say(device, f"attempt {device.attempts}: {why}; retrying in {backoff:.0f}s (code {device.code})")
            self._wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.backoff_max)

    def _stay(self, device: Device, client: mqtt.Client, result: dict, got: threading.Event) -> None:
        mids = {}
        for topic in probe_topics(device.username):
            got.clear()
            _, mid = client.subscribe(topic, qos=0)
            mids[mid] = topic
            deadline = time.monotonic() + 5
            while mid not in result.get("subacks", {}) and time.monotonic() < deadline and not self.stop.is_set():
                got.wait(0.1)
        for mid, topic in mids.items():
            rcs = result.get("subacks", {}).get(mid)
            if rcs and not rcs[0].is_failure:
                device.allowed.append(topic)
                client.unsubscribe(topic)
        if device.allowed:
            self.say(device, "may use: " + ", ".join(device.allowed))
        else:
            self.say(device, "connected, but may not subscribe to any of "
                     + ", ".join(probe_topics(device.username)) + " (no permissions yet)")
        # Admitted once it has said what it may use: --until-admitted must not cut the probe short.
        device.admitted = True
        while not self.stop.is_set():
            client.publish(f"devices/{device.username}/heartbeat", str(int(time.time())), qos=0)
            self._wait(self.heartbeat)
        client.loop_stop()
        client.disconnect()

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


def run_simulation(devices: int, mqtt_url: str | None, *, until_admitted: bool = False) -> int:
    try:
        target = MqttTarget.parse(mqtt_url)
    except ValueError as exc:
        print(f"client-registry: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(target, devices, out=lambda line: print(line, flush=True))
    print(f"simulating {devices} device(s) against {target.address} (Ctrl-C to stop)", flush=True)
    try:
        sim.run(until_admitted=until_admitted)
    except KeyboardInterrupt:
        sim.stop.set()
    return 0
