"""Where the service's Python time goes: py-spy (the ``bench`` extra) sampling ``client-registry serve`` during a
short extra phase, so the hot spots in docs/benchmarks.md are those of the code that was measured.

Only samples of a thread holding the GIL are kept (``--gil``): the Python work. Work done with the GIL released
(SQLite executing a statement, system calls, thread wake-ups) does not show here; it does in the process's CPU
time, and ``Registry.login``'s whole cost is measured separately (b_pipeline.store_costs). Each frame's share is
*inclusive* (the samples in which it is anywhere on the stack); frames that are on every stack (thread
bootstrap, the event loop's run loop, click) are left out. (py-spy's default mode counts threads waiting in
epoll as busy here, which drowns the rest.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from . import procs

SKIP = re.compile(
    r"^(<module>|Thread\.(run|_bootstrap|_bootstrap_inner)|_worker|_WorkItem\.run|BaseEventLoop\.(run_forever|"
    r"run_until_complete|_run_once)|Runner\.run|run|Handle\._run|serve|serve_main|_serve|RegistryGroup\.invoke|"
    r"Command\.\w+|Group\.invoke|Context\.invoke|pass_context\.<locals>\.new_func|main|"
    r"Client\.(_thread_main|loop_forever))$")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(:\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.is_file() else shutil.which("py-spy")


class Spy:
    """``with Spy(pid, seconds) as spy: ...load...`` then ``spy.summary``."""

    def __init__(self, pid: int, seconds: float, rate: int = 200) -> None:
        self.pid, self.seconds, self.rate = pid, seconds, rate
        self.path = procs.tempdir("py-spy") / "samples.txt"
        self.proc: subprocess.Popen | None = None
        self.summary: dict = {}

    def __enter__(self) -> Spy:
        exe = py_spy()
        if exe is None:
            self.summary = {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
            return self
        self.proc = subprocess.Popen([exe, "record", "--gil", "--nonblocking", "-r", str(self.rate), "-d",
                                      str(max(1, int(self.seconds))), "-p", str(self.pid), "-o", str(self.path),
                                      "--format", "raw"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.path.is_file():
            self.summary = {"skipped": f"py-spy failed: {(err or '').strip()[-200:]}"}
            return
        self.summary = summarize(self.path)


PROJECT = ("store/", "broker/", "tui/")
WRAPPER = re.compile(r"<locals>\.(wrapper|inner)$")


def summarize(path: Path, top: int = 10) -> dict:
    """``ours``: the project's functions by inclusive share of the samples; ``libraries``: the share of the
    samples in which each library (peewee, paho, asyncio, ...) is on the stack."""
    ours: Counter = Counter()
    libraries: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        seen, libs = set(), set()
        for frame in stack.split(";"):
            m = FRAME.match(frame.strip())
            if not m or SKIP.match(m["func"]) or WRAPPER.search(m["func"]):
                continue
            file = _short(m["file"])
            if file.startswith(PROJECT):
                seen.add(f"{m['func']} ({file})")
            elif not file.startswith(("threading", "<")):
                libs.add(file.split("/")[0].removesuffix(".py"))
        for name in seen:
            ours[name] += n
        for lib in libs:
            libraries[lib] += n
    pct = (lambda c: [(k, 100.0 * v / total) for k, v in c.most_common(top)]) if total else (lambda c: [])
    return {"samples": total, "ours": pct(ours), "libraries": pct(libraries)}


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1].lstrip("0123456789./")
    return file


def lines(profile: dict | None, width: int = 3) -> list[str]:
    """The profile as a few indented lines for the results table."""
    if not profile:
        return []
    if "skipped" in profile:
        return [f"    (not profiled: {profile['skipped']})"]
    out = [f"    py-spy, {profile.get('what', '')}: {profile['samples']} samples with the GIL held; share of them:"]
    ours = profile.get("ours", [])
    for i in range(0, len(ours), width):
        out.append("      " + "; ".join(f"{name} {p:.0f}%" for name, p in ours[i:i + width]))
    libs = profile.get("libraries", [])
    if libs:
        out.append("      libraries on the stack: " + ", ".join(f"{name} {p:.0f}%" for name, p in libs[:8]))
    return out
