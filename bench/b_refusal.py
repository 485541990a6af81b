"""3. Refusals of unknown names: how fast each server refuses them, and whether memory stays flat.

Each server starts fresh (no devices; the registry is *locked*, its normal state, so every unknown name is a
"device knocking": the registry plugin refuses it and counts it itself, and reports the counts to the service
about once a second, which writes them in one transaction).
The generator sends CONNECTs with a new unknown name each (password ``some-password``), 50 in flight: a
warm-up, then two halves. After each part it waits until the service has gone idle (it works through the
knocks it queued; at most ``settle_max`` seconds) and reads the RSS of Mosquitto and of the service, so that
growth in the first half (buffers, caches filling) can be told from growth in the second (a leak).
Refusals/s are over the two halves only (settling not included). The servers run one after the other.

For the registry, what the service did is read from its database (the knocks it counted: the sum of
``knocks.count``, read once no report has come for 1.5 s) and from /proc (its CPU time and context switches
from the warm-up's end until it went idle after the second half). A last
short flood is sampled with py-spy (bench/profile.py; full runs only).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from . import procs, state
from .loadgen import Engine, Meter, closed_loop, cpu_of
from .mqtt import connect_packet
from .profile import Spy

SIZES = {"full": dict(refusals=50_000, warmup=2_000, concurrency=50, settle_max=60.0, profile=20_000),
         "quick": dict(refusals=200, warmup=20, concurrency=5, settle_max=15.0, profile=0)}
PASSWORD = "some-password"


def knocks_counted(db: Path) -> int:
    """Knocks the registry has counted (read-only, beside the running service)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute('SELECT COALESCE(SUM("count"), 0) FROM "knocks"').fetchone()[0]


def knocks_settled(db: Path, quiet: float = 1.5, limit: float = 10.0) -> int:
    """Knocks counted once no new report has come for ``quiet`` s: while locked the plugin counts knocks
    itself and reports them about once a second, so the last second of a flood arrives after it."""
    t0 = time.monotonic()
    last, since = knocks_counted(db), time.monotonic()
    while time.monotonic() - t0 < limit and time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = knocks_counted(db)
        if now != last:
            last, since = now, time.monotonic()
    return last


def context_switches(pid: int) -> int:
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
    except OSError:
        pass
    return total


def settle(server: procs.Server, limit: float) -> float:
    """Wait until the service uses (almost) no CPU for 0.5 s; returns the seconds waited."""
    pid = server.pids.get("service")
    t0 = time.monotonic()
    if not pid:
        time.sleep(0.2)
        return time.monotonic() - t0
    last = cpu_of(pid)
    while time.monotonic() - t0 < limit:
        time.sleep(0.5)
        now = cpu_of(pid)
        if now - last < 0.03:
            break
        last = now
    return time.monotonic() - t0


def _part(engine: Engine, server: procs.Server, start: int, count: int, concurrency: int) -> dict:
    def make(i: int):
        n = start + i
        return connect_packet(f"refused-{n}", f"knock-{n:06d}", PASSWORD), None

    with Meter(server.pids) as meter:
        r = closed_loop(engine, make, count, concurrency, limit_s=120.0)
    return {"codes": r["codes"], "attempts": r["attempts"], **meter.summary()}


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    half = size["refusals"] // 2
    out: dict = {"sizes": size, "servers": {}}
    for kind in procs.KINDS:
        server = procs.Server(kind, state.fresh(kind, 0, f"refusal-{kind}"))
        with server:
            engine = Engine("127.0.0.1", server.port)
            registry = "service" in server.pids
            warm = _part(engine, server, 0, size["warmup"], size["concurrency"])
            settle(server, size["settle_max"])
            if registry:
                pid = server.pids["service"]
                knocks0, cpu0, ctx0 = knocks_counted(server.db), cpu_of(pid), context_switches(pid)
            rss0 = server.rss()
            a = _part(engine, server, size["warmup"], half, size["concurrency"])
            drain_a = settle(server, size["settle_max"])
            rss1 = server.rss()
            b = _part(engine, server, size["warmup"] + half, size["refusals"] - half, size["concurrency"])
            drain_b = settle(server, size["settle_max"])
            rss2 = server.rss()
            service: dict = {}
            if registry:
                knocks = knocks_settled(server.db) - knocks0
                service = {"knocks_recorded": knocks, "service_cpu_total_s": cpu_of(pid) - cpu0,
                           "service_ms_per_knock": 1000 * (cpu_of(pid) - cpu0) / max(1, knocks),
                           "context_switches_per_knock": (context_switches(pid) - ctx0) / max(1, knocks),
                           "plugin_queue_full_logged": server.count_log("Resource temporarily unavailable")}
                if size["profile"]:
                    start = size["warmup"] + size["refusals"]
                    with Spy(pid, 3.0) as spy:
                        _part(engine, server, start, size["profile"], size["concurrency"])
                    settle(server, size["settle_max"])
                    out["profile"] = {"what": f"{size['profile']:,} refusals, 3 s sampled", **spy.summary}
            engine.close()
        wall = a["wall_s"] + b["wall_s"]
        codes: dict = {}
        for part in (warm, a, b):
            for code, n in part["codes"].items():
                codes[code] = codes.get(code, 0) + n
        cpu = {p: a["cpu_s"].get(p, 0.0) + b["cpu_s"].get(p, 0.0) for p in a["cpu_s"]}
        mib = {p: (rss0[p] / 2**20, rss1[p] / 2**20, rss2[p] / 2**20) for p in rss0}
        out["servers"][kind] = {
            "refusals": size["refusals"], "codes": codes, "per_s": (a["attempts"] + b["attempts"]) / wall,
            "per_s_halves": [a["attempts"] / a["wall_s"], b["attempts"] / b["wall_s"]],
            "cpu_pct": {p: 100 * c / wall for p, c in cpu.items()},
            "mosquitto_us_per_refusal": 1e6 * cpu.get("mosquitto", 0.0) / size["refusals"],
            "service_cpu_s": cpu.get("service"),
            "service_drain_s": [drain_a, drain_b] if registry else None,
            **service,
            "rss_mib": mib,
            "growth_first_half_mib": {p: v[1] - v[0] for p, v in mib.items()},
            "growth_second_half_mib": {p: v[2] - v[1] for p, v in mib.items()},
        }
    ours, theirs = out["servers"]["registry"], out["servers"]
    out["ratios_registry_over"] = {k: ours["per_s"] / theirs[k]["per_s"] for k in ("passwd", "dynsec")}
    return out
