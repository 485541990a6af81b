"""The client-registry dashboard app.

The app owns the Registry, the clock, the operator's name and the listener
worker. The dashboard screen owns the views. The listener runs paho in a
thread worker and only posts typed messages (``ListenerState``,
``EventsBatch``) which are handled here on the app's thread.
"""

from __future__ import annotations

import gc
import getpass
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingsMap, BindingType
from textual.screen import Screen
from textual.worker import get_current_worker

from store import Registry
from store.device_text import printable
from store.location import config_dir

from .listener import EventListener, MqttTarget
from .messages import EventsBatch, ListenerState, ServiceStatus
from .screens.dashboard import DashboardScreen
from .screens.modals import ConfirmModal
from .sessions import other_sessions


def default_actor() -> str:
    try:
        return f"{getpass.getuser()}@dashboard"
    except Exception:  # no passwd entry (containers)
        return "dashboard"


class RegistryApp(App[None]):
    """``RegistryApp(reg, mqtt_target=MqttTarget(...), clock=time.time)``.

    ``mqtt_target=None`` runs without a listener (the changelog is polled each second).
    ``clock`` is injectable so that tests and screenshots are deterministic.
    """

    TITLE = "client-registry"
    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute: subclasses may live elsewhere
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Quit (asks first when the embedded broker has other clients)"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="quit-ctrl-c",
                tooltip="Quit, as q does (with the same question)"),
    ]

    def __init__(
        self,
        reg: Registry,
        *,
        mqtt_target: MqttTarget | None = None,
        clock: Callable[[], float] | None = None,
        actor: str | None = None,
        embedded: bool = False,
        listener_backoff: tuple[float, float] = (0.5, 10.0),
        keymap_file: str | None = None,
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
        self.service_status: tuple[str, str, str, str] = ("", "", "", "")  # (broker, state, http, tls): the status
        self.keymap_problem: str | None = None
        self._keymap_file = keymap_file
        self.count_other_sessions: Callable[[], int | None] = self._other_sessions

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
        self.load_keymap()
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
        self.service_status = (message.broker, message.state, message.http, message.tls)
        if self.dashboard.is_mounted:
            self.dashboard.set_service_status(*self.service_status)

    def on_events_batch(self, message: EventsBatch) -> None:
        if self.dashboard.is_mounted:  # before that, its first full resync covers these events
            self.dashboard.deliver(message.events)

    # -- quitting: the embedded broker stops with the dashboard -----------------------------------------
    def _other_sessions(self) -> int | None:
        if not self.embedded or self.mqtt_target is None:
            return 0
        return other_sessions(self.mqtt_target.port)

    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmModal) and getattr(self.screen, "quitting", False):
            return  # ctrl+c again while asking: the question stands
        others = self.count_other_sessions() if self.embedded else 0
        if not others:
            self.really_quit()
            return
        many = others != 1
        body = Text(f"{others} other MQTT connection{'s' if many else ''} (devices, other dashboards) "
                    f"{'use' if many else 'uses'} the broker this dashboard started. Quitting stops it and cuts "
                    f"{'them' if many else 'it'} off; devices reconnect when a broker runs again.")

        def done(ok: bool | None) -> None:
            if ok:
                self.really_quit()

        modal = ConfirmModal("Stop the embedded broker and quit?", body, "Quit")
        modal.quitting = True
        self.push_screen(modal, done)

    def really_quit(self) -> None:
        self.stop_listener()
        self.exit()

    # -- keys: ids a user keymap can remap, help from the bindings -------------------------------------
    def load_keymap(self) -> None:
        """``$CLIENT_REGISTRY_KEYMAP`` or ``~/.config/client-registry/keymap.toml``: ``binding-id = "keys"``
        lines (e.g. ``grant = "G"``, ``row-down = "j,ctrl+n"``); a broken file is one notice, not a crash."""
        path = Path(self._keymap_file or os.environ.get("CLIENT_REGISTRY_KEYMAP")
                    or config_dir() / "keymap.toml")
        if not path.is_file():
            return
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self.keymap_problem = f"keymap {path}: {exc}"
            self.notify(printable(self.keymap_problem, 200), severity="warning", timeout=8, markup=False)
            return
        keymap, problems = {}, []
        known = self.binding_ids()
        for key, value in (data.get("keymap") if isinstance(data.get("keymap"), dict) else data).items():
            if key not in known:
                problems.append(f"keymap {path}: {key!r} is not a binding id (the help lists them); ignored")
            elif not isinstance(value, str) or not value.strip():
                problems.append(f"keymap {path}: {key} must be keys in quotes, such as \"G\" or \"j,ctrl+n\"; ignored")
            else:
                keymap[key] = value
        if problems:  # one line for each, the rest of the file still applies
            self.keymap_problem = "\n".join(problems)
            for problem in problems:
                self.notify(printable(problem, 200), severity="warning", timeout=8, markup=False)
        self.set_keymap(keymap)

    def binding_entries(self, node: Any, ids: Iterable[str]) -> list[tuple[str, Binding, Any]]:
        """(keys as shown, binding, node) for each binding id of ``node``, in the order given."""
        wanted = list(ids)
        keys: dict[str, list[str]] = {}
        first: dict[str, Binding] = {}
        bindings_map = node._bindings.copy()
        if self._keymap:
            bindings_map.apply_keymap(self._keymap)  # as the screen applies it to its binding chain
        for bindings in bindings_map.key_to_bindings.values():
            for binding in bindings:
                if binding.id in wanted:
                    keys.setdefault(binding.id, []).append(self.get_key_display(binding))
                    first.setdefault(binding.id, binding)
        return [(", ".join(keys[i]), first[i], node) for i in wanted if i in first]

    def key_sections(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """The help's sections: (keys as bound now, what they do, binding id) for every binding."""
        from .screens.details import DetailsScreen
        from .screens.modals import ConfirmModal as Confirm
        from .screens.modals import Dialog, DialogCheckbox
        from .widgets.base_table import OrderedTable

        dash = self.dashboard

        def ids(cls: type) -> list[str]:
            return list(dict.fromkeys(b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id))

        def rows(node: Any, cls: type) -> list[tuple[str, str, str]]:
            return [(k, b.tooltip or b.description, b.id or "") for k, b, _ in self.binding_entries(node, ids(cls))]

        def screen_rows(cls: type) -> list[tuple[str, str, str]]:  # a screen not open now: its class's bindings
            return rows(SimpleNamespace(_bindings=BindingsMap(cls.BINDINGS)), cls)

        everywhere = rows(dash, type(dash)) + rows(self, type(self))
        everywhere.append((self.COMMAND_PALETTE_BINDING, "command palette: every action by name, and why one "
                                                         "is unavailable now", ""))
        moving = [
            *rows(dash.requests_table, OrderedTable),
            ("↑ ↓ pgup pgdn", "move; past the requests window's edge the next rows are read", ""),
            ("ctrl+home, ctrl+end", "first / last row (the requests: first / last page)", "")]
        dialogs = [("enter", "confirm (grant, save, unlock…), wherever the focus is", ""),
                   ("tab", "move to the next field or checkbox", ""),
                   *screen_rows(DialogCheckbox), *screen_rows(Dialog), *screen_rows(Confirm),
                   *screen_rows(DetailsScreen)]
        return [
            ("Everywhere", everywhere),
            ("Moving (every view)", moving),
            *((label, rows(table, type(table))) for _, label, table in dash.view_tables()),
            ("Dialogs", dialogs),
        ]

    def binding_ids(self) -> set[str]:
        """Every id a keymap.toml line may name: the bindings of the dashboard, its tables, the dialogs."""
        from .screens.details import DetailsScreen
        from .screens.help import HelpScreen
        from .screens.modals import ConfirmModal, Dialog, DialogCheckbox
        from .widgets.audit_table import AuditTable
        from .widgets.base_table import OrderedTable
        from .widgets.requests_table import RequestsTable
        from .widgets.roles_table import RolesTable
        from .widgets.users_table import UsersTable

        classes = [type(self), DashboardScreen, OrderedTable, RequestsTable, UsersTable, RolesTable, AuditTable,
                   Dialog, DialogCheckbox, ConfirmModal, DetailsScreen, HelpScreen]
        return {b.id for cls in classes for b in cls.BINDINGS if isinstance(b, Binding) and b.id}

    # -- command palette: every action of the app, and why it is unavailable now ------------------------
    def palette_entries(self, screen: Screen | None = None) -> list[tuple[str, str, Binding, Any, str | None]]:
        """(title, help, binding, node, why it is unavailable or None) for every action of the app."""
        from .widgets.base_table import OrderedTable

        dash = self.dashboard
        current = dash.current_table() if dash.is_mounted else None
        out = []
        groups = [(dash, type(dash), None), (self, type(self), None)]
        for key, view, table in dash.view_tables():
            groups.append((table, type(table), None if table is current else f"only in the {view} view (press {key})"))
        seen = set()
        for node, cls, elsewhere in groups:
            for keys, binding, _ in self.binding_entries(node, [b.id for b in cls.BINDINGS if b.id]):
                if binding.id in seen or binding.id == "quit-ctrl-c":
                    continue
                seen.add(binding.id)
                name = binding.action.split("(")[0]
                why = elsewhere or (node.unavailable(name) if hasattr(node, "unavailable") else None)
                if (screen or self.screen) is not dash and node is not self:
                    why = why or "close the dialog first"
                title = f"{binding.description} ({keys})"
                if isinstance(node, OrderedTable):
                    title = f"{binding.description} ({keys}, {cls.__name__.replace('Table', '')})"
                out.append((title, binding.tooltip or binding.description, binding, node, why))
        return out

    async def run_action(self, action: Any, default_namespace: Any = None, namespaces: Any = None) -> bool:
        """A key whose action cannot run here says why in a notification (the reason the palette and the footer
        use, ``unavailable``), instead of doing nothing."""
        if await super().run_action(action, default_namespace, namespaces):
            return True
        target, name, _ = self._parse_action(action, self if default_namespace is None else default_namespace,
                                             namespaces)
        why = target.unavailable(name) if hasattr(target, "unavailable") else None
        if not why:
            return False  # not ours to explain: the key goes on to the next binding, as Textual does
        binding = next((b for b in getattr(target, "BINDINGS", ()) if isinstance(b, Binding)
                        and b.action.split("(")[0] == name), None)
        self.notify(f"{binding.description if binding else name}: unavailable, {why}", severity="warning",
                    timeout=5, markup=False)
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if not self.dashboard.is_mounted:
            return
        for title, help_text, binding, node, why in self.palette_entries(screen):
            if why:
                yield SystemCommand(f"{title} — unavailable", f"{help_text}: unavailable, {why}",
                                    partial(self.notify, f"{binding.description}: unavailable, {why}",
                                            severity="warning", timeout=5, markup=False))
            else:
                yield SystemCommand(title, help_text, partial(self.run_action, binding.action, node))

    def on_unmount(self) -> None:
        self.stop_listener()
        if hasattr(self, "_gc_threshold"):
            gc.set_threshold(*self._gc_threshold)
            gc.unfreeze()
