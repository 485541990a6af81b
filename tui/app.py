"""The client-registry dashboard app.

The app owns the Registry, the clock, the operator's name and the listener
worker. The dashboard screen owns the views. The listener runs paho in a
thread worker and only posts typed messages (``ListenerState``,
``EventsBatch``) which are handled here on the app's thread.
"""

from __future__ import annotations

import gc
import getpass
import threading
import time
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterable

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import get_current_worker

from .listener import EventListener, MqttTarget
from .messages import EventsBatch, ListenerState, ServiceStatus
from .safe import clean
from .screens.dashboard import DashboardScreen


def default_actor() -> str:
    try:
        return f"{getpass.getuser()}@dashboard"
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        return "dashboard"


class RegistryApp(App[None]):
    """``RegistryApp(reg, mqtt_target=MqttTarget(...), clock=time.time)``.

    ``mqtt_target=None`` runs without a listener (the changelog is polled each second).
    ``clock`` is injectable so that tests and screenshots are deterministic.
    """

    TITLE = "client-registry"
    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute: subclasses may live elsewhere
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Quit the dashboard"),
    ]

    def __init__(
        self,
        reg: Any,
        *,
        mqtt_target: MqttTarget | None = None,
        clock: Callable[[], float] | None = None,
        actor: str | None = None,
        embedded: bool = False,
        listener_backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        super().__init__()
        self.reg = reg
        self.mqtt_target = mqtt_target
        self.clock: Callable[[], float] = clock or getattr(reg, "clock", None) or time.time
        self.actor = actor or default_actor()
        self.embedded = embedded
        self.listener_backoff = listener_backoff
        self._stop_listener = threading.Event()
        self.listener_done = threading.Event()  # set when the listener thread has really returned
        self.listener_state = "off" if mqtt_target is None else "connecting"
        self.service_status: tuple[str, str] = ("", "")  # (broker, state) from $registry/v1/status

    @property
    def login_name(self) -> str | None:
        """The account the listener logs in with (protected from disable/remove in the Users view)."""
        return self.mqtt_target.username if self.mqtt_target is not None else None

    def get_default_screen(self) -> Screen:
        return DashboardScreen()

    @property
    def dashboard(self) -> DashboardScreen:
        return self.screen_stack[0]  # type: ignore[return-value]

    def on_mount(self) -> None:
        if self.mqtt_target is not None:
            self.run_listener()
        self._start_idle_gc()

    # -- garbage collection between key presses -------------------------------------------------
    # A full (generation 2) collection walks every live object: 30-100 ms here, and Python starts one
    # whenever enough objects have survived, typically in the middle of rendering the frame a key press
    # asked for (the table's render caches make many short-lived objects). So the dashboard keeps
    # Python's young-generation collections, turns off the automatic full ones, and runs a full one
    # itself when no key was pressed for GC_IDLE seconds (and at least every GC_MAX_DEFER seconds).
    # Textual does the same during smooth scrolling (PAUSE_GC_ON_SCROLL).
    GC_IDLE = 0.5
    GC_EVERY = 2.0
    GC_MAX_DEFER = 30.0

    def _start_idle_gc(self) -> None:
        self._gc_threshold = gc.get_threshold()
        self._last_input = self._last_full_gc = time.monotonic()
        gc.freeze()  # what exists after start-up lives as long as the app: never walked again
        gc.set_threshold(self._gc_threshold[0], self._gc_threshold[1], 1_000_000)
        self.set_interval(self.GC_EVERY, self._idle_gc, name="idle-gc")

    def _idle_gc(self) -> None:
        now = time.monotonic()
        if now - self._last_input >= self.GC_IDLE or now - self._last_full_gc >= self.GC_MAX_DEFER:
            gc.collect()
            self._last_full_gc = time.monotonic()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self._last_input = time.monotonic()
        await super().on_event(event)

    # -- listener worker ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, name="mqtt-listener", group="listener")
    def run_listener(self) -> None:
        worker = get_current_worker()
        first, maximum = self.listener_backoff
        listener = EventListener(
            self.mqtt_target,
            self.post_message,
            lambda: worker.is_cancelled or self._stop_listener.is_set(),
            backoff_first=first,
            backoff_max=maximum,
        )
        try:
            listener.run()
        finally:
            self.listener_done.set()

    def stop_listener(self) -> None:
        self._stop_listener.set()
        self.workers.cancel_group(self, "listener")

    def on_listener_state(self, message: ListenerState) -> None:
        self.listener_state = message.state
        dashboard = self.dashboard
        if not dashboard.is_mounted:
            return  # it reads listener_state when it mounts
        if message.state == "connected":
            dashboard.resync()
        dashboard.set_broker_state(message.state, message.detail, message.retry_in)

    def on_service_status(self, message: ServiceStatus) -> None:
        self.service_status = (message.broker, message.state)
        if self.dashboard.is_mounted:
            self.dashboard.set_service_status(message.broker, message.state)

    def on_events_batch(self, message: EventsBatch) -> None:
        if self.dashboard.is_mounted:  # before that, its first full resync covers these events
            self.dashboard.deliver(message.events)

    async def action_quit(self) -> None:
        self.stop_listener()
        self.exit()

    def on_unmount(self) -> None:
        self.stop_listener()
        if hasattr(self, "_gc_threshold"):
            gc.set_threshold(*self._gc_threshold)
            gc.unfreeze()

    # -- command palette: every binding of the screen, by name --------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not active.enabled or not binding.description or binding.system:
                continue
            if binding.action in seen or binding.action in ("quit", "command_palette"):
                continue
            seen.add(binding.action)
            help_text = binding.tooltip or binding.description
            yield SystemCommand(
                f"{binding.description} ({binding.key_display or key})",
                help_text,
                partial(self.run_action, binding.action, active.node),
            )
