"""5. Dashboard at scale: open time with many stored requests, key latency, input latency during a flood.

Each measurement runs the Textual app headless (``App.run_test``, 120x40) in its own process. Stored requests
are inserted in bulk (pending, one shared argon2 hash: the dashboard never reads it). The flood runs our server
(separate process, registry unlocked) and an open-loop load generator (a third process) while the dashboard,
logged in with the console account, receives the relayed events and the benchmark presses keys 10 times a second.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

from . import procs
from .common import PASSWORD

SIZES = {
    "full": dict(open_rows=(1_000, 10_000, 100_000), key_rows=10_000, presses=200, flood_rows=10_000,
                 flood_rate=500, flood_seconds=10.0),
    "quick": dict(open_rows=(100,), key_rows=100, presses=16, flood_rows=100, flood_rate=50, flood_seconds=1.0),
}


def fill_requests(db: str, n: int) -> None:
    from store import crypto, open_registry

    reg = open_registry(db)
    try:
        digest = crypto.hash_password(PASSWORD)
        now = time.time()
        rnd = random.Random(5)
        rows = []
        for i in range(n):
            name = f"sensor-{i:06d}"
            seen = now - rnd.uniform(0, 3600)
            rows.append(dict(username=name, password_hash=digest, fingerprint=f"{i:064x}",
                             pairing_code=crypto.pairing_code(name, PASSWORD), client_id=f"cid-{i}",
                             peer=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", source="mqtt", first_seen=seen,
                             last_seen=seen + rnd.uniform(0, 60), attempts=rnd.randint(1, 20), status="pending"))
        with reg.db.atomic():
            for i in range(0, n, 2000):
                reg.m.Request.insert_many(rows[i:i + 2000]).execute()
    finally:
        reg.close()


def _child(*args: str, timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.dash_child", *args], cwd=procs.ROOT, capture_output=True,
                         text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"dash_child {args[0]} failed: {out.stderr.strip()[-800:]}")


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    out: dict = {"sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
                 "open_s": {}, "rss_mib": {}}
    dbs = {}
    for n in size["open_rows"]:
        work = procs.tempdir(f"dash-{n}")
        dbs[n] = str(work / "registry.db")
        fill_requests(dbs[n], n)
        r = _child("open", "--db", dbs[n], "--rows", str(n))
        out["open_s"][str(n)] = r["open_s"]
        out["rss_mib"][str(n)] = r["rss_mib"]
    key_db = dbs.get(size["key_rows"])
    if key_db is None:
        key_db = str(procs.tempdir("dash-keys") / "registry.db")
        fill_requests(key_db, size["key_rows"])
    out["keys_rows"] = size["key_rows"]
    out["keys_10k"] = _child("keys", "--db", key_db, "--rows", str(size["key_rows"]),
                             "--presses", str(size["presses"]))

    # the flood: own database (fresh copy of key_rows requests), our server, the dashboard, a load generator
    from store import open_registry
    from store.console import read_console_credentials

    work = procs.tempdir("dash-flood")
    db = str(work / "registry.db")
    fill_requests(db, size["flood_rows"])
    reg = open_registry(db)
    reg.unlock(seconds=3600, actor="bench")
    reg.close()
    with procs.Server("ours", work, db=db) as server:
        reg = open_registry(db)
        console = read_console_credentials(reg)
        reg.close()
        r = _child("flood", "--db", db, "--rows", str(size["flood_rows"]), "--port", str(server.port),
                   "--user", console.username, "--password", console.password, "--rate", str(size["flood_rate"]),
                   "--seconds", str(size["flood_seconds"]), timeout=600)
    out["flood"] = r
    out["flood_rate"] = size["flood_rate"]
    out["flood_seconds"] = size["flood_seconds"]
    out["flood_rows_end"] = r["rows_end"]
    return out
