"""6. Broker stall: grants into a broker that already holds many accounts, while an unrelated device talks.

For each size (1,000 and 10,000 accounts in the suite; 100,000 too with ``python -m bench.stall --full``) two
servers, one after the other, each holding the same accounts ``dev-00000``... plus the unrelated client
(``state.PROBE_USER``, allowed under ``probe/#``):

- ``registry``: a running ``client-registry serve`` on a prepared folder (users in the store, the snapshot
  written by its priming start). ``grants`` new devices ``new-00000``... have pending requests, recorded
  offline through ``Registry.record_attempt`` while unlocked (then locked again, the registry's normal
  state). The bench process grants them with ``Registry.grant`` in batches of ``batch`` names, as an operator
  (``client-registry grant``) or a rule would, and wakes the service after each batch as the CLI does
  (``broker.plugin_socket.wake``); the running service applies them to Mosquitto through the registry plugin
  (control messages, plugin_protocol.md).
- ``dynsec``: plain Mosquitto + dynamic security holding the same accounts (one client and one role each) and
  an admin client; each grant is ``createRole`` then ``createClient``, each in its own message on
  ``$CONTROL/dynamic-security/v1`` at QoS 0, the next sent when the previous one's response arrived (as the
  old registry's provisioner sent them: bench/dynsec_baseline.py). Dynamic security rewrites its whole JSON
  file after every command, so at large sizes 1,000 grants would take many minutes: the grants stop after
  ``dynsec_limit_s`` and the figures are per grant done (the count is printed).

Meanwhile the probe (bench/probe.py, its own process) publishes to itself every 2 ms and times each round
trip. Measured per server:
- **noise floor**: the probe's round trips during ``idle_s`` with nothing else going on (just before);
- **Mosquitto's CPU per grant**: its CPU time (/proc/<pid>/stat) from the first grant until the last granted
  device got in, minus its idle rate (the probe included) measured over the noise-floor window, divided by
  the grants;
- **end to end**: from the first grant until the last granted device's CONNECT is accepted (after the last
  grant returned, that device tries every 5 ms);
- the probe's p50/p99/max and unanswered messages during that phase;
- afterwards, outside the measurement, every granted device connects once (all must get in).
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import time
from pathlib import Path

from . import dynsec_baseline, procs, state
from .loadgen import Engine, closed_loop, cpu_of, self_cpu
from .mqtt import CONNACK, PUBLISH, SUBACK, connect_packet, packet, parse_publish, split_packets, subscribe_packet
from .probe import Probe, window

SIZES = {
    "full": dict(accounts=(1_000, 10_000), grants=1000, batch=50, dynsec_limit_s=30.0, idle_s=3.0),
    "big": dict(accounts=(1_000, 10_000, 100_000), grants=1000, batch=50, dynsec_limit_s=30.0, idle_s=3.0),
    "quick": dict(accounts=(100, 1_000), grants=20, batch=5, dynsec_limit_s=10.0, idle_s=1.0),
}
KINDS = ("registry", "dynsec")
NEW_PREFIX = "new"
ADMIT_LIMIT_S = 120.0  # the last granted device must get in within this long after the last grant
now = time.monotonic


def try_connect(port: int, username: str, password: str, timeout: float = 2.0) -> int | None:
    """One CONNECT: the CONNACK code, None when none came (refused TCP connection, timeout, closed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(connect_packet(f"stall-{username}-{time.monotonic_ns()}", username, password))
            data = b""
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    return None
                data += chunk
            if data[0] != CONNACK:
                return None
            if data[3] == 0:
                s.sendall(b"\xe0\x00")
            return data[3]
    except OSError:
        return None


def wait_admitted(port: int, username: str, password: str, limit_s: float, every: float = 0.005) -> float | None:
    """Try ``username`` every ``every`` seconds until accepted: the monotonic time it was, None if never."""
    deadline = now() + limit_s
    while now() < deadline:
        if try_connect(port, username, password) == 0:
            return now()
        time.sleep(every)
    return None


class DynsecAdmin:
    """A blocking admin client of dynamic security: one command per message, QoS 0, waits for its answer."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.packets: list[tuple[int, bytes]] = []
        self.seq = 0
        self.s.sendall(connect_packet(f"bench-admin-{time.monotonic_ns()}", dynsec_baseline.ADMIN_USER,
                                      state.ADMIN_PASSWORD))
        head, body = self._read()
        if head != CONNACK or body[1] != 0:
            raise RuntimeError(f"dynsec admin refused ({body!r})")
        self.s.sendall(subscribe_packet(dynsec_baseline.RESPONSE_TOPIC))
        head, body = self._read()
        if head != SUBACK or body[-1] == 0x80:
            raise RuntimeError("dynsec admin: subscription refused")

    def _read(self) -> tuple[int, bytes]:
        while True:
            self.packets += split_packets(self.buf)
            if self.packets:
                return self.packets.pop(0)
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("dynsec admin: connection closed")
            self.buf += data

    def run(self, command: dict, timeout: float = 60.0) -> dict:
        self.seq += 1
        key = f"bench-{self.seq}"
        topic = dynsec_baseline.CONTROL_TOPIC.encode()
        payload = json.dumps({"commands": [{**command, "correlationData": key}]}).encode()
        self.s.sendall(packet(PUBLISH, len(topic).to_bytes(2, "big") + topic + payload))
        deadline = now() + timeout
        while now() < deadline:
            head, body = self._read()
            if head >> 4 != PUBLISH:
                continue
            _, data, _ = parse_publish(head, body)
            for response in json.loads(data).get("responses", []):
                if response.get("correlationData") == key:
                    if response.get("error"):
                        raise RuntimeError(f"{command['command']}: {response['error']}")
                    return response
        raise RuntimeError(f"dynsec: no answer to {command['command']} within {timeout:.0f} s")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.s.sendall(b"\xe0\x00")
        self.s.close()


def _grant_registry(server: procs.Server, names: list[str], batch: int) -> dict:
    from broker.plugin_socket import SOCKET_NAME, wake
    from store import open_registry

    reg = open_registry(str(server.db))
    sock = reg.companion(SOCKET_NAME)
    failed = 0
    try:
        cpu0 = self_cpu()
        t_a = now()
        for i in range(0, len(names), batch):
            results = reg.grant(names[i:i + batch], actor="bench")
            failed += sum(1 for r in results if not r.ok)
            wake(Path(sock))
        t_granted = now()
        cpu = self_cpu() - cpu0
    finally:
        reg.close()
    return {"t_a": t_a, "t_granted": t_granted, "done": len(names) - failed, "failed": failed,
            "granting_cpu_s": cpu}


def _grant_dynsec(server: procs.Server, names: list[str], limit_s: float) -> dict:
    admin = DynsecAdmin(server.port)
    done = 0
    try:
        cpu0 = self_cpu()
        t_a = now()
        for name in names:
            if now() - t_a >= limit_s:
                break
            for command in dynsec_baseline.grant_commands(name, state.PASSWORD):
                admin.run(command)
            done += 1
        t_granted = now()
        cpu = self_cpu() - cpu0
    finally:
        admin.close()
    return {"t_a": t_a, "t_granted": t_granted, "done": done, "failed": 0, "granting_cpu_s": cpu}


def file_size(kind: str, work: Path) -> int | None:
    path = work / dynsec_baseline.FILE_NAME if kind == "dynsec" else state.files(work / "registry.db").snapshot
    try:
        return path.stat().st_size
    except OSError:
        return None


def one(kind: str, accounts: int, size: dict) -> dict:
    grants = size["grants"]
    new = state.device_names(NEW_PREFIX, grants)
    options = {"probe": True, "pending": new} if kind == "registry" else {"probe": True}
    work = state.fresh(kind, accounts, f"stall-{kind}-{accounts}", **options)
    server = procs.Server(kind, work)
    out: dict = {"kind": kind, "accounts": accounts, "grants_wanted": grants}
    try:
        server.start()
        mosq = server.pids["mosquitto"]
        service = server.pids.get("service")
        out["file_bytes_before"] = file_size(kind, work)
        with Probe(server.port, state.PROBE_USER, state.PASSWORD) as probe:
            time.sleep(0.5)
            i0, m0, s0 = now(), cpu_of(mosq), cpu_of(service) if service else 0.0
            time.sleep(size["idle_s"])
            i1, m1, s1 = now(), cpu_of(mosq), cpu_of(service) if service else 0.0
            idle_mosq, idle_svc = (m1 - m0) / (i1 - i0), (s1 - s0) / (i1 - i0)
            m0, s0 = cpu_of(mosq), cpu_of(service) if service else 0.0
            if kind == "registry":
                g = _grant_registry(server, new, size["batch"])
            else:
                g = _grant_dynsec(server, new, size["dynsec_limit_s"])
            last = new[g["done"] - 1] if g["done"] else None
            t_b = wait_admitted(server.port, last, state.PASSWORD, ADMIT_LIMIT_S) if last else None
            t_end = t_b or now()
            m1, s1 = cpu_of(mosq), cpu_of(service) if service else 0.0
            time.sleep(0.2)
            result = probe.stop()
        wall = t_end - g["t_a"]
        done = max(1, g["done"])
        mosq_cpu = m1 - m0
        out.update({
            "grants_done": g["done"], "grants_failed": g["failed"], "limited": g["done"] < grants,
            "grant_calls_s": g["t_granted"] - g["t_a"],
            "end_to_end_s": (t_b - g["t_a"]) if t_b else None,
            "last_admitted_after_last_grant_s": (t_b - g["t_granted"]) if t_b else None,
            "mosquitto_cpu_s": mosq_cpu, "mosquitto_idle_cpu_pct": 100 * idle_mosq,
            "mosquitto_ms_per_grant": 1000 * max(0.0, mosq_cpu - idle_mosq * wall) / done,
            "mosquitto_ms_per_grant_raw": 1000 * mosq_cpu / done,
            "service_ms_per_grant": 1000 * max(0.0, (s1 - s0) - idle_svc * wall) / done if service else None,
            "bench_granting_ms_per_grant": 1000 * g["granting_cpu_s"] / done,
            "noise": window(result, i0, i1), "during": window(result, g["t_a"], t_end),
            "probe_skipped": result.get("skipped"), "probe_errors": result.get("errors"),
            "file_bytes_after": file_size(kind, work),
            "rss_mib": {k: v / 2**20 for k, v in server.rss().items()},
            "peak_rss_mib": {k: v / 2**20 for k, v in server.peak_rss().items()},
        })
        # every granted device gets in (outside the measurement)
        engine = Engine("127.0.0.1", server.port)
        r = closed_loop(engine, lambda i: (connect_packet(f"check-{i}", new[i], state.PASSWORD), None),
                        g["done"], 10, limit_s=60.0)
        engine.close()
        out["granted_connect_codes"] = r["codes"]
        if kind == "registry":
            out["reconcile_corrections"] = state.reconcile_corrections(server)
            out["phase_within_s_of_start"] = t_end - server.spawned_at
    finally:
        server.stop()
    return out


def run(quick: bool = False, big: bool = False) -> dict:
    size = SIZES["quick" if quick else "big" if big else "full"]
    out: dict = {"sizes": {**size, "accounts": list(size["accounts"])}, "runs": []}
    for accounts in size["accounts"]:
        for kind in KINDS:
            out["runs"].append(one(kind, accounts, size))
    return out


def by(results: dict, kind: str, accounts: int) -> dict | None:
    return next((r for r in results.get("runs", []) if r["kind"] == kind and r["accounts"] == accounts), None)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- starting with many accounts (python -m bench.stall --full) ------------------------------------------------
def _boot_time_of(pid: int) -> float | None:
    """When a process started, on CLOCK_BOOTTIME (seconds; /proc/<pid>/stat's starttime, 10 ms steps)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def start_once(kind: str, accounts: int, rep: int, limit_s: float = 120.0) -> dict:
    """Spawn a server holding ``accounts`` and try a granted device every 10 ms from that moment on: when is
    it admitted, counted from the spawn and (registry) from Mosquitto's own start, and how much memory does
    Mosquitto hold then."""
    work = state.fresh(kind, accounts, f"start-{kind}-{rep}")
    server = procs.Server(kind, work)
    device = state.device_names(state.DEVICE_PREFIX, max(1, accounts))[-1]
    out: dict = {"kind": kind, "accounts": accounts, "rep": rep}
    try:
        spawned = server.start_async()
        boot0 = time.clock_gettime(time.CLOCK_BOOTTIME) - (now() - spawned)
        admitted = None
        deadline = now() + limit_s
        while now() < deadline and server.proc.poll() is None:
            if try_connect(server.port, device, state.PASSWORD, timeout=1.0) == 0:
                admitted = now()
                break
            time.sleep(0.01)
        admitted_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - (now() - admitted) if admitted else None
        server.wait_started(limit_s)
        mosq = server.pids["mosquitto"]
        mosq_boot = _boot_time_of(mosq)
        time.sleep(1.0)
        out.update({
            "admitted_after_spawn_s": (admitted - spawned) if admitted else None,
            "admitted_after_mosquitto_start_s": (admitted_boot - mosq_boot) if admitted and mosq_boot else None,
            "mosquitto_started_after_spawn_s": (mosq_boot - boot0) if mosq_boot else None,
            "serving_s": server.ready_s,
            "rss_mib": {k: v / 2**20 for k, v in server.rss().items()},
            "peak_rss_mib": {k: v / 2**20 for k, v in server.peak_rss().items()},
            "mosquitto_cpu_s": cpu_of(mosq),
            "file_bytes": file_size(kind, work),
        })
        if kind == "registry":
            out["plugin_load_line"] = next((line for line in server.log_text().splitlines()
                                            if "snapshot" in line.lower() and "mosquitto:" in line), None)
    finally:
        server.stop()
    return out


def snapshot_cost(accounts: int) -> dict:
    """What writing the plugin's snapshot costs the service's event loop at this size (CPU seconds, in this
    process): ``PluginAccounts.snapshot_bytes`` joins the records it keeps; the checksum is FNV-1a 64 of the
    24-byte header XOR the records' digest, which the copy keeps up to date per change (O(1) here). The write
    itself runs in a thread, at most once a second while accounts change."""
    import os

    from broker.mosquitto import plugin_wire as wire

    records = [wire.Account(f"{state.DEVICE_PREFIX}-{i:05d}", os.urandom(32)).record() for i in range(accounts)]
    digest = wire.digest_of(records)
    t0 = time.process_time()
    data = wire.snapshot(1, None, records, digest)
    build = time.process_time() - t0
    t0 = time.process_time()
    wire.digest_of(records)
    recompute = time.process_time() - t0
    return {"accounts": accounts, "bytes": len(data), "build_cpu_s": build, "digest_recompute_cpu_s": recompute}


def start_cost(accounts: int, reps: int) -> dict:
    for kind in KINDS:
        state.template(kind, accounts)
    runs = {kind: [] for kind in KINDS}
    for rep in range(reps):
        for kind in (KINDS if rep % 2 == 0 else KINDS[::-1]):
            runs[kind].append(start_once(kind, accounts, rep))
    out: dict = {"accounts": accounts, "reps": reps, "servers": {}}
    for kind, rs in runs.items():
        out["servers"][kind] = {
            "admitted_after_spawn_s": _median([r["admitted_after_spawn_s"] for r in rs]),
            "admitted_after_mosquitto_start_s": _median([r["admitted_after_mosquitto_start_s"] for r in rs]),
            "mosquitto_rss_mib": _median([r["rss_mib"].get("mosquitto") for r in rs]),
            "mosquitto_peak_rss_mib": _median([r["peak_rss_mib"].get("mosquitto") for r in rs]),
            "service_rss_mib": _median([r["rss_mib"].get("service") for r in rs]),
            "file_bytes": rs[0]["file_bytes"], "runs": rs,
        }
    return out


# -- text ------------------------------------------------------------------------------------------------------
def _f(v, fmt="{:.1f}", none="-"):
    return none if v is None else fmt.format(v)


def _rtt(w: dict | None) -> str:
    w = w or {}
    return (f"{_f(w.get('p50_ms'))}/{_f(w.get('p99_ms'))}/{_f(w.get('max_ms'), '{:.0f}')}"
            + (f" ({w['lost']} lost)" if w.get("lost") else ""))


def lines(stall: dict) -> list[str]:
    size = stall["sizes"]
    out = [f"\n6. broker stall: {size['grants']:,} grants into a broker already holding N accounts, while an unrelated"
           f" client publishes to itself every 2 ms (registry: Registry.grant in batches of {size['batch']};"
           f" dynsec: createRole + createClient per grant, at most {size['dynsec_limit_s']:.0f} s of them)",
           f"  {'accounts':>8} {'server':<29} {'grants':>6} {'Mosq ms/grant':>13} {'wall ms/grant':>13}"
           f" {'all in s':>8} {'unrelated p50/p99/max ms':>25} {'noise p50/p99/max':>18} {'file MiB':>8}"
           f" {'Mosq RSS':>8}"]
    for r in stall.get("runs", []):
        label = procs.LABELS.get(r["kind"], r["kind"])
        wall = 1000 * r["end_to_end_s"] / r["grants_done"] if r.get("end_to_end_s") and r["grants_done"] else None
        out.append(f"  {r['accounts']:>8,} {label:<29} {r['grants_done']:>6}"
                   f" {_f(r['mosquitto_ms_per_grant'], '{:.2f}'):>13}"
                   f" {_f(wall, '{:.2f}'):>13} {_f(r.get('end_to_end_s'), '{:.2f}'):>8} {_rtt(r['during']):>25}"
                   f" {_rtt(r['noise']):>18} {_f((r.get('file_bytes_after') or 0) / 2**20):>8}"
                   f" {_f(r['rss_mib'].get('mosquitto'), '{:.0f}'):>8}")
    regs = [r for r in stall.get("runs", []) if r["kind"] == "registry"]
    if regs:
        out.append("  registry, per grant: service CPU " + ", ".join(
            f"{r['accounts']:,}: {_f(r.get('service_ms_per_grant'), '{:.2f}')} ms" for r in regs)
            + "; the granting process (Registry.grant + wake) " + ", ".join(
            f"{_f(r.get('bench_granting_ms_per_grant'), '{:.2f}')}" for r in regs) + " ms")
    bad = [f"{r['kind']}@{r['accounts']}: {r.get('granted_connect_codes')}" for r in stall.get("runs", [])
           if set((r.get("granted_connect_codes") or {}).keys()) != {"0"}]
    out.append("  every granted device got in afterwards: " + ("yes" if not bad else "NO: " + "; ".join(bad)))
    return out


def start_lines(start: dict) -> list[str]:
    out = [f"\n7. start with {start['accounts']:,} accounts (median of {start['reps']}): a granted device tries every"
           f" 10 ms from the spawn on",
           f"  {'server':<29} {'admitted after spawn s':>22} {'after Mosquitto started s':>25} {'Mosq RSS MiB':>12}"
           f" {'peak':>6} {'file MiB':>8}"]
    for kind, r in start["servers"].items():
        out.append(f"  {procs.LABELS.get(kind, kind):<29} {_f(r['admitted_after_spawn_s'], '{:.2f}'):>22}"
                   f" {_f(r['admitted_after_mosquitto_start_s'], '{:.2f}'):>25}"
                   f" {_f(r['mosquitto_rss_mib'], '{:.0f}'):>12}"
                   f" {_f(r['mosquitto_peak_rss_mib'], '{:.0f}'):>6} {_f((r['file_bytes'] or 0) / 2**20):>8}")
    reg = start["servers"].get("registry", {})
    runs = reg.get("runs", [])
    if runs:
        out.append("  registry: every run, admitted after Mosquitto started (s): "
                   + "/".join(_f(r["admitted_after_mosquitto_start_s"], "{:.2f}") for r in runs)
                   + f"; the service's RSS {_f(reg.get('service_rss_mib'), '{:.0f}')} MiB")
    return out


def targets(stall: dict | None, start: dict | None = None) -> list[dict]:
    out = []
    for r in (stall or {}).get("runs", []):
        if r["kind"] != "registry" or r["accounts"] < 100_000:
            continue
        out.append({"target": f"Mosquitto per grant at {r['accounts']:,} accounts", "wanted": "< 1 ms",
                    "measured": r["mosquitto_ms_per_grant"], "met": r["mosquitto_ms_per_grant"] < 1, "unit": "ms"})
        p99 = r["during"].get("p99_ms")
        out.append({"target": f"unrelated client's p99 during {r['grants_done']:,} grants at"
                              f" {r['accounts']:,} accounts",
                    "wanted": "< 5 ms", "measured": p99, "met": p99 is not None and p99 < 5, "unit": "ms"})
    reg = ((start or {}).get("servers") or {}).get("registry")
    if reg:
        t = reg["admitted_after_mosquitto_start_s"]
        out.append({"target": f"granted device admitted after Mosquitto's start with {start['accounts']:,} accounts",
                    "wanted": "< 2 s", "measured": t, "met": t is not None and t < 2, "unit": "s"})
    return out


def main(argv=None) -> int:
    """``python -m bench.stall [--quick|--full] [--no-docs]``: the stall at 1,000 and 10,000 accounts (--full:
    100,000 too, and the start with 100,000 accounts), its own section of docs/benchmarks.md for --full."""
    import argparse

    from . import machine
    from .loadgen import raise_fd_limit
    from .report import replace_section

    p = argparse.ArgumentParser(prog="python -m bench.stall", description=main.__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full", action="store_true", help="100,000 accounts too, and the start with 100,000")
    p.add_argument("--start-reps", type=int, default=3)
    p.add_argument("--no-docs", action="store_true")
    a = p.parse_args(argv)
    if not procs.find_mosquitto():
        raise SystemExit("Mosquitto is needed")
    raise_fd_limit()
    m = machine.describe()
    t0 = time.perf_counter()
    results = {"started": time.strftime("%Y-%m-%d %H:%M"), "machine": m,
               "stall": run(quick=a.quick, big=a.full and not a.quick)}
    if a.full and not a.quick:
        results["start"] = start_cost(100_000, a.start_reps)
        results["snapshot_cost"] = snapshot_cost(100_000)
    results["targets"] = targets(results["stall"], results.get("start"))
    results["seconds"] = time.perf_counter() - t0
    RESULTS = procs.ROOT / "bench" / "results" / "stall.json"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    text = lines(results["stall"]) + (start_lines(results["start"]) if "start" in results else [])
    if "snapshot_cost" in results:
        c = results["snapshot_cost"]
        text.append(f"  the service's snapshot at {c['accounts']:,} accounts: {c['bytes'] / 2**20:.1f} MiB, built in"
                    f" {c['build_cpu_s']:.3f} s of CPU on its event loop, at most once a second while accounts change"
                    " (the"
                    f" digest it keeps per change would take {c['digest_recompute_cpu_s']:.2f} s to recompute)")
    text += ["", "targets"] + [f"  [{'met ' if t['met'] else 'MISS'}] {t['target']}: wanted {t['wanted']},"
                               f" measured {_f(t['measured'], '{:.2f}')} {t['unit']}" for t in results["targets"]]
    print("\n".join(text))
    if a.full and not a.quick and not a.no_docs:
        from .notes import stall_notes

        docs = procs.ROOT / "docs" / "benchmarks.md"
        body = [f"## Broker stall and start at 100,000 accounts (`python -m bench.stall --full`, {results['started']})",
                "", f"Machine: {m['cores']} cores ({m['cpu_model']}), load average {m['load_avg_at_start'][0]:.2f}"
                f" at start, Mosquitto {m['versions']['mosquitto']}, commit {m['code'].get('commit')}"
                + (f" plus uncommitted {', '.join(m['code']['uncommitted'])}" if m["code"].get("uncommitted") else "")
                + f"; {results['seconds']:.0f} s.", "", "```", *[x for x in text if x != ""], "```", "",
                *stall_notes(results)]
        docs.write_text(replace_section(docs.read_text() if docs.exists() else "", "stall", "\n".join(body)))
        print(f"docs: {docs}")
    return 0 if all(set((r.get("granted_connect_codes") or {}).keys()) == {"0"}
                    for r in results["stall"]["runs"]) else 1
