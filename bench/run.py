"""``python -m bench [--quick] [--only NAME ...] [--no-docs]``: run the suite, print a table, write JSON and
docs/benchmarks.md (full runs only, unless --docs is given)."""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

from . import machine, procs, report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NAMES = ("auth", "storm", "refusal", "pipeline", "dashboard", "stall")


def run_one(name: str, quick: bool) -> dict:
    import importlib

    return importlib.import_module(f"bench.b_{name}").run(quick=quick)


def run_suite(names=NAMES, quick: bool = False, progress=print) -> dict:
    from .loadgen import raise_fd_limit

    if not procs.find_mosquitto():
        raise RuntimeError("Mosquitto is needed: apt-get install mosquitto mosquitto-clients mosquitto-dev")
    fd_limit = raise_fd_limit()  # 10,000 storm sockets here, and as many in Mosquitto (it inherits it)
    results = {"quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine.describe(),
               "fd_limit": fd_limit, "benchmarks": {}, "seconds": {}}
    for name in names:
        progress(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            results["benchmarks"][name] = run_one(name, quick)
        except Exception as exc:  # report it and carry on with the rest of the suite
            results["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                           "traceback": traceback.format_exc()}
        results["seconds"][name] = time.perf_counter() - t0
        progress(f"[bench] {name} done in {results['seconds'][name]:.1f} s")
    results["targets"] = report.targets(results)
    results["code_changed_during_run"] = machine.code_fingerprint() != results["machine"]["code"]["fingerprint"]
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, seconds)")
    p.add_argument("--only", nargs="+", choices=NAMES, help="run only these benchmarks")
    p.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md even for --quick/--only")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    results = run_suite(a.only or NAMES, quick=a.quick)
    results["total_seconds"] = time.perf_counter() - t0
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=1, default=str))
    print(report.table(results))
    print(f"\nJSON: {a.json}  ({results['total_seconds']:.0f} s in all)")
    if (a.docs or not (a.quick or a.only)) and not a.no_docs:
        path = report.write_docs(results, ROOT / "docs")
        print(f"docs: {path}")
    failed = [n for n, r in results["benchmarks"].items() if "error" in r]
    return 1 if failed else 0
