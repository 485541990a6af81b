"""Targets, the printed table, docs/benchmarks.md and the plot."""

from __future__ import annotations

from pathlib import Path

from .procs import LABELS


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

    def add(name, target, measured, met, unit=""):
        out.append({"target": name, "wanted": target, "measured": measured, "met": met, "unit": unit})

    at200 = next((r for r in _get(b, "pipeline", "rates") or [] if r["rate"] == 200), None)
    if at200:
        add("pipeline p99 at 200 attempts/s", "< 100 ms", at200["p99_ms"],
            at200["p99_ms"] is not None and at200["p99_ms"] < 100 and at200["exactly_once"], "ms")
    for phase in ("seq_warm", "conc_warm"):
        ratio = _get(b, "auth", "ratios_ours_over", "stock", phase)
        if ratio is not None:
            add(f"warm known-user connects vs stock amqtt ({'sequential' if phase == 'seq_warm' else '50 concurrent'})",
                ">= 0.90 x stock", ratio, ratio >= 0.90, "x")
    storm = _get(b, "storm", "servers", "ours")
    if storm and "devices" in storm:
        add(f"{storm['devices']}-device reconnect storm", "< 15 s", storm["all_connected_s"],
            storm["all_connected_s"] is not None and storm["all_connected_s"] < 15, "s")
    ref = _get(b, "refusal", "servers", "ours")
    if ref and "growth_mib" in ref:
        add(f"RSS growth over the 2nd half of {ref['refusals']} refusals", "flat (< 1 MiB)",
            ref["growth_second_half_mib"], ref["growth_second_half_mib"] < 1, "MiB")
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
        add("key latency p99 during the flood", "< 150 ms", k, k < 150, "ms")
    return out


