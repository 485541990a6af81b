"""2,000 new devices admitted by one approval rule while unlocked, against the same 2,000 granted by an operator
in one batch (`client-registry grant` of all of them). `python -m bench.rule_admission [--quick] [--no-docs]`

Each run starts a fresh `client-registry serve` (empty registry, unlocked for an hour). The devices arrive
open-loop at ``rate`` a second (a fleet being powered on), each from a loopback address 127.B.x.y shared by at
most 25 devices (under the per-address limit of 30 new requests a minute), and behave like firmware: CONNECT,
and when refused, CONNECT again 0.5-1 s later, until accepted. Measured: the time from the first CONNECT to
the last successful one, and how many CONNECTs that took.

- ``rule``: a rule ``ra-*`` (limit = the number of devices, template ``sensors/{username}/#=readWrite``)
  exists before the devices arrive; each device's first CONNECT is refused and admits it.
- ``manual``: the same devices; an operator process polls until every request is pending (the fastest an
  operator can be), then runs `client-registry grant NAME...` with the same template, once.

Both end in the same broker work: one account record per device sent to the registry plugin in a control
message (broker/mosquitto/plugin_protocol.md). ``hot_path`` measures, in this process,
what a device's attempt costs in the store with no rules, with rules that do not match, and when a rule
grants it, against the operator's grant of one device.

Writes bench/results/rule_admission.json and, for a full run, its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from . import procs, state
from .loadgen import Attempt, Engine, Meter, new_devices, now, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "rule_admission.json"
TEMPLATE = "sensors/{username}/#=readWrite"
PER_ADDRESS = 25
RETRY = (0.5, 1.0)  # seconds before a refused device tries again
SIZES = {"full": dict(devices=2000, rate=200, hot_path=500), "quick": dict(devices=40, rate=100, hot_path=20)}
SECTION = "rule_admission"


def admit_all(engine: Engine, items: list, rate: float, deadline: float) -> dict:
    """Every device CONNECTs (open-loop arrivals) and retries after RETRY when refused, until accepted."""
    accepted: dict[str, float] = {}
    tries: Counter = Counter()
    codes: Counter = Counter()
    rng = random.Random(7)

    def start(key, packet, source) -> None:
        Attempt(engine, packet, lambda a: done(a, key, packet, source), source=source, key=key).start()

    def done(a: Attempt, key, packet, source) -> None:
        tries[key] += 1
        codes[a.rc if a.rc is not None else (a.error or "error")] += 1
        if a.rc == 0:
            accepted[key] = a.t_done
        else:
            engine.call_at(now() + rng.uniform(*RETRY), lambda: start(key, packet, source))

    t0 = now() + 0.01
    for i, (key, packet, source) in enumerate(items):
        engine.call_at(t0 + i / rate, lambda k=key, p=packet, s=source: start(k, p, s))
    engine.run(lambda: len(accepted) == len(items), deadline)
    return {"t0": t0, "accepted": accepted, "tries": tries, "codes": {str(k): v for k, v in codes.items()}}


class Operator(threading.Thread):
    """Waits until every device's request is pending, then grants them all with one CLI command."""

    def __init__(self, db: Path, names: list[str], deadline: float) -> None:
        super().__init__(daemon=True)
        self.db, self.names, self.deadline = db, names, deadline
        self.all_pending_at: float | None = None
        self.grant_done_at: float | None = None
        self.grant_exit: int | None = None

    def run(self) -> None:
        from store import open_registry

        reg = open_registry(str(self.db))
        try:
            while now() < self.deadline and reg.status(expire=False).pending < len(self.names):
                time.sleep(0.05)
        finally:
            reg.close()
        self.all_pending_at = now()
        res = subprocess.run([*procs.client_registry_command(), "--db", str(self.db), "grant", *self.names,
                              "--permission", TEMPLATE], capture_output=True, text=True, timeout=600)
        self.grant_done_at, self.grant_exit = now(), res.returncode


def run_mode(mode: str, devices: int, rate: float, block: int) -> dict:
    from store import open_registry

    work = state.fresh("registry", 0, f"rules-{mode}")
    db = work / "registry.db"
    reg = open_registry(str(db))
    try:
        if mode == "rule":
            reg.add_rule("ra-*", permissions=[TEMPLATE], limit=devices, actor="bench")
        reg.unlock(seconds=3600, actor="bench")
    finally:
        reg.close()
    items = new_devices("ra", devices, block, PER_ADDRESS)
    names = [name for name, _, _ in items]
    with procs.Server("registry", work) as server:
        engine = Engine("127.0.0.1", server.port)
        deadline = now() + 600
        operator = Operator(db, names, deadline) if mode == "manual" else None
        with Meter(server.pids) as meter:
            if operator is not None:
                operator.start()
            r = admit_all(engine, items, rate, deadline)
        if operator is not None:
            operator.join(60)
        engine.close()
    reg = open_registry(str(db))
    try:
        granted = reg.m.Request.select().where(reg.m.Request.status == "granted").count()
        by_rule = reg.m.Request.select().where(reg.m.Request.decided_by == "rule:ra-*").count()
    finally:
        reg.close()
    t0, accepted = r["t0"], r["accepted"]
    out = {
        "mode": mode, "devices": devices, "rate": rate, "admitted": len(accepted), "granted_requests": granted,
        "granted_by_rule": by_rule,
        "first_to_last_connect_s": (max(accepted.values()) - t0) if len(accepted) == devices else None,
        "connects": sum(r["tries"].values()), "connects_per_device": sum(r["tries"].values()) / devices,
        "max_connects_one_device": max(r["tries"].values()), "connack_codes": r["codes"], **meter.summary(),
    }
    if operator is not None:
        out.update(all_pending_s=(operator.all_pending_at or t0) - t0,
                   grant_command_s=(operator.grant_done_at or t0) - (operator.all_pending_at or t0),
                   grant_exit=operator.grant_exit)
    return out


