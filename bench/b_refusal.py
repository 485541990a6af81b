"""4. Refusal hygiene: the server's resident memory before and after a run of refused CONNECTs.

The refusals cycle through the three kinds a registry sees: an unknown name while the registry is locked
(a device knocking), a known user with a wrong password, and a CONNECT without credentials. ``before`` is
taken after a warm-up of refusals (so one-time allocations are not counted as growth); ``after`` once the
run is over and the server has had a second to settle; ``mid`` halfway, so that a bounded one-off growth (caches
filling) can be told from a leak (which grows as much in the second half as in the first). Also run with the registry plugins on *stock* amqtt
(amqtt_fixes=False) to show the leak the benchmark is there to catch.
"""

from __future__ import annotations

import asyncio
import time

from . import procs
from .common import Clock, gather_bounded, make_users
from .mqtt import connect_once

SIZES = {"full": dict(refusals=5000, warmup=300, concurrency=20, settle=1.0),
         "quick": dict(refusals=30, warmup=6, concurrency=5, settle=0.2)}
KNOWN = "refusal-known-user"


async def _refuse(port: int, start: int, count: int, concurrency: int) -> dict:
    codes: dict[str, int] = {}

    async def one(i: int) -> None:
        kind = i % 3
        if kind == 0:
            user, pw = f"knock-{i:06d}", "some-password"
        elif kind == 1:
            user, pw = KNOWN, "wrong-password"
        else:
            user, pw = None, None
        try:
            rc = await connect_once("127.0.0.1", port, f"refused-{i}", user, pw)
        except (OSError, asyncio.TimeoutError):
            rc = None
        codes[str(rc)] = codes.get(str(rc), 0) + 1

    with Clock() as clock:
        await gather_bounded([one(i) for i in range(start, start + count)], concurrency)
    return {"codes": codes, "per_s": count / clock.wall, "loadgen_cpu_pct": clock.loadgen_cpu_pct}


def run(quick: bool = False, kinds: tuple[str, ...] = ("ours", "unfixed")) -> dict:
    size = SIZES["quick" if quick else "full"]
    out: dict = {"sizes": size, "servers": {}}
    for kind in kinds:
        work = procs.tempdir(f"refusal-{kind}")
        db = str(work / "registry.db")
        make_users(db, [KNOWN])  # the registry stays locked: unknown names are only counted as knocking
        with procs.Server(kind, work, db=db) as server:
            asyncio.run(_refuse(server.port, 0, size["warmup"], size["concurrency"]))
            time.sleep(size["settle"])
            before = server.rss()
            half = size["refusals"] // 2
            r = asyncio.run(_refuse(server.port, size["warmup"], half, size["concurrency"]))
            time.sleep(size["settle"])
            mid = server.rss()
            r2 = asyncio.run(_refuse(server.port, size["warmup"] + half, size["refusals"] - half,
                                     size["concurrency"]))
            time.sleep(size["settle"])
            after = server.rss()
        for code, count in r2["codes"].items():
            r["codes"][code] = r["codes"].get(code, 0) + count
        r["per_s"] = (r["per_s"] + r2["per_s"]) / 2
        r.update(refusals=size["refusals"], rss_before_mib=before / 2**20, rss_after_mib=after / 2**20,
                 rss_mid_mib=mid / 2**20, growth_second_half_mib=(after - mid) / 2**20,
                 growth_mib=(after - before) / 2**20,
                 growth_bytes_per_refusal=(after - before) / size["refusals"])
        out["servers"][kind] = r
    return out
