"""The dashboard shows ⚠ before a name that may pass for another one, lights its odd characters, and the
details view says why (store.names)."""

from __future__ import annotations

from rich.text import Text

from tui.app import RegistryApp
from tui.safe import LOOKALIKE_MARKER, SUSPICIOUS_STYLE, name_text
from tui.screens.details import DetailsScreen

from .conftest import wait_for

CYRILLIC = "s\u0435nsor-1"  # Cyrillic е among Latin letters
HYPHEN = "sensor\u20111"  # U+2011 NON-BREAKING HYPHEN
ZERO_WIDTH = "sensor\u200b-2"


def lit(text: Text) -> list[str]:
    """The characters shown in the suspicious style."""
    return [text.plain[span.start:span.end] for span in text.spans if span.style == SUSPICIOUS_STYLE]


def test_name_text_marks_and_lights_only_the_odd_characters():
    plain = name_text("sensor-1")
    assert plain.plain == "sensor-1" and not plain.spans
    assert name_text(CYRILLIC).plain == f"{LOOKALIKE_MARKER} {CYRILLIC}" and lit(name_text(CYRILLIC)) == ["\u0435"]
    assert lit(name_text(HYPHEN)) == ["\u2011"]
    zero = name_text(ZERO_WIDTH)
    assert zero.plain == f"{LOOKALIKE_MARKER} sensor\\u200b-2" and lit(zero) == ["\\u200b"]  # escaped, and lit
    long = name_text("\u0435" + "x" * 200, limit=64)
    assert long.plain.startswith(f"{LOOKALIKE_MARKER} \u0435x") and long.plain.endswith("…") and len(long) == 66


async def test_the_marker_is_visible_in_the_table_and_the_details(reg):
    reg.unlock(300)
    ids = {}
    for i, name in enumerate(["sensor-1", HYPHEN, ZERO_WIDTH, CYRILLIC]):
        res = reg.record_attempt(name, "secret-pw", f"c{i}", f"10.0.0.{i}:1", "mqtt")
        assert res.accepted
        ids[name] = str(res.request.id)
    app = RegistryApp(reg)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen_stack[0].requests_table
        await wait_for(pilot, lambda: table.row_count == 4, message="four rows")

        def cell(name: str) -> Text:
            return table.get_cell(ids[name], "username")

        assert cell("sensor-1").plain == "sensor-1"
        for name in (CYRILLIC, HYPHEN, ZERO_WIDTH):
            assert cell(name).plain.startswith(f"{LOOKALIKE_MARKER} "), name
        assert lit(cell(CYRILLIC)) == ["\u0435"]
        screen = app.export_screenshot()
        assert screen.count(LOOKALIKE_MARKER) == 3  # on screen, once per look-alike row

        table.move_cursor(row=table.get_row_index(ids[CYRILLIC]))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), message="details")
        body = app.screen.body.plain
        assert f"{LOOKALIKE_MARKER} {CYRILLIC}" in body
        assert f"{LOOKALIKE_MARKER} look-alike  mixed scripts: Latin+Cyrillic (U+0435 CYRILLIC SMALL LETTER IE)" in body
        details_screen = app.export_screenshot()
        assert "U+0435" in details_screen and "look-alike" in details_screen
        await pilot.press("escape")

        table.move_cursor(row=table.get_row_index(ids["sensor-1"]))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), message="details")
        assert LOOKALIKE_MARKER not in app.screen.body.plain and "look-alike" not in app.screen.body.plain
        await pilot.press("escape")


async def test_a_live_look_alike_request_arrives_marked(reg):
    reg.unlock(300)
    app = RegistryApp(reg)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen_stack[0].requests_table
        res = reg.record_attempt(CYRILLIC, "secret-pw", "c", "10.0.0.9:1", "mqtt")
        app.screen_stack[0].load_requests(0)  # as a relayed event or the changelog poll would
        await wait_for(pilot, lambda: table.row_count == 1, message="the new row")
        assert table.get_cell(str(res.request.id), "username").plain == f"{LOOKALIKE_MARKER} {CYRILLIC}"
        assert LOOKALIKE_MARKER in app.export_screenshot()  # visible at 80 columns too
