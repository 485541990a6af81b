"""1. Known-device connects: CONNECT -> CONNACK per second for granted devices, the three servers side by side.

All three servers start at once from the same 20,000 granted devices (bench/state.py) and stay up; the phases
run in rounds, and within a phase the servers take turns (the order rotates every round), so a slow moment of
the machine hits all three alike. Each connection: TCP connect, CONNECT (MQTT 3.1.1, clean session, a new
client id), CONNACK, DISCONNECT, close. *Cold* = each device's first connect since its server started (every
round uses devices not seen before); *warm* = devices that already connected, again. Sequential = one
connection at a time; concurrent = 50 in flight.

The ratios are the median over rounds of (registry's rate / baseline's rate) measured back to back.
"""

from __future__ import annotations

import statistics
import time

from . import procs, state
from .common import summary_ms
from .loadgen import Engine, Meter, closed_loop, cpu_of
from .mqtt import connect_packet

PHASES = ("seq_cold", "seq_warm", "conc_cold", "conc_warm")
SIZES = {
    "full": dict(users=20_000, rounds=8, seq_cold=800, conc_cold=1700, seq_warm=3000, conc_warm=8000,
                 concurrency=50),
    "quick": dict(users=60, rounds=2, seq_cold=5, conc_cold=20, seq_warm=10, conc_warm=30, concurrency=10),
}
PHASE_LIMIT_S = 60.0
RECONCILE_INTERVAL = 60.0  # serve's periodic reconcile (broker/server.py); phases are kept inside it


def _phase(engine: Engine, server: procs.Server, users: list[str], total: int, concurrency: int,
           tag: str) -> dict:
    password = state.PASSWORD

    def make(i: int):
        return connect_packet(f"{tag}-{i}", users[i % len(users)], password), None

    with Meter(server.pids) as meter:
        r = closed_loop(engine, make, total, concurrency, limit_s=PHASE_LIMIT_S)
    ok = r["codes"].get("0", 0)
    out = {"connects": total, "accepted": ok, "failures": total - ok, "codes": r["codes"],
           "per_s": r["attempts"] / meter.wall if meter.wall else 0.0, **meter.summary(),
           **summary_ms(r["latencies"])}
    out["mosquitto_us_per_connect"] = 1e6 * meter.cpu.get("mosquitto", 0.0) / max(1, r["attempts"])
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    rounds = size["rounds"]
    need = rounds * (size["seq_cold"] + size["conc_cold"])
    if need > size["users"]:
        raise ValueError("not enough devices for the cold phases")
    names = state.device_names(state.DEVICE_PREFIX, size["users"])
    seq_block = [names[r * size["seq_cold"]:(r + 1) * size["seq_cold"]] for r in range(rounds)]
    base = rounds * size["seq_cold"]
    conc_block = [names[base + r * size["conc_cold"]:base + (r + 1) * size["conc_cold"]] for r in range(rounds)]

    servers = {kind: procs.Server(kind, state.fresh(kind, size["users"], f"auth-{kind}")) for kind in procs.KINDS}
    out: dict = {"sizes": size, "servers": {}}
    try:
        for server in servers.values():
            server.start()
        reg = servers["registry"]
        ready_at = time.monotonic()
        out["registry_start"] = {"listening_s": reg.listening_s, "ready_s": reg.ready_s,
                                 "reconcile_corrections": state.reconcile_corrections(reg),
                                 "service_cpu_s": cpu_of(reg.pids["service"])}
        engines = {kind: Engine("127.0.0.1", s.port) for kind, s in servers.items()}
        per: dict = {kind: {ph: [] for ph in PHASES} for kind in procs.KINDS}
        for r in range(rounds):
            order = procs.KINDS[r % 3:] + procs.KINDS[:r % 3]
            seq_warm_users = [n for block in seq_block[:r + 1] for n in block]
            conc_warm_users = [n for block in conc_block[:r + 1] for n in block]
            plan = (("seq_cold", seq_block[r], size["seq_cold"], 1),
                    ("conc_cold", conc_block[r], size["conc_cold"], size["concurrency"]),
                    ("seq_warm", seq_warm_users, size["seq_warm"], 1),
                    ("conc_warm", conc_warm_users, size["conc_warm"], size["concurrency"]))
            for phase, users, total, conc in plan:
                for kind in order:
                    res = _phase(engines[kind], servers[kind], users, total, conc, f"{phase}{r}")
                    res["round"] = r
                    per[kind][phase].append(res)
        out["registry_phases_within_s"] = time.monotonic() - ready_at
        out["periodic_reconcile_possible"] = out["registry_phases_within_s"] >= RECONCILE_INTERVAL
        for kind, server in servers.items():
            out["servers"][kind] = {"rss_mib": {k: v / 2**20 for k, v in server.rss().items()},
                                    "peak_rss_mib": {k: v / 2**20 for k, v in server.peak_rss().items()}}
    finally:
        for server in servers.values():
            server.stop()

    for kind in procs.KINDS:
        agg = out["servers"].setdefault(kind, {})
        for phase in PHASES:
            runs = per[kind][phase]
            agg[phase] = {
                "per_s": _median([x["per_s"] for x in runs]),
                "per_s_rounds": [x["per_s"] for x in runs],
                "connects": sum(x["connects"] for x in runs),
                "failures": sum(x["failures"] for x in runs),
                "codes": {c: sum(x["codes"].get(c, 0) for x in runs) for c in {c for x in runs for c in x["codes"]}},
                "p50_ms": _median([x["p50_ms"] for x in runs]),
                "p99_ms": _median([x["p99_ms"] for x in runs]),
                "loadgen_cpu_pct": _median([x["cpu_pct"].get("loadgen") for x in runs]),
                "mosquitto_cpu_pct": _median([x["cpu_pct"].get("mosquitto") for x in runs]),
                "service_cpu_pct": _median([x["cpu_pct"].get("service") for x in runs]),
                "service_cpu_pct_max": max((x["cpu_pct"].get("service", 0.0) for x in runs), default=0.0),
                "mosquitto_us_per_connect": _median([x["mosquitto_us_per_connect"] for x in runs]),
            }
    ratios: dict = {}
    for other in ("passwd", "dynsec"):
        ratios[other] = {}
        for phase in PHASES:
            pairs = [a["per_s"] / b["per_s"] for a, b in zip(per["registry"][phase], per[other][phase], strict=False)
                     if b["per_s"]]
            ratios[other][phase] = _median(pairs)
    out["ratios_registry_over"] = ratios
    # the same for two servers that do exactly the same work per connect: the noise floor of these ratios
    out["noise_dynsec_over_passwd"] = {
        phase: _median([a["per_s"] / b["per_s"]
                        for a, b in zip(per["dynsec"][phase], per["passwd"][phase], strict=False)
                        if b["per_s"]]) for phase in PHASES}
    return out
