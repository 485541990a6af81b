"""``python -m bench [--quick] [--only NAME ...] [--no-docs]``: run the suite, print a table, write JSON and
docs/benchmarks.md (full runs only, unless --docs is given)."""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

from . import machine, report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NAMES = ("auth", "pipeline", "storm", "refusal", "dashboard")


def run_one(name: str, quick: bool) -> dict:
    if name == "auth":
        from . import b_auth as mod
    elif name == "pipeline":
        from . import b_pipeline as mod
    elif name == "storm":
        from . import b_storm as mod
    elif name == "refusal":
        from . import b_refusal as mod
    else:
        from . import b_dashboard as mod
    return mod.run(quick=quick)


def run_suite(names=NAMES, quick: bool = False, progress=print) -> dict:
    results = {"quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine.describe(),
               "benchmarks": {}, "seconds": {}}
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
