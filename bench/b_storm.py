"""2. Reconnect storm: 10,000 granted devices connect at once to a freshly started server.

Each server starts from a fresh copy of the same 10,000-device state (for the registry: a primed installation,
so this is a restart). The storm starts the moment the MQTT port answers, because that is when real devices,
retrying after the restart, get through; for the registry that is before ``serve`` has finished its start-up
reconcile, so it runs once more starting only after ``serve`` printed "serving" (``registry@ready``).
Every device opens its socket at once (one pass of the generator over 10,000 sockets), keeps its connection,
and retries after 0.5-1 s when refused or when no CONNACK came back within 2 s (its TCP connect included).
Why 2 s: Mosquitto listens with a backlog of 100, so most of the 10,000 SYNs of the first pass are dropped
by the kernel and retransmitted after 1 s, 3 s, 7 s...; a device that waits 10 s finishes at 3, 7 or 11 s by
luck (measured: 3-11 s for the same server), a device that gives up after 2 s and opens a new socket does not.
Measured: time from the start until all devices hold an accepted session (and until half do), retries, the SYNs
the kernel dropped because Mosquitto's accept queue (backlog 100) was full, CPU of each process, peak RSS.
Repeated, servers in turn; the medians are reported and the ratios are medians of back-to-back pairs.
"""

from __future__ import annotations

import os
import statistics
import time

from . import procs, state
from .loadgen import Engine, Meter, storm
from .mqtt import connect_packet

SIZES = {"full": dict(devices=10_000, reps=3, limit_s=60.0), "quick": dict(devices=60, reps=1, limit_s=30.0)}
ATTEMPT_TIMEOUT = 2.0  # a device gives up on an attempt (TCP connect + CONNACK) after this long
VARIANTS = (("passwd", "listening"), ("dynsec", "listening"), ("registry", "listening"), ("registry", "ready"))


def label(kind: str, wait: str) -> str:
    return kind if wait == "listening" or kind != "registry" else "registry@ready"


def _one(kind: str, wait: str, items: list, size: dict, rep: int) -> dict:
    server = procs.Server(kind, state.fresh(kind, size["devices"], f"storm-{kind}"))
    out: dict = {}
    try:
        server.start(wait=wait)
        engine = Engine("127.0.0.1", server.port)
        became_ready: list[float] = []
        if kind == "registry" and wait == "listening":  # note when `serve` gets ready during the storm
            log = server.log_path
            seen = {"size": 0, "next": 0.0}

            def tick() -> None:
                t = time.monotonic()
                if became_ready or t < seen["next"]:
                    return
                seen["next"] = t + 0.05
                size = os.stat(log).st_size
                if size != seen["size"]:
                    seen["size"] = size
                    if procs.READY_LINE in server.log_text():
                        became_ready.append(t - server.spawned_at)

            engine.tick = tick
        net0 = procs.netstat_counters()
        with Meter(server.pids) as meter:
            r = storm(engine, items, limit_s=size["limit_s"], timeout=ATTEMPT_TIMEOUT)
        net1 = procs.netstat_counters()
        engine.tick = None
        engine.close()
        at = sorted(r.pop("connected_at"))
        out = {
            "rep": rep, **r, "all_connected_s": at[-1] if len(at) == len(items) else None,
            "half_connected_s": at[len(at) // 2] if at else None,
            "p90_connected_s": at[int(len(at) * 0.9)] if at else None,
            "listen_overflows": net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0),
            "listening_s": server.listening_s, **meter.summary(),
            "peak_rss_mib": {k: v / 2**20 for k, v in server.peak_rss().items()},
        }
        if kind == "registry":
            if wait == "listening":
                out["serve_ready_s"] = became_ready[0] if became_ready else (
                    server.ready_s if server.wait_ready(120) else None)
            else:
                out["serve_ready_s"] = server.ready_s
            out["serve_alive"] = server.alive()
            out["reconcile_corrections"] = state.reconcile_corrections(server)
    finally:
        server.stop()
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    names = state.device_names(state.DEVICE_PREFIX, size["devices"])
    items = [(connect_packet(f"storm-{n}", n, state.PASSWORD), None) for n in names]
    for kind in procs.KINDS:
        state.template(kind, size["devices"])
    runs: dict[str, list[dict]] = {label(k, w): [] for k, w in VARIANTS}
    for rep in range(size["reps"]):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for kind, wait in order:
            runs[label(kind, wait)].append(_one(kind, wait, items, size, rep))
    out: dict = {"sizes": size, "servers": {}}
    for name, reps in runs.items():
        all_s = [r["all_connected_s"] for r in reps]
        out["servers"][name] = {
            "devices": size["devices"],
            "connected": min(r["connected"] for r in reps),
            "all_connected_s": None if None in all_s else _median(all_s),
            "all_connected_s_reps": all_s,
            "half_connected_s": _median([r["half_connected_s"] for r in reps]),
            "retries": _median([r["retries"] for r in reps]),
            "listen_overflows": _median([r["listen_overflows"] for r in reps]),
            "dropped_after_connect": max(r["dropped_after_connect"] for r in reps),
            "loadgen_cpu_pct": _median([r["cpu_pct"].get("loadgen") for r in reps]),
            "cpu_s": {p: _median([r["cpu_s"].get(p) for r in reps]) for p in reps[0]["cpu_s"]},
            "peak_rss_mib": {p: max(r["peak_rss_mib"].get(p, 0) for r in reps) for p in reps[0]["peak_rss_mib"]},
            "serve_ready_s": _median([r.get("serve_ready_s") for r in reps]) if "serve_ready_s" in reps[0] else None,
            "serve_alive": all(r.get("serve_alive", True) for r in reps),
            "reps": reps,
        }
    ratios: dict = {}
    for ours in ("registry", "registry@ready"):
        for other in ("passwd", "dynsec"):
            pairs = [a["all_connected_s"] / b["all_connected_s"] for a, b in zip(runs[ours], runs[other], strict=False)
                     if a["all_connected_s"] and b["all_connected_s"]]
            ratios[f"{ours}/{other}"] = _median(pairs) if len(pairs) == len(runs[ours]) else None
    pairs = [a["all_connected_s"] / b["all_connected_s"] for a, b in zip(runs["dynsec"], runs["passwd"], strict=False)
             if a["all_connected_s"] and b["all_connected_s"]]
    out["noise_dynsec_over_passwd"] = _median(pairs)  # two plain Mosquittos: the noise floor of the ratios
    out["ratios"] = ratios
    return out