def hot_path(n: int) -> dict:
    """CPU per new device in Registry.login (this process, one thread): no rules; five rules that do not
    match; a rule that grants it; and an operator's grant of one pending device, for scale. Plus the one
    query rules add to a new request when there are none."""
    from store import open_registry
    from store.approval_rules import _LIVE_RULES
    from store.database import run_sql

    def cpu_per(fn, reg, count: int) -> float:
        t0 = time.process_time()
        for i in range(count):
            fn(reg, i)
        return 1000 * (time.process_time() - t0) / count

    def attempt(reg, i: int) -> None:
        reg.login(f"hot-{i:05d}", "pw-device-1", f"cid-{i}", f"127.9.{i // 25}.{i % 25 + 1}", "mqtt")

    out: dict = {"n": n}
    for label in ("no_rules", "rules_not_matching", "admitted_by_rule", "manual_grant"):
        work = procs.tempdir(f"rules-hot-{label}")
        reg = open_registry(str(work / "registry.db"))
        try:
            reg.unlock(seconds=3600, actor="bench")
            if label == "rules_not_matching":
                for k in range(5):
                    reg.add_rule(f"other{k}-*", permissions=[TEMPLATE], actor="bench")
            if label == "admitted_by_rule":
                reg.add_rule("hot-*", permissions=[TEMPLATE], limit=n, actor="bench")
            recorded_ms = cpu_per(attempt, reg, n)  # admitted_by_rule: recorded and granted in one transaction
            if label == "manual_grant":  # the requests recorded above, granted one by one
                out[f"{label}_ms"] = cpu_per(lambda r, i: r.grant([f"hot-{i:05d}"], [TEMPLATE], actor="bench"), reg, n)
            else:
                out[f"{label}_ms"] = recorded_ms
            if label == "no_rules":
                out["rules_query_us"] = 1000 * cpu_per(lambda r, _: run_sql(r.db, _LIVE_RULES, (0.0,)).fetchall(),
                                                       reg, 10 * n)
        finally:
            reg.close()
    return out


def markdown(results: dict) -> str:
    rule, manual, hot = results["rule"], results["manual"], results["hot_path"]

    def s(value) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [
        f"## Admission by approval rule (`python -m bench.rule_admission`, {results['started']})",
        "",
        f"{rule['devices']:,} new devices arriving at {rule['rate']:g}/s on a fresh `serve`, each retrying "
        f"{RETRY[0]:g}-{RETRY[1]:g} s after a refusal (see the module's docstring). Machine: "
        f"{results['machine']}.",
        "",
        "| | first CONNECT -> last successful CONNECT | CONNECTs per device (max) | service CPU | Mosquitto CPU |",
        "|---|---|---|---|---|",
    ]
    for label, r in ((f"one rule (`ra-*`, limit {rule['devices']:,})", rule), ("manual: one `grant` of all", manual)):
        lines.append(f"| {label} | {s(r['first_to_last_connect_s'])} | {r['connects_per_device']:.1f} "
                     f"({r['max_connects_one_device']}) | {r['cpu_s'].get('service', 0):.1f} s | "
                     f"{r['cpu_s'].get('mosquitto', 0):.1f} s |")
    lines += [
        "",
        f"Manual: every request was pending {s(manual.get('all_pending_s'))} after the first CONNECT (the "
        f"operator granted at once); the `grant` command took {s(manual.get('grant_command_s'))}. "
        f"Admitted: {rule['admitted']:,} by the rule ({rule['granted_by_rule']:,} requests decided by "
        f"`rule:ra-*`), {manual['admitted']:,} manually.",
        "",
        f"Store CPU per new device (`Registry.login`, in-process, {hot['n']} each): no rules "
        f"{hot['no_rules_ms']:.2f} ms, five rules that do not match {hot['rules_not_matching_ms']:.2f} ms, "
        f"admitted by a rule (recorded and granted in one transaction) {hot['admitted_by_rule_ms']:.2f} ms; an "
        f"operator's grant of one pending device {hot['manual_grant_ms']:.2f} ms. With no rules a new request "
        f"runs one more query (the live rules, an empty table): {hot['rules_query_us']:.0f} µs.",
    ]
    return "\n".join(lines)


def write_section(text: str, docs: Path = ROOT / "docs" / "benchmarks.md") -> Path:
    from .report import replace_section

    docs.write_text(replace_section(docs.read_text() if docs.exists() else "", SECTION, text))
    return docs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rule_admission", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    a = p.parse_args(argv)
    from . import machine

    if not procs.find_mosquitto():
        raise SystemExit("Mosquitto is needed: apt-get install mosquitto mosquitto-clients mosquitto-dev")
    raise_fd_limit()
    size = SIZES["quick" if a.quick else "full"]
    m = machine.describe()
    results = {"started": time.strftime("%Y-%m-%d %H:%M"), "quick": a.quick,
               "machine": f"{m['cores']} cores ({m['cpu_model']}), load average {m['load_avg_at_start'][0]:.2f} "
                          f"at start, Mosquitto {m['versions']['mosquitto']}"}
    results["hot_path"] = hot_path(size["hot_path"])
    for i, mode in enumerate(("rule", "manual")):
        print(f"[bench] rule_admission {mode} ...", flush=True)
        results[mode] = run_mode(mode, size["devices"], size["rate"], 80 + i)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    print(text)
    if not a.quick and not a.no_docs:
        print(f"docs: {write_section(text)}")
    ok = all(results[m]["admitted"] == size["devices"] for m in ("rule", "manual"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
