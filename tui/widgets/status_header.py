"""The two header lines.

Line 1: ``LOCKED`` / ``UNLOCKED m:ss`` and the counts (``3 pending · 3 devices
knocking``) on the left, the view tabs on the right.
Line 2: the broker connection ("connected", or a "disconnected, retrying"
banner) and, when the dashboard runs the broker itself, "embedded broker:
stops when you quit".
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from store.device_text import printable
from store.durations import countdown

VIEWS = (("requests", "Requests"), ("users", "Users"), ("audit", "Audit"), ("roles", "Roles"))


@dataclass
class HeaderState:
    unlocked: bool = False
    remaining: float = 0.0
    pending: int = 0
    knocking: int = 0
    knocking_capped: bool = False
    throttled: int = 0
    throttled_from: str = ""  # the busiest address
    view: str = "requests"
    broker: str = "off"  # off | connecting | connected | retrying | refused | stopped
    broker_address: str = ""
    broker_detail: str = ""
    retry_in: float | None = None
    embedded: bool = False
    service_broker: str = ""  # from the service's retained status: "mosquitto 2.0.11, supervised"
    service_state: str = ""  # running | stopped | absent (no registry service behind this broker) | "" (not yet)
    service_http: str = ""  # where the service's HTTP API serves ("" when it has none)
    service_tls: str = ""  # its TLS listener for devices (mqtts://HOST:PORT, "" when none)
    service_problem: str = ""  # the running server cannot do its job (Status.server_problem), "" when well


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


NARROW = 80  # below this many columns the header says the same in fewer words
COMPACT = 100  # below this many columns the tabs name only the current view and the broker line drops "broker"


def below(width: int, columns: int) -> bool:
    """Is a header ``width`` columns wide (0: not laid out yet, full size) narrower than ``columns``?"""
    return 0 < width < columns


def render_window(state: HeaderState, width: int = 0) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if state.unlocked:
        text.append(f" UNLOCKED {countdown(state.remaining)} ", style="bold black on yellow")
    else:
        text.append(" LOCKED ", style="bold white on blue")
    text.append("  ")
    text.append(f"{state.pending} pending", style="bold" if state.pending else "dim")
    if state.knocking:
        text.append(" · ")
        more = "+" if state.knocking_capped else ""
        what = f"{state.knocking}{more} knocking" if below(width, NARROW) else (
            plural(state.knocking, "device").replace(" ", more + " ", 1) + " knocking")
        text.append(what, style="bold yellow")
    if state.throttled:
        text.append(" · ")
        where = f" from {printable(state.throttled_from, 40)}" if state.throttled_from else ""
        text.append(f"{state.throttled} throttled{where}", style="bold #ff8787")
    return text


def render_tabs(state: HeaderState, width: int = 0) -> Text:
    """`` 1 Requests  2 Users  3 Audit ``; compact: only the current view is named (`` 1 Requests  2  3 ``)."""
    compact = below(width, COMPACT)
    text = Text(no_wrap=True, justify="right")
    for i, (key, label) in enumerate(VIEWS, 1):
        current = key == state.view
        text.append(f" {i} {label} " if current or not compact else f" {i} ",
                    style="bold reverse" if current else "dim")
    return text


# One part of a line: its words from the longest to the shortest (each keeps the part that matters, the
# address or URL; the label goes first), and its style.
Part = tuple[tuple[str, ...], str]


def fit_parts(parts: list[Part], width: int, steps: list[int]) -> list[str]:
    """The words of each part that fit in ``width`` columns: the parts are shortened one step at a time, in
    the order ``steps`` names them (the least needed first); Rich's ellipsis cuts what still does not fit."""
    chosen = [0] * len(parts)

    def said() -> list[str]:
        return [words[min(chosen[i], len(words) - 1)] for i, (words, _) in enumerate(parts)]

    for i in steps:
        if not 0 < width < sum(map(len, said())):
            break
        chosen[i] += 1
    return said()


def _service_words(state: HeaderState) -> tuple[str, ...]:
    """Which broker the service drives, then shorter: the label goes before the version or the URL."""
    broker = printable(state.service_broker, 60)
    if state.embedded:  # the dashboard runs it: say so, and which Mosquitto (as serve's status does)
        version = broker.split(",")[0] if broker else "broker"
        return (f" · {version} · embedded broker: stops when you quit", f" · {version}, embedded: stops when you quit",
                " · embedded: stops when you quit", " · embedded: stops on quit", " · embedded")
    if not broker:
        return ("",)
    if broker.startswith("attached to "):
        return (f" · {broker}", f" · {broker.removeprefix('attached to ')}")
    return (f" · {broker}", f" · {broker.split(',')[0]}", "")


