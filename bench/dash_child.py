"""One dashboard measurement in its own process (clean RSS, no GIL shared with server or load generator).

    python -m bench.dash_child open  --db D --rows N
    python -m bench.dash_child keys  --db D --rows N --presses K
    python -m bench.dash_child flood --db D --rows N --port P --rate R --seconds S --presses-per-s F
    ... --code DIR: the dashboard's code (store/, tui/) from DIR, e.g. a checkout of an older commit


Prints one JSON line. Key latency = from posting the key event to the app (as the terminal driver does) until
the first frame the compositor hands to ``App._display`` in which the key's effect is visible (cursor moved or
selection changed). Headless, so the terminal write itself is not included: a lower bound of what an operator
sees, but it includes every message, action, table update and repaint in between. ``pilot.press`` is not used
because it waits for the whole *process* to be idle (the listener thread keeps it busy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("down", "space", "down", "up", "space", "pagedown", "pageup", "down")
KEY_TIMEOUT = 5.0


class KeyTimer:
    """Times key -> first displayed frame showing the key's effect (see the module docstring)."""

    def __init__(self, app) -> None:
        from tui.widgets.requests_table import RequestsTable

        self.app = app
        self.table = app.screen.query_one(RequestsTable)
        self._pending: tuple | None = None
        original = app._display

        def display(screen, renderable) -> None:
            original(screen, renderable)
            p = self._pending
            if p is not None and renderable is not None and self.effect() != p[0]:
                self._pending = None
                p[1].append(time.perf_counter())
                p[2].set()

        app._display = display

    def effect(self):
        return self.table.cursor_row, len(self.table.selected)

    async def press(self, key: str) -> float:
        from textual import events

        done = asyncio.Event()
        stamp: list[float] = []
        self._pending = (self.effect(), stamp, done)
        t0 = time.perf_counter()
        self.app.post_message(events.Key(key, " " if key == "space" else None))
        try:
            await asyncio.wait_for(done.wait(), KEY_TIMEOUT)
        except TimeoutError:
            self._pending = None
            return KEY_TIMEOUT
        return stamp[0] - t0


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _app(db: str, mqtt_target=None):
    from store import open_registry
    from tui.app import RegistryApp

    reg = open_registry(db)
    return reg, RegistryApp(reg, mqtt_target=mqtt_target, actor="bench")


async def _opened(app, pilot, rows: int, timeout: float = 120.0) -> float:
    from tui.widgets.requests_table import RequestsTable

    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end:
        try:
            table = app.screen.query_one(RequestsTable)
            # a table that holds a bounded window (WINDOW rows) is open when its window is filled
            if table.row_count >= min(rows, getattr(table, "WINDOW", rows)):
                break
        except Exception:
            pass
        await asyncio.sleep(0.005)
    await pilot.pause()
    return time.perf_counter()


async def do_open(db: str, rows: int) -> dict:
    t0 = time.perf_counter()
    import tui.app  # noqa: F401 - timed apart: importing the app is part of opening, but not the table's doing

    imported = time.perf_counter()
    reg, app = _app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        t1 = await _opened(app, pilot, rows)
        rss = rss_mib()
        await pilot.press("q")
    reg.close()
    return {"rows": rows, "open_s": t1 - t0, "import_s": imported - t0, "rss_mib": rss}


async def _press_many(pilot, presses: int, spacing: float = 0.0) -> list[float]:
    timer = getattr(pilot.app, "_bench_timer", None) or KeyTimer(pilot.app)
    pilot.app._bench_timer = timer
    lat = []
    for i in range(presses):
        lat.append(await timer.press(KEYS[i % len(KEYS)]))
        await asyncio.sleep(max(0.0, spacing - lat[-1]) if spacing else 0.02)
    return lat


async def do_keys(db: str, rows: int, presses: int) -> dict:
    from bench.common import summary_ms

    reg, app = _app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await _opened(app, pilot, rows)
        await _press_many(pilot, 10)  # warm-up
        lat = await _press_many(pilot, presses)
        rss = rss_mib()
        await pilot.press("q")
    reg.close()
    return {"rows": rows, "rss_mib": rss, **summary_ms(lat)}


async def do_flood(db: str, rows: int, port: int, user: str, password: str, rate: int, seconds: float,
                   per_s: float) -> dict:
    from bench.common import summary_ms
    from tui.listener import MqttTarget
    from tui.widgets.requests_table import RequestsTable

    reg, app = _app(db, MqttTarget(host="127.0.0.1", port=port, username=user, password=password))
    async with app.run_test(size=(120, 40)) as pilot:
        await _opened(app, pilot, rows)
        t_end = time.perf_counter() + 20
        while app.listener_state != "connected" and time.perf_counter() < t_end:
            await asyncio.sleep(0.05)
        listener = app.listener_state
        gen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", "--port", str(port), "--rate", str(rate),
                                "--seconds", str(seconds), "--prefix", "flood"], stdout=subprocess.PIPE, text=True)
        lat = await _press_many(pilot, int(per_s * seconds), spacing=1.0 / per_s)
        rows_during = app.screen.query_one(RequestsTable).row_count
        out, _ = await asyncio.to_thread(gen.communicate)
        await pilot.pause(1.0)
        table = app.screen.query_one(RequestsTable)
        rows_end = getattr(table, "total", table.row_count)  # requests known to the dashboard, not rows held
        rss = rss_mib()
        await pilot.press("q")
    reg.close()
    return {"rows_start": rows, "rows_after_keys": rows_during, "rows_end": rows_end, "listener": listener,
            "loadgen": json.loads(out.strip().splitlines()[-1]) if out.strip() else None, "rss_mib": rss,
            **summary_ms(lat)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("open", "keys", "flood"))
    p.add_argument("--db", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--presses-per-s", type=float, default=10.0)
    p.add_argument("--code", help="import store/ and tui/ from this checkout instead of this one")
    a = p.parse_args()
    if a.code:
        sys.path.insert(0, a.code)  # before this tree and the editable install's finder (appended to meta_path)
    if a.mode == "open":
        r = asyncio.run(do_open(a.db, a.rows))
    elif a.mode == "keys":
        r = asyncio.run(do_keys(a.db, a.rows, a.presses))
    else:
        r = asyncio.run(do_flood(a.db, a.rows, a.port, a.user, a.password, a.rate, a.seconds, a.presses_per_s))
    import tui

    r["code"] = str(Path(tui.__file__).resolve().parent.parent)  # which checkout was measured
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
