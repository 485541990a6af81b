"""Targets, the printed table, docs/benchmarks.md and the plot."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from .procs import LABELS
from .profile import lines as profile_lines

PHASES = ("seq_cold", "seq_warm", "conc_cold", "conc_warm")
PHASE_NAMES = {"seq_cold": "sequential cold", "seq_warm": "sequential warm", "conc_cold": "50 concurrent cold",
               "conc_warm": "50 concurrent warm"}
BASELINES = ("passwd", "dynsec")
LABELS = {**LABELS, "registry@ready": "registry, storm after 'serving'"}


def _f(v, fmt="{:.0f}", none="-"):
    return none if v is None else fmt.format(v)


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(results: dict) -> list[dict]:
    b = results["benchmarks"]
    out = []

    def add(name, wanted, measured, met, unit="", why=""):
        out.append({"target": name, "wanted": wanted, "measured": measured, "met": bool(met), "unit": unit,
                    "why": why})

    for phase in PHASES:
        for other in BASELINES:
            ratio = _get(b, "auth", "ratios_registry_over", other, phase)
            if ratio is not None:
                add(f"known-device connects, {PHASE_NAMES[phase]}, vs {LABELS[other]}", ">= 0.95 x", ratio,
                    ratio >= 0.95, "x")
    for other in BASELINES:
        ratio = _get(b, "storm", "ratios", f"registry/{other}")
        storm = _get(b, "storm", "servers", "registry") or {}
        if "devices" in storm:  # a time ratio: ">= 0.95 x Mosquitto's speed" is "<= 1/0.95 x its time"
            add(f"{storm['devices']:,}-device reconnect storm vs {LABELS[other]} (time)", "<= 1.05 x", ratio,
                ratio is not None and ratio <= 1 / 0.95, "x")
    for other in BASELINES:
        ratio = _get(b, "refusal", "ratios_registry_over", other)
        if ratio is not None:
            add(f"refusals/s of unknown names vs {LABELS[other]}", ">= 0.95 x", ratio, ratio >= 0.95, "x")
    at500 = next((r for r in _get(b, "pipeline", "rates") or [] if r["rate"] == 500), None)
    if at500:
        add("pipeline p99 at 500 new devices/s", "< 20 ms", at500["p99_ms"],
            at500["p99_ms"] is not None and at500["p99_ms"] < 20, "ms")
        add("pipeline at 500 new devices/s: nothing lost", "0 lost", at500["lost"], at500["lost"] == 0, "lost")
    ref = _get(b, "refusal", "servers", "registry")
    if ref and "growth_second_half_mib" in ref:
        n = ref["refusals"]
        for proc in ("mosquitto", "service"):
            g = ref["growth_second_half_mib"].get(proc)
            g1 = ref["growth_first_half_mib"].get(proc)
            if g is not None:
                # a leak grows as much in the second half as in the first; a cache or a queue filling up once
                # grows less and less
                add(f"RSS of {'Mosquitto' if proc == 'mosquitto' else 'the service'} flat over {n:,} refusals "
                    f"(growth in the 2nd half; 1st: {g1:+.2f} MiB)", "< 1 MiB or < half the 1st", g,
                    g < 1 or g < 0.5 * g1, "MiB")
    dash = b.get("dashboard") or {}
    for n, limit in ((10_000, 2.0), (100_000, 5.0)):
        t = _get(dash, "open_s", str(n))
        if t is not None:
            add(f"dashboard opens {n:,} requests", f"< {limit:g} s", t, t < limit, "s")
    k = _get(dash, "keys_10k", "p99_ms")
    if k is not None:
        add("key latency p99 at 10,000 rows", "< 100 ms", k, k < 100, "ms")
    k = _get(dash, "flood", "p99_ms")
    if k is not None:
        add(f"key latency p99 during the flood ({dash.get('flood_rate')}/s)", "< 150 ms", k, k < 150, "ms")
    if "runs" in (b.get("stall") or {}):
        from .b_stall import targets as stall_targets

        out += stall_targets(b["stall"])
    return out


def _pct(d: dict, key: str) -> str:
    v = (d.get("cpu_pct") or {}).get(key) if "cpu_pct" in d else d.get(f"{key}_cpu_pct")
    return _f(v, "{:.0f}%")


def _auth(a: dict, lines: list[str]) -> None:
    size = a["sizes"]
    lines.append(f"\n1. known-device connects: CONNECT -> CONNACK per second, median of {size['rounds']} rounds "
                 f"(in brackets: load generator CPU, % of one core)")
    lines.append(f"  {'server':<30} {'seq cold':>13} {'seq warm':>13} {'50x cold':>13} {'50x warm':>13}"
                 f"   Mosquitto us/connect")
    for kind, r in a["servers"].items():
        if "seq_cold" not in r:
            continue
        cells = [f"{r[p]['per_s']:>6.0f} ({r[p]['loadgen_cpu_pct']:>3.0f}%)" + ("!" if r[p]["failures"] else " ")
                 for p in PHASES]
        us = "/".join(_f(r[p]["mosquitto_us_per_connect"]) for p in PHASES)
        lines.append(f"  {LABELS[kind]:<30} " + " ".join(c.rjust(13) for c in cells) + f"   {us}")
    for other, ratios in a.get("ratios_registry_over", {}).items():
        lines.append(f"  {'registry / ' + other:<30} " + " ".join(
            f"{_f(ratios[p], '{:.2f}x'):>12} " for p in PHASES))
    noise = a.get("noise_dynsec_over_passwd")
    if noise:
        lines.append(f"  {'(noise: dynsec / passwd)':<30} "
                     + " ".join(f"{_f(noise[p], '{:.2f}x'):>12} " for p in PHASES))
    p99 = {k: "/".join(_f(r[p]["p99_ms"], "{:.1f}") for p in PHASES)
           for k, r in a["servers"].items() if "seq_cold" in r}
    lines.append("  p99 latency ms (seq cold/seq warm/50x cold/50x warm): "
                 + ", ".join(f"{k} {v}" for k, v in p99.items()))
    svc = max((a["servers"]["registry"][p]["service_cpu_pct_max"] for p in PHASES), default=0)
    st = a.get("registry_start", {})
    lines.append(f"  registry start with {size['users']:,} devices: port answered after"
                 f" {_f(st.get('listening_s'), '{:.1f}')} s,"
                 f" 'serving' after {_f(st.get('ready_s'), '{:.1f}')} s ({_f(st.get('service_cpu_s'), '{:.1f}')} s of"
                 f" service CPU); start-up reconcile corrections: {st.get('reconcile_corrections')};"
                 f" service CPU during the registry's phases <= {svc:.0f}%")
    rss = {k: "+".join(f"{v:.0f}" for v in r.get("rss_mib", {}).values()) for k, r in a["servers"].items()}
    lines.append("  RSS MiB at the end (Mosquitto[+service]): " + ", ".join(f"{k} {v}" for k, v in rss.items()))


def _storm(s: dict, lines: list[str]) -> None:
    lines.append(f"\n2. reconnect storm: {s['sizes']['devices']:,} granted devices at once to a freshly started server,"
                 f" from the moment its port answers (median of {s['sizes']['reps']})")
    lines.append(f"  {'server':<32} {'connected':>11} {'all in s':>9} {'half s':>7} {'retries':>7} {'SYN drops':>9}"
                 f" {'Mosq CPU s':>10} {'svc CPU s':>9} {'loadgen':>7} {'peak RSS MiB':>13}")
    for name, r in s["servers"].items():
        cpu = r.get("cpu_s", {})
        rss = "+".join(f"{v:.0f}" for v in r.get("peak_rss_mib", {}).values())
        lines.append(f"  {LABELS.get(name, name):<32} {r['connected']:>5}/{r['devices']:<5} "
                     f"{_f(r['all_connected_s'], '{:.2f}'):>9} {_f(r['half_connected_s'], '{:.2f}'):>7} "
                     f"{_f(r['retries']):>7} {_f(r['listen_overflows']):>9} {_f(cpu.get('mosquitto'), '{:.2f}'):>10} "
                     f"{_f(cpu.get('service'), '{:.2f}'):>9} {_f(r['loadgen_cpu_pct'], '{:.0f}%'):>7} {rss:>13}")
    reps = "; ".join(f"{LABELS.get(n, n).split(' +')[0] if n not in ('registry', 'registry@ready') else n} "
                     + "/".join(_f(x, "{:.2f}") for x in r["all_connected_s_reps"]) for n, r in s["servers"].items())
    lines.append(f"  every run, all in (s): {reps}")
    ready = [r.get("serve_ready_s") for n, r in s["servers"].items() if n == "registry"]
    if ready and ready[0] is not None:
        lines.append(f"  during the registry storm, 'serving' came {ready[0]:.1f} s after spawn "
                     f"(start-up reconcile); serve stayed up: {s['servers']['registry'].get('serve_alive')}")
    lines.append("  ratios (median of back-to-back pairs): "
                 + ", ".join(f"{k} {_f(v, '{:.2f}x')}" for k, v in s.get("ratios", {}).items())
                 + f"; noise: dynsec/passwd {_f(s.get('noise_dynsec_over_passwd'), '{:.2f}x')}")


def _refusal(f: dict, lines: list[str]) -> None:
    size = f["sizes"]
    lines.append(f"\n3. refusals of unknown names ({size['refusals']:,} after {size['warmup']:,} warm-up, "
                 f"{size['concurrency']} in flight; registry locked)")
    lines.append(f"  {'server':<30} {'refusals/s':>10} {'loadgen':>7} {'Mosq us':>7} {'svc CPU':>7} {'recorded':>9}"
                 f"  RSS MiB start -> mid -> end (2nd-half growth)")
    for kind, r in f["servers"].items():
        rss = "; ".join(f"{p} {v[0]:.1f} -> {v[1]:.1f} -> {v[2]:.1f} ({r['growth_second_half_mib'][p]:+.2f})"
                        for p, v in r["rss_mib"].items())
        rec = _f(r.get("knocks_recorded"))
        lines.append(f"  {LABELS[kind]:<30} {r['per_s']:>10.0f} {_pct(r, 'loadgen'):>7} "
                     f"{r['mosquitto_us_per_refusal']:>7.0f} {_pct(r, 'service'):>7} {rec:>9}  {rss}")
        if r["codes"].keys() != {"5"}:
            lines.append(f"    CONNACK codes / errors: {r['codes']}")
    reg = f["servers"].get("registry", {})
    if reg.get("service_drain_s"):
        lines.append(f"  the store counted {reg.get('knocks_recorded', 0):,} of the {reg['refusals']:,} knocks (the"
                     f" plugin counts them and reports once a second); the service was busy for "
                     f"{' and '.join(f'{x:.1f}' for x in reg['service_drain_s'])} s after each half;")
        lines.append(f"  it spent {_f(reg.get('service_ms_per_knock'), '{:.3f}')} ms of CPU and"
                     f" {_f(reg.get('context_switches_per_knock'), '{:.2f}')} context switches per knock counted;"
                     f" the plugin's 'queue full' warning (at most once a minute) appeared"
                     f" {reg.get('plugin_queue_full_logged')}x")
    lines.append("  ratios: " + ", ".join(f"registry / {k} {v:.2f}x"
                                          for k, v in f.get("ratios_registry_over", {}).items()))
    lines.extend(profile_lines(f.get("profile")))


def _pipeline(p: dict, lines: list[str]) -> None:
    lines.append("\n4. registration pipeline: CONNECT written -> request.created at the admin subscriber "
                 f"(fresh registry per rate; net.unix.max_dgram_qlen {p.get('default_qlen')})")
    lines.append(f"  {'rate/s':>8} {'sent':>5} {'recorded':>8} {'lost':>5} {'dup':>4} {'events':>6} {'p50 ms':>8}"
                 f" {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'drain s':>7} {'svc ms/dev':>10} {'loadgen':>7}"
                 f" {'sustained':>9}")
    rows = list(p.get("rates", []))
    if isinstance(p.get("raised_qlen"), dict) and "rate" in p["raised_qlen"]:
        rows.append({**p["raised_qlen"], "label": f"{p['raised_qlen']['rate']}*"})
    for r in rows:
        lines.append(f"  {r.get('label', str(r['rate'])):>8} {r['attempts']:>5} {r['recorded']:>8} {r['lost']:>5} "
                     f"{r['duplicated']:>4} {r['events_received']:>6} {_f(r['p50_ms']):>8} {_f(r['p95_ms']):>8} "
                     f"{_f(r['p99_ms']):>8} {_f(r['max_ms']):>8} {_f(r['drain_s'], '{:.1f}'):>7} "
                     f"{_f(r.get('service_ms_per_device'), '{:.1f}'):>10} {_pct(r, 'loadgen'):>7}"
                     f" {r['sustained']!s:>9}")
    if rows and len(rows) > len(p.get("rates", [])):
        lines.append(f"  * the same with net.unix.max_dgram_qlen raised to {p['raised_qlen'].get('max_dgram_qlen')}")
    elif isinstance(p.get("raised_qlen"), dict) and "skipped" in p["raised_qlen"]:
        lines.append(f"  (raised-qlen run skipped: {p['raised_qlen']['skipped']})")
    lines.append("  (svc ms/dev: the service's CPU over the run divided by the devices it recorded)")
    lines.append(f"  highest rate sustained (of those tried): {p.get('max_sustained_rate')}/s")
    lines.extend(profile_lines(p.get("profile")))
    c = p.get("store_costs")
    if c:
        lines.append(f"  Registry.login alone, in-process CPU per call: new request {c['new_request_ms']:.2f} ms "
                     f"({c['new_request_statements']:.0f} SQL statements), locked knock {c['knock_ms']:.2f} ms "
                     f"({c['knock_statements']:.0f} statements); a bare sqlite3 SELECT {c['raw_select_ms']:.3f} ms")


def _dashboard(d: dict, lines: list[str]) -> None:
    lines.append("\n5. dashboard at scale (headless run_test)")
    for n, t in d["open_s"].items():
        lines.append(f"  open with {int(n):>7,} requests: {t:.2f} s   (RSS {d['rss_mib'].get(n, 0):.0f} MiB)")
    if d.get("keys_10k"):
        k = d["keys_10k"]
        lines.append(f"  key press -> screen at {d['keys_rows']:,} rows: p50 {k['p50_ms']:.1f} ms, "
                     f"p99 {k['p99_ms']:.1f} ms (n={k['n']})")
    for rate, k in (d.get("floods") or ({str(d["flood_rate"]): d["flood"]} if d.get("flood") else {})).items():
        lines.append(f"  key latency during {rate}/s new devices for {d['flood_seconds']:g} s: p50 "
                     f"{k['p50_ms']:.1f} ms, p99 {k['p99_ms']:.1f} ms; requests {k.get('rows_start')} -> "
                     f"{k.get('rows_end')}")


def table(results: dict) -> str:
    b = results["benchmarks"]
    m = results["machine"]
    lines = [f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}, "
             f"Mosquitto {m['versions'].get('mosquitto')}, load {m['load_avg_at_start'][0]:.2f} at start"
             + ("  [QUICK SIZES]" if results["quick"] else "")]
    if results.get("code_changed_during_run"):
        lines.append("WARNING: store/, broker/ or tui/ changed while this run was going on")
    for name, r in b.items():
        if "error" in r:
            lines.append(f"\n{name}: ERROR {r['error']}")
    if "servers" in b.get("auth", {}):
        _auth(b["auth"], lines)
    if "servers" in b.get("storm", {}):
        _storm(b["storm"], lines)
    if "servers" in b.get("refusal", {}):
        _refusal(b["refusal"], lines)
    if "rates" in b.get("pipeline", {}):
        _pipeline(b["pipeline"], lines)
    if "open_s" in b.get("dashboard", {}):
        _dashboard(b["dashboard"], lines)
    if "runs" in b.get("stall", {}):
        from .b_stall import lines as stall_lines

        lines.extend(stall_lines(b["stall"]))
    if results.get("targets"):
        lines.append("\ntargets")
        for t in results["targets"]:
            meas = t["measured"]
            fmt = "{:.2f}" if isinstance(meas, float) else "{}"
            lines.append(f"  [{'met ' if t['met'] else 'MISS'}] {t['target']}: wanted {t['wanted']}, "
                         f"measured {_f(meas, fmt)} {t['unit']}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    b = results["benchmarks"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    servers = _get(b, "auth", "servers") or {}
    kinds = [k for k, r in servers.items() if "seq_cold" in r]
    if kinds:
        ax = axes[0]
        width = 0.8 / len(kinds)
        for i, k in enumerate(kinds):
            ax.bar([p + i * width for p in range(len(PHASES))], [servers[k][ph]["per_s"] for ph in PHASES],
                   width, label=LABELS[k])
        ax.set_xticks([p + width * (len(kinds) - 1) / 2 for p in range(len(PHASES))],
                      ["sequential\ncold", "sequential\nwarm", "50 in flight\ncold", "50 in flight\nwarm"])
        ax.set_ylabel("CONNECT -> CONNACK per second")
        ax.set_title("known-device connects (median of rounds)")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
        ax.legend(fontsize=8, loc="upper left")
    storm = _get(b, "storm", "servers") or {}
    refusal = _get(b, "refusal", "servers") or {}
    if storm or refusal:
        ax = axes[1]
        names = [n for n in ("passwd", "dynsec", "registry", "registry@ready") if n in storm]
        ax.bar(range(len(names)), [storm[n]["all_connected_s"] or 0 for n in names],
               color=["C0", "C1", "C2", "C2"][:len(names)])
        ax.set_xticks(range(len(names)), ["passwd", "dynsec", "registry", "registry\n(after 'serving')"][:len(names)])
        ax.set_ylabel(f"seconds until all {_get(b, 'storm', 'sizes', 'devices') or ''} devices are in")
        ax.set_title("reconnect storm (median)")
    rates = _get(b, "pipeline", "rates") or []
    if rates:
        ax = axes[2]
        xs = [r["rate"] for r in rates]
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            ax.plot(xs, [r[key] or float("nan") for r in rates], marker="o", label=label)
        ax.axhline(20, color="grey", linestyle="--", linewidth=1, label="target p99 (20 ms)")
        ax.set_xlabel("new devices per second")
        ax.set_ylabel("CONNECT -> admin event (ms)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title("registration pipeline")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return True


_SECTION = re.compile(r"<!-- (\w+) -->\n.*?<!-- /\1 -->\n", re.S)


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section of the stand-alone benchmark ``name`` (between ``<!-- name -->`` markers) set
    to ``body``, appended when it is not there yet."""
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->\n"
    for found in _SECTION.finditer(text):
        if found.group(1) == name:
            return text[:found.start()] + block + text[found.end():]
    return text.rstrip("\n") + "\n\n" + block