def table(results: dict) -> str:
    b = results["benchmarks"]
    lines = []
    m = results["machine"]
    lines.append(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}, "
                 f"load {m['load_avg_at_start'][0]:.2f}" + ("  [QUICK SIZES]" if results["quick"] else ""))
    for name, r in b.items():
        if "error" in r:
            lines.append(f"\n{name}: ERROR {r['error']}")
    if "rates" in b.get("pipeline", {}):
        lines.append("\n1. registration pipeline (CONNECT sent -> event at admin subscriber)")
        lines.append(f"  {'rate/s':>7} {'attempts':>8} {'recorded':>8} {'dup':>4} {'lost':>5} {'p50 ms':>8} "
                     f"{'p95 ms':>8} {'p99 ms':>8} {'drain s':>8} {'sustained':>9}")
        for r in b["pipeline"]["rates"]:
            lines.append(f"  {r['rate']:>7} {r['attempts']:>8} {r['distinct']:>8} {r['duplicated']:>4} {r['lost']:>5} "
                         f"{_f(r['p50_ms']):>8} {_f(r['p95_ms']):>8} {_f(r['p99_ms']):>8} {r['drain_s']:>8.2f} "
                         f"{str(r['sustained']):>9}")
        lines.append(f"  highest rate sustained without backlog (of those tried): "
                     f"{b['pipeline']['max_sustained_rate']}/s")
    if "servers" in b.get("auth", {}):
        lines.append("\n2. authentication throughput, CONNECT->CONNACK per second (loadgen CPU % of one core)")
        lines.append(f"  {'server':<22} {'seq cold':>14} {'seq warm':>14} {'50x cold':>14} {'50x warm':>14} "
                     f"{'RSS MiB':>8}")
        for kind, r in b["auth"]["servers"].items():
            if "skipped" in r:
                lines.append(f"  {LABELS[kind]:<22} skipped: {r['skipped']}")
                continue
            cells = [f"{r[p]['per_s']:>7.0f} ({r[p]['loadgen_cpu_pct']:>3.0f}%)"
                     + ("!" if r[p]["failures"] else " ") for p in ("seq_cold", "seq_warm", "conc_cold", "conc_warm")]
            lines.append(f"  {LABELS[kind]:<22} " + " ".join(c.rjust(14) for c in cells) + f" {r['peak_rss_mib']:>8.0f}")
        for other, ratios in b["auth"].get("ratios_ours_over", {}).items():
            lines.append(f"  ours / {LABELS[other]:<15} " + " ".join(f"{ratios[p]:>13.2f}x" for p in
                                                                        ("seq_cold", "seq_warm", "conc_cold", "conc_warm")))
    if "servers" in b.get("storm", {}):
        lines.append("\n3. reconnect storm (all devices connect at once to a freshly started server)")
        for kind, r in b["storm"]["servers"].items():
            if "skipped" in r:
                continue
            lines.append(f"  {LABELS[kind]:<22} {r['connected']}/{r['devices']} connected in "
                         f"{_f(r['all_connected_s'], '{:.2f}')} s (half in {_f(r['half_connected_s'], '{:.2f}')} s), "
                         f"{r['retries']} retries, peak RSS {r['peak_rss_mib']:.0f} MiB")
    if "servers" in b.get("refusal", {}):
        lines.append("\n4. refusal hygiene (server RSS before/after refused CONNECTs)")
        for kind, r in b["refusal"]["servers"].items():
            lines.append(f"  {LABELS[kind]:<44} {r['refusals']} refusals: {r['rss_before_mib']:.1f} -> "
                         f"{r['rss_after_mib']:.1f} MiB ({r['growth_mib']:+.1f} MiB, 2nd half "
                         f"{r['growth_second_half_mib']:+.1f}, "
                         f"{r['growth_bytes_per_refusal']:.0f} B/refusal), {r['per_s']:.0f} refusals/s")
    d = b.get("dashboard", {})
    if "open_s" in d:
        lines.append("\n5. dashboard at scale (headless run_test)")
        for n, t in d["open_s"].items():
            lines.append(f"  open with {int(n):>7,} requests: {t:.2f} s   (RSS {d['rss_mib'].get(n, 0):.0f} MiB)")
        if d.get("keys_10k"):
            k = d["keys_10k"]
            lines.append(f"  key press -> screen at {d['keys_rows']:,} rows: p50 {k['p50_ms']:.1f} ms, "
                         f"p99 {k['p99_ms']:.1f} ms (n={k['n']})")
        if d.get("flood"):
            k = d["flood"]
            lines.append(f"  key latency during {d['flood_rate']}/s for {d['flood_seconds']:g} s: p50 "
                         f"{k['p50_ms']:.1f} ms, p99 {k['p99_ms']:.1f} ms; rows at end {d.get('flood_rows_end')}")
    if results.get("targets"):
        lines.append("\ntargets")
        for t in results["targets"]:
            meas = t["measured"]
            lines.append(f"  [{'met ' if t['met'] else 'MISS'}] {t['target']}: wanted {t['wanted']}, "
                         f"measured {_f(meas, '{:.2f}')} {t['unit']}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    b = results["benchmarks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rates = _get(b, "pipeline", "rates") or []
    if rates:
        ax = axes[0]
        xs = [r["rate"] for r in rates]
        for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            ax.plot(xs, [r[key] for r in rates], marker="o", label=label)
        ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="target p99")
        ax.set_xlabel("new devices per second")
        ax.set_ylabel("CONNECT -> admin event (ms)")
        ax.set_yscale("log")
        ax.set_title("registration pipeline")
        ax.legend()
    servers = _get(b, "auth", "servers") or {}
    phases = ("seq_cold", "seq_warm", "conc_cold", "conc_warm")
    kinds = [k for k, r in servers.items() if "seq_cold" in r]
    if kinds:
        ax = axes[1]
        width = 0.8 / len(kinds)
        for i, k in enumerate(kinds):
            ax.bar([p + i * width for p in range(len(phases))], [servers[k][ph]["per_s"] for ph in phases],
                   width, label=LABELS[k])
        ax.set_xticks([p + width * (len(kinds) - 1) / 2 for p in range(len(phases))],
                      ["sequential\ncold", "sequential\nwarm", "50 concurrent\ncold", "50 concurrent\nwarm"])
        ax.set_ylabel("CONNECT -> CONNACK per second")
        ax.set_yscale("log")
        ax.set_title("authentication throughput")
        ax.set_ylim(top=ax.get_ylim()[1] * 8)
        ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return True


def write_docs(results: dict, docs: Path) -> Path:
    from .notes import NOTES

    m = results["machine"]
    svg = docs / "benchmarks.svg"
    have_plot = plot(results, svg)
    v = m["versions"]
    text = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (see the 'Benchmarks' section of the [README](../README.md)); do not edit the results by hand,"
        " edit `bench/notes.py` for the commentary.",
        "",
        f"- Run: {results['started']}{' (QUICK sizes: not meaningful numbers)' if results['quick'] else ''},"
        f" {results.get('total_seconds', 0):.0f} s for the whole suite",
        f"- Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, {m['os']},"
        f" load average {m['load_avg_at_start'][0]:.2f} at start",
        f"- Software: Python {m['python']}, client-registry {v['client-registry']}, amqtt {v['amqtt']},"
        f" Mosquitto {v['mosquitto']}, textual {v['textual']}, peewee {v['peewee']}, argon2-cffi {v['argon2-cffi']}",
        "- Server under test in its own process; the load generator (one asyncio process, raw MQTT packets) on the"
        " same 2 cores. Its CPU use is reported; where it is near 100 % of a core, the *generator* is the limit.",
        "",
    ]
    if have_plot:
        text += ["![pipeline latency and auth throughput](benchmarks.svg)", ""]
    text += ["## Results", "", "```", table(results), "```", ""]
    text += NOTES
    path = docs / "benchmarks.md"
    path.write_text("\n".join(text) + "\n")
    return path
