"""Fleet onboarding: 10,000 new devices admitted by one approval rule, into an empty broker and into one
already holding 100,000 accounts. ``python -m bench.fleet [--quick] [--no-docs]``

Each case starts a fresh ``client-registry serve`` (primed folder: ``accounts`` granted devices and the
unrelated client, ``state.PROBE_USER``), with one rule ``fl-*`` (limit = the devices, template
``sensors/{username}/#=readWrite``) added and the registry unlocked for an hour before the start. The fleet
powers on over ``arrival_s`` (open-loop, device i at t0 + i * arrival_s / devices), each device from a
loopback address 127.B.x.y shared by at most 25 devices (under the per-address limit of new requests a
minute), and behaves like firmware: CONNECT; when refused (or no CONNACK within ``attempt_timeout_s``),
CONNECT again ``retry_s`` later, until accepted (bench/loadgen.py's engine, one process).

Its first CONNECT is refused and reaches the service as an attempt (registry plugin datagram); the rule
grants it in the store; the relay applies the grant to the plugin; a later CONNECT gets in. Meanwhile the
probe (bench/probe.py, its own process) publishes to itself every 2 ms. Measured: time from the first
CONNECT until every device is in (and until half, and 90 %), CONNECTs per device, the probe's round trips
(and, just before, with nothing else going on: the noise floor), CPU of Mosquitto, the service and the
generator, and what the store says afterwards (requests granted by the rule). Bounded by ``limit_s``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from . import procs, state
from .loadgen import Attempt, Engine, Meter, new_devices, now, raise_fd_limit
from .probe import Probe, window

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fleet.json"
SECTION = "fleet"
TEMPLATE = "sensors/{username}/#=readWrite"
PER_ADDRESS = 25
SIZES = {
    "full": dict(devices=10_000, accounts=(0, 100_000), arrival_s=10.0, retry_s=1.0, attempt_timeout_s=5.0,
                 limit_s=180.0, idle_s=3.0, profile_devices=3000, profile_s=8.0),
    "quick": dict(devices=60, accounts=(0, 100), arrival_s=0.5, retry_s=1.0, attempt_timeout_s=5.0,
                  limit_s=60.0, idle_s=1.0),
}


def onboard(engine: Engine, items: list, arrival_s: float, retry_s: float, deadline: float,
            attempt_timeout_s: float) -> dict:
    """Every device CONNECTs once (open-loop over ``arrival_s``) and again ``retry_s`` after each refusal."""
    accepted: dict[str, float] = {}
    tries: Counter = Counter()
    codes: Counter = Counter()
    held: list[Attempt] = []

    def start(key, packet, source) -> None:
        Attempt(engine, packet, lambda a: done(a, key, packet, source), source=source, key=key,
                keep=True).start()

    def done(a: Attempt, key, packet, source) -> None:
        tries[key] += 1
        codes[a.rc if a.rc is not None else (a.error or "error")] += 1
        if a.rc == 0:
            accepted[key] = a.t_done
            held.append(a)
        else:
            engine.call_at(now() + retry_s, lambda: start(key, packet, source))

    n = len(items)
    t0 = now() + 0.01
    t0_wall = time.time() + (t0 - now())
    for i, (key, packet, source) in enumerate(items):
        engine.call_at(t0 + i * arrival_s / n, lambda k=key, p=packet, s=source: start(k, p, s))
    engine.run(lambda: len(accepted) == n, deadline, attempt_timeout_s)
    engine.timers.clear()
    for a in list(engine.inflight):
        a.fail("stopped")
    for a in held:
        a.close()
    return {"t0": t0, "t0_wall": t0_wall, "accepted": accepted, "tries": tries,
            "codes": {str(k): v for k, v in codes.items()}}


def run_case(accounts: int, size: dict, block: int, qlen: int | None = None, spy_s: float = 0.0) -> dict:
    """One case; ``qlen``: with net.unix.max_dgram_qlen raised to this while ``serve`` creates its socket
    (root only; restored at once), to tell the kernel's 10-datagram queue from the service's own pace."""
    from .b_pipeline import read_qlen, write_qlen

    original = read_qlen()
    if qlen is not None and not write_qlen(qlen):
        raise RuntimeError("cannot raise net.unix.max_dgram_qlen (not root?)")
    try:
        return _run_case(accounts, size, block, read_qlen(), spy_s)
    finally:
        if qlen is not None and original is not None:
            write_qlen(original)


def _run_case(accounts: int, size: dict, block: int, qlen: int | None, spy_s: float = 0.0) -> dict:
    from store import open_registry

    from .profile import Spy

    devices = size["devices"]
    work = state.fresh("registry", accounts, f"fleet-{accounts}", probe=True)
    db = work / "registry.db"
    reg = open_registry(str(db))
    try:
        reg.add_rule("fl-*", permissions=[TEMPLATE], limit=devices, actor="bench")
        reg.unlock(seconds=3600, actor="bench")
    finally:
        reg.close()
    items = new_devices("fl", devices, block, PER_ADDRESS)
    out: dict = {"accounts": accounts, "devices": devices, "max_dgram_qlen": qlen}
    with procs.Server("registry", work) as server:
        with Probe(server.port, state.PROBE_USER, state.PASSWORD) as probe:
            time.sleep(0.5)
            i0 = time.monotonic()
            time.sleep(size["idle_s"])
            i1 = time.monotonic()
            engine = Engine("127.0.0.1", server.port)
            spy = Spy(server.pids["service"], spy_s) if spy_s else None
            if spy is not None:
                spy.__enter__()
            with Meter(server.pids) as meter:
                m0 = time.monotonic()
                r = onboard(engine, items, size["arrival_s"], size["retry_s"], now() + size["limit_s"],
                            size["attempt_timeout_s"])
                m1 = time.monotonic()
            if spy is not None:
                spy.__exit__(None, None, None)
                out["profile"] = {"what": f"{devices:,} devices into {accounts:,} accounts, {spy_s:g} s sampled",
                                  **spy.summary}
            engine.close()
            result = probe.stop()
        out["rss_mib"] = {k: v / 2**20 for k, v in server.rss().items()}
        out["peak_rss_mib"] = {k: v / 2**20 for k, v in server.peak_rss().items()}
        out["reconcile_lines"] = server.count_log("reconcile: account")
        out["plugin_queue_full_logged"] = server.count_log("Resource temporarily unavailable")
        out["admit_lines"] = server.count_log("mqtt admit ")
        out["serve_alive"] = server.alive()
    reg = open_registry(str(db))
    try:
        R = reg.m.Request
        granted = R.select().where(R.status == "granted").count()
        by_rule = R.select().where(R.decided_by == "rule:fl-*").count()
        decided = sorted(row.decided_at - r["t0_wall"] for row in R.select(R.decided_at).where(
            (R.decided_by == "rule:fl-*") & R.decided_at.is_null(False)))
        attempts = sum(row.attempts for row in R.select(R.attempts).where(R.decided_by == "rule:fl-*"))
    finally:
        reg.close()
    t0, accepted = r["t0"], r["accepted"]
    at = sorted(t - t0 for t in accepted.values())
    out.update({
        "admitted": len(accepted), "granted_requests": granted, "granted_by_rule": by_rule,
        "all_in_s": at[-1] if len(at) == devices else None,
        "half_in_s": at[len(at) // 2] if len(at) > devices // 2 else None,
        "p90_in_s": at[int(devices * 0.9)] if len(at) > int(devices * 0.9) else None,
        "admitted_by_s": {str(s): sum(1 for x in at if x <= s) for s in (10, 20, 30, 60, 120, 180)},
        # when the rule granted them in the store (requests.decided_at), against when they got into the broker
        "store_granted_by_s": {str(s): sum(1 for x in decided if x <= s) for s in (10, 20, 30, 60, 120, 180)},
        "store_last_granted_s": decided[-1] if decided else None,
        "attempts_recorded": attempts,
        "connects": sum(r["tries"].values()), "connects_per_device": sum(r["tries"].values()) / devices,
        "max_connects_one_device": max(r["tries"].values()) if r["tries"] else 0, "connack_codes": r["codes"],
        "noise": window(result, i0, i1), "during": window(result, m0, m1),
        "probe_skipped": result.get("skipped"), **meter.summary(),
        "mosquitto_ms_per_device": 1000 * meter.cpu.get("mosquitto", 0.0) / devices,
        "service_ms_per_device": 1000 * meter.cpu.get("service", 0.0) / devices,
    })
    return out


def _f(v, fmt="{:.1f}", none="-"):
    return none if v is None else fmt.format(v)


def lines(results: dict) -> list[str]:
    size = results["sizes"]
    out = [f"fleet onboarding: {size['devices']:,} new devices powering on over {size['arrival_s']:g} s, one rule"
           f" `fl-*`, each retrying {size['retry_s']:g} s after a refusal (bounded at {size['limit_s']:.0f} s)",
           f"  {'accounts held':>13} {'admitted':>9} {'all in s':>8} {'half s':>6} {'90% s':>6} {'CONNECTs/dev':>12}"
           f" {'unrelated p50/p99/max ms':>25} {'noise p50/p99/max':>18} {'Mosq CPU s':>10} {'svc CPU s':>9}"
           f" {'loadgen':>7}"]
    for r in results["cases"]:
        def rtt(w):
            return f"{_f(w.get('p50_ms'))}/{_f(w.get('p99_ms'))}/{_f(w.get('max_ms'), '{:.0f}')}"
        out.append(f"  {r['accounts']:>13,}{'*' if r.get('variant') else ' '}{r['admitted']:>8,}"
                   f" {_f(r['all_in_s']):>8} {_f(r['half_in_s']):>6}"
                   f" {_f(r['p90_in_s']):>6} {r['connects_per_device']:>12.1f} {rtt(r['during']):>25}"
                   f" {rtt(r['noise']):>18} {r['cpu_s'].get('mosquitto', 0):>10.1f}"
                   f" {r['cpu_s'].get('service', 0):>9.1f}"
                   f" {_f(r['cpu_pct'].get('loadgen'), '{:.0f}%'):>7}")
    if any(r.get("variant") for r in results["cases"]):
        out.append("  * the same with " + next(r["variant"] for r in results["cases"] if r.get("variant"))
                   + " (the kernel's queue of datagrams from the plugin not yet read by the service; default "
                   + str(next((r.get("max_dgram_qlen") for r in results["cases"] if not r.get("variant")), "?")) + ")")
    for r in results["cases"]:
        variant = f" ({r['variant']})" if r.get("variant") else ""
        out.append(f"  {r['accounts']:,} held{variant}: granted by the rule {r['granted_by_rule']:,}"
                   " (in the store by 10/20/30/60"
                   " s: " + "/".join(f"{r['store_granted_by_s'][k]:,}" for k in ("10", "20", "30", "60"))
                   + f", the last at {_f(r.get('store_last_granted_s'))} s); in the broker by 10/20/30/60 s: "
                   + "/".join(f"{r['admitted_by_s'][k]:,}" for k in ("10", "20", "30", "60"))
                   + f"; Mosquitto {r['mosquitto_ms_per_device']:.2f} ms and the service"
                   f" {r['service_ms_per_device']:.2f} ms of CPU per device; CONNACK codes {r['connack_codes']};"
                   f" reconcile corrections logged {r['reconcile_lines']}; attempts the store saw (the requests'"
                   f" counters) {r.get('attempts_recorded', 0):,}; RSS Mosquitto"
                   f" {r['rss_mib'].get('mosquitto', 0):.0f} MiB, service {r['rss_mib'].get('service', 0):.0f} MiB")
    return out


def targets(results: dict) -> list[dict]:
    out = []
    for r in results["cases"]:
        if r.get("variant"):
            continue
        where = "an empty broker" if r["accounts"] == 0 else f"a broker holding {r['accounts']:,}"
        out.append({"target": f"{r['devices']:,} devices by rule into {where}: all in", "wanted": "< 30 s",
                    "measured": r["all_in_s"], "met": r["all_in_s"] is not None and r["all_in_s"] < 30, "unit": "s"})
        p99 = r["during"].get("p99_ms")
        out.append({"target": f"unrelated client's p99 meanwhile ({where})", "wanted": "< 20 ms", "measured": p99,
                    "met": p99 is not None and p99 < 20, "unit": "ms"})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--only-accounts", type=int, nargs="+", help="run only these cases (accounts held)")
    p.add_argument("--qlen", type=int, default=1024,
                   help="also run the empty case with net.unix.max_dgram_qlen raised to this (0: not)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    a = p.parse_args(argv)
    from . import machine
    from .report import replace_section

    if not procs.find_mosquitto():
        raise SystemExit("Mosquitto is needed")
    raise_fd_limit()
    size = SIZES["quick" if a.quick else "full"]
    m = machine.describe()
    results = run(size, a.only_accounts, qlen=None if a.quick else (a.qlen or None))
    results["started"] = time.strftime("%Y-%m-%d %H:%M")
    results["machine"] = m
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    from .profile import lines as profile_lines

    text = lines(results) + profile_lines(results.get("profile")) + ["", "targets"] + [
        f"  [{'met ' if t['met'] else 'MISS'}] {t['target']}: wanted {t['wanted']}, measured "
        f"{_f(t['measured'], '{:.2f}')} {t['unit']}" for t in results["targets"]]
    print("\n".join(text))
    if not a.quick and not a.no_docs:
        from .notes import fleet_notes

        docs = ROOT / "docs" / "benchmarks.md"
        body = [f"## Fleet onboarding (`python -m bench.fleet`, {results['started']})", "",
                f"Machine: {m['cores']} cores ({m['cpu_model']}), load average {m['load_avg_at_start'][0]:.2f} at"
                f" start, Mosquitto {m['versions']['mosquitto']}, commit {m['code'].get('commit')}"
                + (f" plus uncommitted {', '.join(m['code']['uncommitted'])}" if m["code"].get("uncommitted") else "")
                + f"; net.unix.max_dgram_qlen {m.get('sysctl', {}).get('net.unix.max_dgram_qlen')}; see"
                " bench/b_fleet.py's docstring for the method.", "", "```", *[x for x in text if x], "```", "",
                *fleet_notes(results)]
        docs.write_text(replace_section(docs.read_text() if docs.exists() else "", SECTION, "\n".join(body)))
        print(f"docs: {docs}")
    return 0 if all(r["admitted"] == r["devices"] for r in results["cases"]) else 1


def run(size: dict, only=None, qlen: int | None = None) -> dict:
    results = {"sizes": {**size, "accounts": list(size["accounts"])}, "cases": []}
    for i, accounts in enumerate(size["accounts"]):
        if only and accounts not in only:
            continue
        print(f"[bench] fleet into {accounts:,} accounts ...", flush=True)
        results["cases"].append(run_case(accounts, size, 90 + i))
    if qlen:  # the diagnosis: the same into an empty broker with the kernel's datagram queue raised
        print(f"[bench] fleet into 0 accounts, net.unix.max_dgram_qlen {qlen} ...", flush=True)
        case = run_case(0, size, 95, qlen=qlen)
        case["variant"] = f"max_dgram_qlen {qlen}"
        results["cases"].append(case)
    if size.get("profile_devices"):  # a separate, smaller run sampled with py-spy (it costs CPU itself)
        accounts = max(size["accounts"])
        print(f"[bench] fleet profile ({size['profile_devices']:,} devices into {accounts:,}) ...", flush=True)
        small = {**size, "devices": size["profile_devices"], "arrival_s": size["profile_devices"] / 1000}
        results["profile"] = run_case(accounts, small, 97, spy_s=size["profile_s"]).get("profile")
    results["targets"] = targets(results)
    return results