def standalone_main(argv: list[str] | None, prog: str, doc: str, run: Callable[[bool], dict],
                    markdown: Callable[[dict], str], section: str,
                    more_machine: Callable[[dict], str] | None = None) -> dict:
    """A stand-alone benchmark's command line (``--quick``, ``--no-docs``): ``run(quick)``'s results with the
    time and machine (``more_machine(machine.describe())`` appended), saved as bench/results/<section>.json,
    its section printed and, for a full run, set in docs/benchmarks.md. Returns the results."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    a = p.parse_args(argv)
    from . import machine

    m = machine.describe()
    results = {"started": time.strftime("%Y-%m-%d %H:%M"), "quick": a.quick,
               "machine": f"{m['cores']} cores ({m['cpu_model']}), load average {m['load_avg_at_start'][0]:.2f} "
                          f"at start{more_machine(m) if more_machine else ''}", **run(a.quick)}
    root = Path(__file__).resolve().parent.parent
    path = root / "bench" / "results" / f"{section}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    print(text)
    if not a.quick and not a.no_docs:
        docs = root / "docs" / "benchmarks.md"
        docs.write_text(replace_section(docs.read_text() if docs.exists() else "", section, text))
        print(f"docs: {docs}")
    return results


def write_docs(results: dict, docs: Path) -> Path:
    from .notes import notes

    m = results["machine"]
    svg = docs / "benchmarks.svg"
    have_plot = plot(results, svg)
    v = m["versions"]
    text = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (see the 'Benchmarks' section of the [README](../README.md)); do not edit"
        " the results by hand, edit `bench/notes.py` for the commentary.",
        "",
        f"- Run: {results['started']}{' (QUICK sizes: not meaningful numbers)' if results['quick'] else ''},"
        f" {results.get('total_seconds', 0):.0f} s for the whole suite",
        f"- Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, {m['os']},"
        f" load average {m['load_avg_at_start'][0]:.2f} at start; "
        + ", ".join(f"{k} = {val}" for k, val in m.get("sysctl", {}).items())
        + f"; RLIMIT_NOFILE {results.get('fd_limit')}",
        f"- Code: commit {_get(m, 'code', 'commit')}"
        + (f" plus uncommitted changes to {', '.join(m['code']['uncommitted'])}" if _get(m, "code", "uncommitted")
           else "") + " (bench/, tests/ and docs/ aside)"
        + (". **The code under test changed while this run was going on: its numbers mix two versions.**"
           if results.get("code_changed_during_run") else ""),
        f"- Software: Python {m['python']}, client-registry {v['client-registry']}, Mosquitto {v['mosquitto']}"
        f" (Debian), SQLite {v.get('sqlite')}, peewee {v['peewee']}, paho-mqtt {v['paho-mqtt']},"
        f" aiohttp {v.get('aiohttp')}, textual {v['textual']}",
        "- Three servers, each in its own processes, measured side by side in this one run: **Mosquitto + password"
        " file**, **Mosquitto + dynamic security** (no registry) and **client-registry serve** (Mosquitto with"
        " the registry plugin alone, which holds every account in memory, supervised by the Python service). One"
        " load generator process (epoll, raw MQTT packets) on the same 2 cores; its CPU use is printed next to"
        " each throughput.",
        "",
    ]
    if have_plot:
        text += ["![known-device connects, reconnect storm, pipeline latency](benchmarks.svg)", ""]
    text += ["## Results", "", "```", table(results), "```", ""]
    text += notes(results)
    path = docs / "benchmarks.md"
    # Sections written by stand-alone benchmarks (python -m bench.rule_admission) are carried over.
    kept = [found.group(0) for found in _SECTION.finditer(path.read_text())] if path.exists() else []
    path.write_text("\n".join(text) + "\n" + "".join("\n" + block for block in kept))
    return path
