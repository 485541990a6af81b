"""4. Registration pipeline: new devices CONNECT at a set rate while the registry is unlocked.

Latency is from the moment a device's CONNECT is written to its socket to the moment an admin subscriber
(the console account from ``console.credentials`` beside the database, subscribed to
``$registry/v1/events/#``) receives the ``request.created`` event naming that device: Mosquitto -> registry
plugin -> datagram -> service (records the request in the database) -> event relay -> Mosquitto -> subscriber.
Arrivals are open-loop (device i starts at t0 + i/rate whatever happened to the others), each device from a
loopback address 127.B.x.y shared by at most 25 devices, so the registry's limit of 30 new requests per
address per minute is never what refuses them. Each rate runs on a freshly started registry (empty, unlocked).

Afterwards the database says what was recorded: ``lost`` = devices with no request at all (their attempt
never reached the service: the datagram was dropped, or it was still queued when the drain time ran out),
``dup`` = requests recorded twice or with more than one attempt. A rate is *sustained* when nothing is
lost, the median latency of the last quarter of devices is at most 1.5x that of the first quarter plus
50 ms (not growing) and the last event arrives within 1 s of the last CONNECT.

A separate run at 200/s is sampled with py-spy (bench/profile.py; full runs only).

With ``qlen`` the 500/s run is repeated with ``net.unix.max_dgram_qlen`` raised (root only; restored at
once): the kernel's queue of datagrams not yet read by the service, 10 by default, beyond which the
plugin's non-blocking send fails and the attempt is dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from store.event_topics import EVENTS_FILTER

from . import procs, state
from .common import percentile, summary_ms
from .loadgen import Engine, Meter, Subscriber, new_devices, now, open_loop
from .profile import Spy

QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")
PER_ADDRESS = 25
QUIET = 3.0  # stop waiting for events when none came for this long (the service works through its backlog
#             at well over one event per second while it has one)
SIZES = {
    "full": dict(rates=((50, 6.0), (100, 6.0), (200, 6.0), (500, 6.0)), drain=30.0, qlen=1024, profile=200),
    "quick": dict(rates=((50, 0.4), (100, 0.3)), drain=15.0, qlen=None, profile=None),
}


def read_qlen() -> int | None:
    try:
        return int(QLEN.read_text())
    except (OSError, ValueError):
        return None


def write_qlen(value: int) -> bool:
    try:
        QLEN.write_text(f"{value}\n")
        return read_qlen() == value
    except OSError:
        return False


def _recorded(db: Path, prefix: str) -> dict:
    from store import open_registry

    reg = open_registry(str(db))
    try:
        R, E = reg.m.Request, reg.m.Event
        rows = list(R.select(R.username, R.attempts).where(R.username.startswith(prefix + "-")))
        created = Counter(e.subject for e in E.select(E.subject).where(
            (E.kind == "request.created") & E.subject.startswith(prefix + "-")))
    finally:
        reg.close()
    per_name = Counter(r.username for r in rows)
    return {"names": set(per_name), "duplicated": sum(1 for c in per_name.values() if c > 1)
            + sum(1 for r in rows if r.attempts != 1) + sum(1 for c in created.values() if c > 1),
            "created_events": len(created)}


def run_rate(rate: int, seconds: float, drain: float, block: int, label: str, spy_s: float = 0.0) -> dict:
    work = state.fresh("registry", 0, label)
    state.unlock(work / "registry.db")
    prefix = f"pipe{rate}"
    items = new_devices(prefix, max(1, int(rate * seconds)), block, PER_ADDRESS)
    names = [name for name, _, _ in items]
    with procs.Server("registry", work) as server:
        console = state.console(server.db)
        engine = Engine("127.0.0.1", server.port)
        received: dict[str, float] = {}
        dupes = Counter()
        wanted = set(names)

        def on_message(t: float, topic: str, payload: bytes) -> None:
            if not topic.endswith("/request.created"):
                return
            subject = json.loads(payload).get("subject")
            if subject in wanted:
                if subject in received:
                    dupes[subject] += 1
                else:
                    received[subject] = t

        sub = Subscriber(engine, console.username, console.password, EVENTS_FILTER, on_message)
        spy = Spy(server.pids["service"], spy_s) if spy_s else None
        if spy is not None:
            spy.__enter__()
        with Meter(server.pids) as meter:
            r = open_loop(engine, items, rate)
            last_send = max(r["sent"].values()) if r["sent"] else now()

            def done() -> bool:  # all in, or nothing more for QUIET s (what is missing was dropped)
                t = now()
                last = max(received.values()) if received else last_send
                return len(received) >= len(names) or (t - max(last, last_send) > QUIET)

            engine.run(done, last_send + drain)
            drained_at = now()
        if spy is not None:
            spy.__exit__(None, None, None)
        sub.close()
        engine.close()
        queue_full = server.count_log("Resource temporarily unavailable")
    rec = _recorded(work / "registry.db", prefix)
    sent = r["sent"]
    ordered = [received[n] - sent[n] for n in names if n in received and n in sent]
    q = max(1, len(ordered) // 4)
    first_q, last_q = percentile(ordered[:q], 0.5), percentile(ordered[-q:], 0.5)
    lost = len(names) - len(rec["names"])
    sustained = bool(lost == 0 and len(received) == len(names) and first_q is not None
                     and last_q <= 1.5 * first_q + 0.05 and received and max(received.values()) - last_send <= 1.0)
    return {
        "rate": rate, "seconds": seconds, "attempts": len(names), "connack_codes": r["codes"],
        "recorded": len(rec["names"]), "lost": lost, "duplicated": rec["duplicated"] + sum(dupes.values()),
        "created_events": rec["created_events"], "events_received": len(received),
        "achieved_send_rate": len(names) / max(1e-9, r["send_s"]) if len(names) > 1 else rate,
        "send_lag_max_ms": 1000 * max(r["lag"]) if r["lag"] else None,
        "drain_s": (max(received.values()) - last_send) if received else None,
        "drain_limit_hit": len(received) < len(names) and drained_at - last_send >= drain - 0.01,
        "service_ms_per_device": 1000 * meter.cpu.get("service", 0.0) / max(1, len(rec["names"])),
        "first_quarter_p50_ms": first_q * 1000 if first_q is not None else None,
        "last_quarter_p50_ms": last_q * 1000 if last_q is not None else None,
        "sustained": sustained, **meter.summary(), **summary_ms(ordered),
        "plugin_queue_full_logged": queue_full, "max_dgram_qlen": read_qlen(),
        **({"profile": spy.summary} if spy is not None else {}),
    }


def store_costs(n: int) -> dict:
    """What one forwarded attempt costs the service in ``Registry.login`` alone (in this process, one thread,
    CPU time): a new device while unlocked (it becomes a request), and an unknown name while locked (a knock);
    with the SQL statements each issues, and one bare sqlite3 SELECT for scale."""
    import sqlite3
    import time

    from store import open_registry

    work = procs.tempdir("store-costs")
    reg = open_registry(str(work / "registry.db"))
    statements = Counter()
    execute = reg.db.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        statements[sql.split()[0].upper()] += 1
        return execute(sql, params, *args, **kwargs)

    out: dict = {"n": n}
    try:
        reg.unlock(seconds=3600, actor="bench")
        reg.db.execute_sql = counting
        for label, prefix, peer in (("new_request", "new", lambda i: f"127.9.{i // 25}.{i % 25 + 1}"),
                                    ("knock", "knock", lambda i: "127.0.0.1")):
            if label == "knock":
                reg.lock(actor="bench")
            statements.clear()
            t0 = time.process_time()
            for i in range(n):
                reg.login(f"{prefix}-{i:05d}", "pw-device-1", f"cid-{i}", peer(i), "mqtt")
            out[f"{label}_ms"] = 1000 * (time.process_time() - t0) / n
            out[f"{label}_statements"] = sum(statements.values()) / n
            out[f"{label}_by_kind"] = {k: v / n for k, v in statements.items()}
    finally:
        reg.db.execute_sql = execute
        reg.close()
    raw = sqlite3.connect(str(work / "registry.db"))
    t0 = time.process_time()
    for i in range(n):
        raw.execute('SELECT "id", "name", "verifier" FROM "users" WHERE "name" = ? LIMIT 1', (f"x{i}",)).fetchall()
    out["raw_select_ms"] = 1000 * (time.process_time() - t0) / n
    raw.close()
    return out


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    out: dict = {"sizes": {**size, "rates": [list(x) for x in size["rates"]]}, "rates": [],
                 "default_qlen": read_qlen(), "store_costs": store_costs(20 if quick else 500)}
    for i, (rate, seconds) in enumerate(size["rates"]):
        out["rates"].append(run_rate(rate, seconds, size["drain"], 40 + i, f"pipeline-{rate}"))
    ok = [r["rate"] for r in out["rates"] if r["sustained"]]
    out["max_sustained_rate"] = max(ok) if ok else 0
    if size["profile"]:  # a separate run, so that sampling does not touch the measurements above
        r = run_rate(size["profile"], 6.0, size["drain"], 70, "pipeline-profile", spy_s=5.0)
        out["profile"] = {"what": f"{size['profile']}/s new devices, 5 s sampled", **r["profile"]}
    if size["qlen"] and out["default_qlen"] is not None:
        rate, seconds = size["rates"][-1]
        original = out["default_qlen"]
        if write_qlen(size["qlen"]):
            try:
                r = run_rate(rate, seconds, size["drain"], 60, f"pipeline-{rate}-qlen")
            finally:
                write_qlen(original)
            out["raised_qlen"] = r
        else:
            out["raised_qlen"] = {"skipped": f"cannot write {QLEN} (not root?)"}
    return out
