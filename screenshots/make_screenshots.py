#!/usr/bin/env python3
"""Regenerate screenshots/*.svg from a scripted dashboard session.

    .venv/bin/python screenshots/make_screenshots.py   (120x36, 80x24 and 60x20)

The data comes from tui/demo.py (the real Registry with a fixed clock), so the
pictures only change when the dashboard does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tui.app import RegistryApp  # noqa: E402
from tui.demo import build_demo  # noqa: E402


async def session(out: Path, size: tuple[int, int], suffix: str) -> list[Path]:
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        reg, clock = build_demo(str(Path(tmp) / "registry.db"))
        app = RegistryApp(reg, clock=clock, actor="alice@dashboard")
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            dash = app.screen_stack[0]
            dash.header_state.broker_address = "127.0.0.1:1883"
            dash.set_broker_state("connected")

            async def until(done, what: str, timeout: float = 30.0) -> None:
                """The grant runs in a worker and its events arrive by the next sync: wait for them, so that no
                picture catches a half-done change (a busy line, "1 new above")."""
                deadline = time.monotonic() + timeout
                while not done():
                    if time.monotonic() > deadline:
                        raise SystemExit(f"make_screenshots: {what} did not happen within {timeout:g} s")
                    await pilot.pause(0.05)

            async def shot(name: str) -> None:
                await pilot.pause()
                path = out / f"{name}{suffix}.svg"
                app.save_screenshot(filename=path.name, path=str(out))
                saved.append(path)

            await pilot.press("down", "down", "down", "space", "space")
            await shot("requests")
            await pilot.press("g", *"devices/{username}/#=readWrite")
            await shot("grant")
            await pilot.press("enter")
            await until(lambda: not dash._writes and dash.writing is None, "the grant")
            await until(lambda: any(ev.kind == "request.granted" for ev in dash.audit_table.model.values()),
                        "the grant's events in the audit view")
            await pilot.press("ctrl+home", "enter")
            await shot("details")
            await pilot.press("escape", "slash", *"door")
            await shot("filter")
            await pilot.press("escape", "2")
            await shot("users")
            await pilot.press("3")
            await shot("audit")
            await pilot.press("4")
            await shot("roles")
            await pilot.press("question_mark")
            await shot("help")
        reg.close()
    return saved


def main() -> int:
    os.environ["TZ"] = "UTC"  # the details panel shows local times: make them the same everywhere
    time.tzset()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    saved = asyncio.run(session(args.out, (120, 36), ""))
    saved += asyncio.run(session(args.out, (80, 24), "-80x24"))
    saved += asyncio.run(session(args.out, (60, 20), "-60x20"))
    for path in saved:
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
