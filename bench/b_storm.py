"""3. Reconnect storm: N granted devices reconnect at once after a server restart.

The server is started fresh (cold credential cache, as after a restart) with N granted users in its database;
then all N devices connect at the same instant, each retrying with a short backoff (0.5-1 s, like firmware)
if its socket is refused or no CONNACK arrives. Measured: time from the restarted server accepting
connections until all N hold an accepted session, the number of retries, and the server's peak RSS (VmHWM).
Run against Mosquitto and stock amqtt too, for scale.
"""

from __future__ import annotations

import asyncio
import random

from . import procs
from .common import PASSWORD, Clock, raise_fd_limit, server_with_users
from .mqtt import connect

SIZES = {"full": dict(devices=2000, timeout=120.0), "quick": dict(devices=40, timeout=30.0)}


async def _storm(port: int, names: list[str], timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    connected_at: list[float] = []
    retries = 0
    conns = []
    go = asyncio.Event()

    async def device(name: str) -> None:
        nonlocal retries
        await go.wait()
        while loop.time() - t0 < timeout:
            try:
                conn = await connect("127.0.0.1", port, f"storm-{name}", name, PASSWORD, clean=True, timeout=10)
                if conn.rc == 0:
                    connected_at.append(loop.time() - t0)
                    conns.append(conn)
                    return
                await conn.close(disconnect=False)
            except (OSError, asyncio.TimeoutError):
                pass
            retries += 1
            await asyncio.sleep(random.uniform(0.5, 1.0))

    tasks = [asyncio.create_task(device(n)) for n in names]
    await asyncio.sleep(0)
    with Clock() as clock:
        t0 = loop.time()
        go.set()
        await asyncio.gather(*tasks)
    await asyncio.gather(*(c.close() for c in conns))
    return {"devices": len(names), "connected": len(connected_at), "retries": retries,
            "all_connected_s": max(connected_at) if len(connected_at) == len(names) else None,
            "half_connected_s": sorted(connected_at)[len(connected_at) // 2] if connected_at else None,
            "loadgen_cpu_pct": clock.loadgen_cpu_pct}


def run(quick: bool = False, kinds: tuple[str, ...] = procs.KINDS) -> dict:
    raise_fd_limit()
    size = SIZES["quick" if quick else "full"]
    names = [f"storm-{i:05d}" for i in range(size["devices"])]
    out: dict = {"sizes": size, "servers": {}}
    for kind in kinds:
        server = server_with_users(kind, "storm", names)
        if server is None:
            out["servers"][kind] = {"skipped": "mosquitto not installed"}
            continue
        with server:
            rss0 = server.rss()
            cpu0 = server.cpu_seconds()
            r = asyncio.run(_storm(server.port, names, size["timeout"]))
            r["rss_before_mib"] = rss0 / 2**20
            r["peak_rss_mib"] = server.peak_rss() / 2**20
            r["server_cpu_s"] = server.cpu_seconds() - cpu0
        out["servers"][kind] = r
    return out
