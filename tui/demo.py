"""A fixed, deterministic registry for screenshots and snapshot tests.

Everything is recorded through the real Registry with a fake clock, so the
same database always renders the same screens (pairing codes derive from the
fixed passwords, times from the clock).
"""

from __future__ import annotations

from store import Registry, open_registry
from store.durations import UNLOCK_DEFAULT

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class DemoClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def build_demo(db: str, clock: DemoClock | None = None) -> tuple[Registry, DemoClock]:
    """Fill ``db`` with a believable session; returns ``(registry, clock)`` with the clock 'now'."""
    clock = clock or DemoClock()
    reg = open_registry(db, clock=clock)
    reg.watch_presence("mosquitto log")  # as `serve` does: who is online, from its Mosquitto's log
    reg.add_user("client-registry-console", "console-password", admin=True, actor="server", how="console")
    reg.add_user("historian", "historian-password", actor="cli:ops", how="cli")
    reg.permit("historian", "plant/#", "read", actor="cli:ops")
    reg.add_role("meters", actor="cli:ops")
    reg.role_permit("meters", "meters/{username}/#", "write", actor="cli:ops")
    reg.add_rule("meter-*", name="meter-install", roles=["meters"], peer_network="10.0.0.0/8", limit=20,
                 actor="cli:ops")
    clock.advance(600)
    reg.record_presence({"client-registry-console": (1, clock(), None), "historian": (1, clock(), None)})
    clock.advance(3000)
    reg.record_attempt("gate-cam", "gate-secret", "cam-1", "10.0.0.21:50110", "mqtt")  # locked: knocking
    clock.advance(30)
    reg.unlock(UNLOCK_DEFAULT, actor="alice@dashboard")
    clock.advance(5)
    reg.record_attempt("boiler-7", "boiler-secret", "esp32-a1b2c3", "10.0.0.17:40012", "mqtt")
    clock.advance(10)
    reg.record_attempt("pump-station-2", "pump-secret", "pump2", "10.0.0.18:40100", "mqtt")
    reg.grant(["pump-station-2"], ["devices/{username}/#=readWrite"], actor="alice@dashboard")
    clock.advance(1)
    reg.record_attempt("meter-12", "meter-secret", "m12", "10.0.0.52:40200", "mqtt")  # admitted by the rule
    clock.advance(2)
    reg.record_presence({"pump-station-2": (1, clock(), None)})
    clock.advance(10)
    reg.record_attempt("thermo-[bold]x[/]", "thermo-secret", "th\x1b[31m-1", "10.0.0.33:41000", "mqtt")
    clock.advance(8)
    reg.record_attempt("door-3", "first-password", "door3", "10.0.0.40:42000", "mqtt")
    reg.record_attempt("door-3", "other-password", "door3", "10.0.0.41:42001", "mqtt")
    clock.advance(20)
    reg.record_attempt("weather-station", "weather-secret", "ws-01", "192.168.7.4:51515", "http",
                       requested_permissions=[{"resource": "weather/#", "operation": "write"}],
                       context={"model": "WS-2000", "site": "roof"})
    clock.advance(4)
    reg.record_attempt("intruder-99", "intruder-secret", "x", "203.0.113.9:6666", "mqtt")
    reg.deny(["intruder-99"], actor="alice@dashboard")
    clock.advance(3)
    reg.record_attempt("boiler-7", "boiler-secret", "esp32-a1b2c3", "10.0.0.17:40013", "mqtt")  # a retry
    reg.record_presence({"pump-station-2": (0, None, clock())})
    clock.advance(25)
    reg.note_applied(reg.last_event_id())  # a server is running: presence is watched
    return reg, clock
