"""Device strings never reach the screen as markup, control sequences or bidi overrides."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from store.device_text import printable as clean
from store.durations import ago, countdown
from tui.app import RegistryApp
from tui.safe import safe_text

from .conftest import wait_for

HOSTILE = [
    "[bold red]boom[/]",
    "[link=http://evil]x[/link]",
    "\u202eelif.exe",
    "🔥💧🌡️-sensor",
    "x" * 128,
    "مرحبا-device",
    "zero\u200bwidth",
    "plain-but-\u2066isolated\u2069",
]


def test_markup_is_literal_and_controls_are_escaped():
    assert safe_text("[bold]x[/]").plain == "[bold]x[/]"
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("\u202eabc") == "\\u202eabc"
    assert clean("line\nbreak") == "line\\nbreak"
    assert clean("para\u2029graph") == "para\\u2029graph"
    assert len(clean("y" * 500, 64)) == 64 and clean("y" * 500, 64).endswith("…")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_nothing_unsafe_survives(value):
    out = clean(value, None)
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7f or 0x202a <= ord(ch) <= 0x202e
                   or 0x2066 <= ord(ch) <= 0x2069 or ch in "\u2028\u2029" for ch in out)
    console = Console(width=80, record=True, color_system=None)
    console.print(safe_text(value))  # never raises


def test_times():
    assert ago(100.0, 100.5) == "now"
    assert ago(100.0, 145.0) == "45s"
    assert ago(100.0, 100.0 + 3 * 3600) == "3h"
    assert ago(None, 1.0) == "—"
    assert countdown(299.2) == "5:00" and countdown(61) == "1:01" and countdown(0) == "0:00"
    assert countdown(4 * 3600) == "4:00:00" and countdown(3599) == "59:59" and countdown(3661) == "1:01:01"


async def test_hostile_requests_render(reg):
    reg.unlock(300)
    for i, name in enumerate(HOSTILE):
        res = reg.record_attempt(name, "secret-pw", name + "\x1b[5m\t", f"10.9.0.{i}:1", "mqtt",
                                 context={"note": name + "\x00\r"})
        assert res.accepted, (name, res.reason)
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen_stack[0].requests_table
        await wait_for(pilot, lambda: table.row_count == len(HOSTILE), message="all rows")
        screen_text = app.export_screenshot()
        assert "boom" in screen_text and "[bold red]" in screen_text.replace("&#160;", " ")
        for _ in HOSTILE:
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.press("down")
        await pilot.press("a", "g", "enter")
        await wait_for(pilot, lambda: all(r.status == "granted" for r in table.model.values()), message="granted")
        await pilot.press("2")
        assert app.is_running


def test_header_names_the_broker_the_service_drives():
    """From the service's retained status: which broker, and a stopped service said plainly."""
    from tui.widgets.status_header import HeaderState, render_broker

    state = HeaderState(broker="connected", broker_address="gw:1883", service_broker="attached to mqtt://gw:1883",
                        service_state="running", service_http="127.0.0.1:8080")
    assert render_broker(state).plain == (" broker gw:1883 ● connected · attached to mqtt://gw:1883"
                                          " · HTTP API 127.0.0.1:8080")
    state.service_http = ""
    assert render_broker(state).plain.endswith("· no HTTP API")
    state.service_state = "stopped"
    assert "registry service stopped: devices are not recorded" in render_broker(state).plain
    state.service_broker, state.service_state = "[red]x\x1b[2J", "running"  # a hostile status is text, escaped
    assert "\x1b" not in render_broker(state).plain and "[red]" in render_broker(state).plain