def render_broker(state: HeaderState, width: int = 0) -> Text:
    """The broker line. On a narrow header each part drops its label before its point: "broker" before the
    address, "attached to" before the URL, "HTTP API" before the HTTP address (issue 16)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if state.service_problem:  # first: whatever else is true, grants do not reach the broker now
        text.append(f" registry service: {printable(state.service_problem, 120)} ", style="bold white on red")
        text.append(" ")
    if state.broker == "connected" and state.service_state == "running":
        http = printable(state.service_http, 60)
        attached = state.service_broker.startswith("attached to ") and not state.embedded
        # the address the URL repeats goes early: before "attached to"
        repeated = attached and bool(state.broker_address) and state.service_broker.endswith(
            f"//{state.broker_address}")
        parts: list[Part] = [
            ((f" broker {state.broker_address} ", f" {state.broker_address} ", " ") if state.broker_address
             else (" broker ", " "), ""),
            (("● connected",), "bold green"),
            (_service_words(state), "bold yellow" if state.embedded else "dim"),
            ((f" · HTTP API {http}", f" · HTTP {http}", f" · {http}") if http else (" · no HTTP API",), "dim"),
        ]
        # the least needed first: "broker", "API", a repeated address, the service's label, "HTTP"
        steps = [0, 3, *([0] if repeated else []), 2, 2, 2, 0, 3, 2]
        if state.service_tls:  # the TLS listener's label goes first, its address before the service's words
            tls = printable(state.service_tls, 60)
            parts.append(((f" · TLS {tls}", f" · {tls}", ""), "dim"))
            steps = [4, *steps[:-3], 4, *steps[-3:]]
        words = fit_parts(parts, width - text.cell_len if width else 0, steps)
        for (_, style), said in zip(parts, words, strict=True):
            text.append(said, style=style)
        return text
    where_now = f" {state.broker_address} " if below(width, COMPACT) else (
        f" broker {state.broker_address} " if state.broker_address else " broker ")
    if state.broker == "connected":
        text.append(where_now, style="")
        text.append("● connected", style="bold green")
        if state.service_state == "stopped":
            text.append(" · registry service stopped: devices are not recorded", style="bold yellow")
        elif state.service_state == "absent":
            text.append(" · not a client-registry broker: no registry service status, requests will not appear",
                        style="bold white on red")
    elif state.broker == "connecting":
        text.append(where_now, style="")
        text.append("connecting…", style="yellow")
    elif state.broker in ("retrying", "refused"):
        word = "login refused" if state.broker == "refused" else "disconnected"
        retry = f", retrying in {state.retry_in:.0f}s" if state.retry_in else ", retrying"
        text.append(f"{where_now}{word}{retry} ", style="bold white on red")
        if state.broker_detail:
            text.append(f" {printable(state.broker_detail, 60)}", style="#ff8787")
    elif state.broker == "off":
        text.append(" no live updates (no broker configured)", style="dim")
    else:
        text.append(f"{where_now}{state.broker}", style="dim")
    if state.embedded:
        text.append(" · ")
        text.append("embedded: stops when you quit" if below(width, NARROW) else "embedded broker: stops when you quit",
                    style="bold yellow")
    return text


class StatusHeader(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = HeaderState()

    def compose(self) -> ComposeResult:
        with Horizontal(id="header-top"):
            yield Static(id="header-window")
            yield Static(id="header-tabs")
        yield Static(id="header-broker")

    def on_mount(self) -> None:
        self.show(self.state)

    def show(self, state: HeaderState) -> None:
        self.state = state
        if not self.is_mounted:
            return
        self.set_class(state.unlocked, "-unlocked")
        self.set_class(state.broker in ("retrying", "refused"), "-disconnected")
        width = self.size.width
        self.query_one("#header-window", Static).update(render_window(state, width), layout=False)  # 1fr x 1
        tabs = self.query_one("#header-tabs", Static)
        text = render_tabs(state, width)
        tabs.update(text, layout=text.cell_len != tabs.size.width)  # its width is its text's: a layout if that changes
        self.query_one("#header-broker", Static).update(render_broker(state, width), layout=False)  # one line

    def on_resize(self) -> None:
        self.show(self.state)
