"""1. Registration pipeline: new devices CONNECT at a set rate while the registry is unlocked.

Latency is measured from the moment a device's CONNECT is written to the socket to the moment an admin
subscriber on ``$registry/#`` receives the ``request.created`` event naming that device. Arrivals are open-loop
(device i starts at t0 + i/rate whether or not earlier devices got their CONNACK), as real devices would.
A rate is *sustained without backlog* when every attempt's event arrives, the median latency of the last
quarter of devices is at most 1.5 times that of the first quarter plus 50 ms (latency is not growing), and the
last event arrives within one second of the last CONNECT (nothing queued up behind the load).
"Recorded exactly once" is checked in the database afterwards: one request row with attempts == 1 and one
``request.created`` event per device. Under overload devices give up after 30 s without CONNACK (as firmware
would), so ``lost`` counts devices the server never got to, ``duplicated`` any double recording.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from . import procs
from .common import Clock, percentile, summary_ms
from .mqtt import connect_packet, read_packet

CONNACK_TIMEOUT = 30.0  # a device gives up on a CONNECT after this long (firmware typically waits 10-30 s)
SIZES = {
    "full": dict(rates=(20, 50, 100, 200, 500), seconds=4.0, drain=30.0),
    "quick": dict(rates=(50, 100), seconds=0.2, drain=20.0),
}


async def _attempt(port: int, name: str, password: str, sent: dict, codes: Counter) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        codes["connect-failed"] += 1
        return
    try:
        sent[name] = asyncio.get_running_loop().time()
        writer.write(connect_packet(f"cid-{name}", name, password))
        head, body = await asyncio.wait_for(read_packet(reader), CONNACK_TIMEOUT)
        codes[body[1] if head == 0x20 else "other"] += 1
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
        codes["no-connack"] += 1
    finally:
        writer.close()


async def _run_rate(port: int, console, rate: int, seconds: float, drain: float, prefix: str) -> dict:
    from .mqtt import Subscriber

    names = [f"{prefix}-{i:05d}" for i in range(max(1, int(rate * seconds)))]
    wanted = set(names)
    received: dict[str, float] = {}
    dupes = Counter()
    done = asyncio.Event()

    def on_message(now: float, topic: str, payload: bytes) -> None:
        if not topic.endswith("/request.created"):
            return
        subject = json.loads(payload).get("subject")
        if subject in wanted:
            if subject in received:
                dupes[subject] += 1
            else:
                received[subject] = now
                if len(received) == len(wanted):
                    done.set()

    sub = Subscriber()
    sub.on_message = on_message
    await sub.start("127.0.0.1", port, console.username, console.password, "$registry/#")
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    codes: Counter = Counter()
    tasks = []
    with Clock() as clock:
        t0 = loop.time()
        for i, name in enumerate(names):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_attempt(port, name, "pw-" + name, sent, codes)))
        last_send = loop.time()
        send_lag = last_send - (t0 + (len(names) - 1) / rate)
        try:
            await asyncio.wait_for(done.wait(), drain)
        except asyncio.TimeoutError:
            pass
        drained_at = loop.time()
        await asyncio.gather(*tasks)
    await sub.stop()
    lat = [received[n] - sent[n] for n in names if n in received and n in sent]
    ordered = [received[n] - sent[n] for n in names if n in received and n in sent]
    q = max(1, len(ordered) // 4)
    first_q, last_q = percentile(ordered[:q], 0.5), percentile(ordered[-q:], 0.5)
    all_in = len(received) == len(names)
    sustained = bool(all_in and first_q is not None and last_q <= 1.5 * first_q + 0.05
                     and drained_at - last_send <= 1.0)
    return {
        "rate": rate, "attempts": len(names), "events_received": len(received),
        "duplicate_events": sum(dupes.values()), "connack_codes": {str(k): v for k, v in codes.items()},
        "achieved_send_rate": len(names) / max(1e-9, last_send - t0) if len(names) > 1 else rate,
        "send_lag_s": send_lag, "drain_s": drained_at - last_send,
        "first_quarter_p50_ms": first_q * 1000 if first_q is not None else None,
        "last_quarter_p50_ms": last_q * 1000 if last_q is not None else None,
        "sustained": sustained, "loadgen_cpu_pct": clock.loadgen_cpu_pct, **summary_ms(lat),
    }


def _recorded_once(db: str, prefix: str, n: int) -> dict:
    from store import open_registry

    reg = open_registry(db)
    try:
        R, E = reg.m.Request, reg.m.Event
        rows = list(R.select(R.username, R.attempts).where(R.username.startswith(prefix + "-")))
        per_name = Counter(r.username for r in rows)
        created = Counter(e.subject for e in E.select(E.subject).where(
            (E.kind == "request.created") & E.subject.startswith(prefix + "-")))
    finally:
        reg.close()
    return {
        "requests": len(rows), "distinct": len(per_name),
        "duplicated": sum(1 for c in per_name.values() if c > 1) + sum(1 for r in rows if r.attempts != 1)
        + sum(1 for c in created.values() if c > 1),
        "lost": n - len(per_name),
        "exactly_once": len(per_name) == n and all(c == 1 for c in per_name.values())
        and all(r.attempts == 1 for r in rows) and len(created) == n and all(c == 1 for c in created.values()),
    }


def run(quick: bool = False) -> dict:
    from store import open_registry
    from store.console import read_console_credentials

    size = SIZES["quick" if quick else "full"]
    work = procs.tempdir("pipeline")
    db = str(work / "registry.db")
    reg = open_registry(db)
    reg.unlock(seconds=3600, actor="bench")
    reg.close()
    out = {"sizes": {**size, "rates": list(size["rates"])}, "rates": []}
    with procs.Server("ours", work, db=db) as server:
        reg = open_registry(db)
        console = read_console_credentials(reg)
        reg.close()
        for rate in size["rates"]:
            prefix = f"pipe{rate}"
            r = asyncio.run(_run_rate(server.port, console, rate, size["seconds"], size["drain"], prefix))
            r.update(_recorded_once(db, prefix, r["attempts"]))
            out["rates"].append(r)
        out["peak_rss_mib"] = server.peak_rss() / 2**20
    ok = [r["rate"] for r in out["rates"] if r["sustained"] and r["exactly_once"]]
    out["max_sustained_rate"] = max(ok) if ok else 0
    return out
