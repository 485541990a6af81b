"""2. Authentication throughput: CONNECT -> CONNACK per second for granted users, side by side.

Each connection: TCP connect, CONNECT (clean session, distinct client id), CONNACK, DISCONNECT, close.
Cold = each user's first connect since the server started; warm = the same users again.
"""

from __future__ import annotations

import asyncio
import itertools

from . import procs
from .common import PASSWORD, Clock, server_with_users, summary_ms
from .mqtt import connect_once

SIZES = {
    "full": dict(seq_cold=200, seq_warm=1000, conc_cold=600, conc_warm=3000, concurrency=50),
    "quick": dict(seq_cold=10, seq_warm=30, conc_cold=30, conc_warm=60, concurrency=10),
}


async def _phase(port: int, users: list[str], total: int, concurrency: int) -> dict:
    """``total`` connects cycling over ``users`` with ``concurrency`` clients in flight."""
    latencies: list[float] = []
    failures = 0
    order = itertools.islice(itertools.cycle(users), total)
    counter = itertools.count()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        nonlocal failures
        for name in order:
            t0 = loop.time()
            try:
                rc = await connect_once("127.0.0.1", port, f"{name}-{next(counter)}", name, PASSWORD)
            except (OSError, asyncio.TimeoutError):
                rc = None
            latencies.append(loop.time() - t0)
            if rc != 0:
                failures += 1

    with Clock() as clock:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"connects": total, "failures": failures, "wall_s": clock.wall,
            "per_s": total / clock.wall, "loadgen_cpu_pct": clock.loadgen_cpu_pct, **summary_ms(latencies)}


def run(quick: bool = False, kinds: tuple[str, ...] = procs.KINDS) -> dict:
    size = SIZES["quick" if quick else "full"]
    seq_users = [f"auth-seq-{i:05d}" for i in range(size["seq_cold"])]
    conc_users = [f"auth-conc-{i:05d}" for i in range(size["conc_cold"])]
    results: dict = {"sizes": size, "servers": {}}
    for kind in kinds:
        server = server_with_users(kind, "auth", seq_users + conc_users)
        if server is None:
            results["servers"][kind] = {"skipped": "mosquitto not installed"}
            continue
        with server:
            cpu0 = server.cpu_seconds()
            out = {}
            for name, users, total, conc in (
                ("seq_cold", seq_users, size["seq_cold"], 1),
                ("seq_warm", seq_users, size["seq_warm"], 1),
                ("conc_cold", conc_users, size["conc_cold"], size["concurrency"]),
                ("conc_warm", conc_users, size["conc_warm"], size["concurrency"]),
            ):
                s_cpu = server.cpu_seconds()
                out[name] = asyncio.run(_phase(server.port, users, total, conc))
                out[name]["server_cpu_pct"] = 100 * (server.cpu_seconds() - s_cpu) / out[name]["wall_s"]
            out["rss_mib"] = server.rss() / 2**20
            out["peak_rss_mib"] = server.peak_rss() / 2**20
            out["server_cpu_s"] = server.cpu_seconds() - cpu0
        results["servers"][kind] = out
    ours = results["servers"].get("ours", {})
    ratios = {}
    for other in ("stock", "mosquitto"):
        theirs = results["servers"].get(other, {})
        if "seq_cold" in ours and "seq_cold" in theirs:
            ratios[other] = {ph: ours[ph]["per_s"] / theirs[ph]["per_s"]
                             for ph in ("seq_cold", "seq_warm", "conc_cold", "conc_warm")}
    results["ratios_ours_over"] = ratios
    return results
