"""Shared helpers: percentiles, CPU accounting of the load generator, users in the registry database."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass

from . import procs

PASSWORD = "bench-password-1"  # every bench user shares it: see make_users


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95),
            "p99_ms": percentile(ms, 0.99), "max_ms": max(ms) if ms else None}


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Clock:
    """Wall time and the load generator's own CPU time over a phase (to tell when *it* is the bottleneck)."""

    wall0: float = 0.0
    cpu0: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), self_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self_cpu() - self.cpu0

    @property
    def loadgen_cpu_pct(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall else 0.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_users(db: str, names: list[str], admin: bool = False) -> None:
    """Granted users in the registry database, inserted in bulk.

    One argon2id hash (the store's own parameters) is computed once and shared: all bench users have the same
    password, so setup does not pay 2,000 hashes, while the server still pays one argon2 verification per user
    on its first (cold) connect, exactly as with distinct passwords.
    """
    from store import crypto, open_registry

    reg = open_registry(db)
    try:
        digest = crypto.hash_password(PASSWORD)
        now = time.time()
        rows = [dict(name=n, password_hash=digest, admin=admin, created_at=now, created_by="bench",
                     created_how="cli") for n in names]
        with reg.db.atomic():
            for i in range(0, len(rows), 500):
                reg.m.User.insert_many(rows[i:i + 500]).execute()
    finally:
        reg.close()


async def gather_bounded(coros, limit: int):
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


def server_with_users(kind: str, label: str, names: list[str]):
    """A server of ``kind`` (not started) that accepts ``names`` with PASSWORD, or None when it is
    Mosquitto and Mosquitto cannot be installed."""
    if kind == "mosquitto" and not procs.ensure_mosquitto():
        return None
    work = procs.tempdir(f"{label}-{kind}")
    db = str(work / "registry.db")
    server = procs.Server(kind, work, db=db)
    if kind == "ours":
        make_users(db, names)
    elif kind == "mosquitto":
        server.write_mosquitto_users([(n, PASSWORD) for n in names])
    return server
