"""5. Dashboard at scale: open time with many stored requests, key latency, input latency during a flood.

Each measurement runs the Textual app headless (``App.run_test``, 120x40) in its own process. Stored requests
are inserted in bulk (pending, HMAC verifiers under the database's secret). The flood runs ``client-registry
serve`` (registry unlocked) and the open-loop load generator (``python -m bench.loadgen``, a third process,
new devices from 127.200.x.y, at most 25 per address) while the dashboard, logged in with the console
account, receives the relayed events and the benchmark presses keys 10 times a second. The flood runs at 500
new devices/s (the target's rate, above what the service can record: it saturates a core) and at 100/s
(below it), each on a fresh server, so the dashboard's own latency can be told from competition for the cores.
At most 10,000 requests may be pending (a product rule), so the flood starts from 5,000 stored requests.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

from . import procs, state

PASSWORD = "sensor-password"
SIZES = {
    "full": dict(open_rows=(1_000, 10_000, 100_000), key_rows=10_000, presses=200, flood_rows=5_000,
                 flood_rates=(100, 500), flood_seconds=10.0),
    "quick": dict(open_rows=(100,), key_rows=100, presses=16, flood_rows=100, flood_rates=(50,), flood_seconds=1.0),
}


def fill_requests(db: str, n: int) -> None:
    from store import crypto, open_registry

    reg = open_registry(db)
    try:
        secret = state.server_secret(reg)
        now = time.time()
        rnd = random.Random(5)
        rows = []
        for i in range(n):
            name = f"sensor-{i:06d}"
            seen = now - rnd.uniform(0, 3600)
            rows.append(dict(username=name, verifier=crypto.verifier(secret, name, PASSWORD),
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

    # the floods: each on its own installation (a primed empty registry plus flood_rows requests), serve, the
    # dashboard and the load generator; the last rate is the one the target is about
    out["floods"] = {}
    for rate in size["flood_rates"]:
        work = state.fresh("registry", 0, f"dash-flood-{rate}")
        db = str(work / "registry.db")
        fill_requests(db, size["flood_rows"])
        state.unlock(work / "registry.db")
        with procs.Server("registry", work) as server:
            console = state.console(server.db)
            # "--opt=value": a random password may start with "-"
            r = _child("flood", f"--db={db}", f"--rows={size['flood_rows']}", f"--port={server.port}",
                       f"--user={console.username}", f"--password={console.password}", f"--rate={rate}",
                       f"--seconds={size['flood_seconds']}", timeout=600)
        out["floods"][str(rate)] = r
    out["flood_rate"] = size["flood_rates"][-1]
    out["flood"] = out["floods"][str(out["flood_rate"])]
    out["flood_seconds"] = size["flood_seconds"]
    out["flood_rows_end"] = out["flood"]["rows_end"]
    return out
