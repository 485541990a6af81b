"""A TLS reconnect storm: 10,000 granted devices connect at once over TLS to a freshly started server.
`python -m bench.tls_storm [--quick]`

b_storm.py's storm (every device at once, each keeps its connection, retries after 0.5-1 s when refused or when
no CONNACK came within its timeout), on the TLS listener `serve --tls` adds, side by side with Debian's
Mosquitto and a password file configured with the same listener lines and the same certificates (one site CA
and server certificate made by `broker/certificates.py`, copied into both folders; `crlfile`,
`set_tcp_nodelay`). Devices log in with their password (no client certificate). The servers take turns in
each repetition; the ratio is the median of back-to-back pairs. The generator's TLS handshakes run in the
same epoll loop (``loadgen.TlsAttempt``) and compete for the same 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import ssl
import statistics
import time
from pathlib import Path

from broker import certificates
from broker.certificates import TlsFiles

from . import procs, state
from .loadgen import Engine, Meter, TlsAttempt, storm
from .mqtt import connect_packet

SIZES = {"full": {"devices": 10_000, "reps": 3, "limit_s": 120.0}, "quick": {"devices": 60, "reps": 1,
                                                                           "limit_s": 30.0}}
ATTEMPT_TIMEOUT = 4.0  # a TLS attempt (TCP connect, handshake, CONNACK) given up after this long
KINDS = ("passwd", "registry")


def _site() -> TlsFiles:
    folder = procs.tempdir("tls-site")
    files = TlsFiles.for_database(str(folder / "registry.db"))
    certificates.init_files(files, ["127.0.0.1"])
    return files


def _with_site(workdir: Path, site: TlsFiles) -> None:
    for source, target in zip(site.all(), TlsFiles.for_database(str(workdir / "registry.db")).all(), strict=True):
        shutil.copy2(source, target)


def _one(kind: str, site: TlsFiles, items: list, size: dict, rep: int) -> dict:
    workdir = state.fresh(kind, size["devices"], f"tls-storm-{kind}")
    _with_site(workdir, site)
    server = procs.Server(kind, workdir, tls=True)
    try:
        server.start(wait="ready")
        assert server.tls_port is not None
        context = ssl.create_default_context(cafile=str(site.ca_cert))
        engine = Engine("127.0.0.1", server.tls_port)
        with Meter(server.pids) as meter:
            r = storm(engine, items, limit_s=size["limit_s"], timeout=ATTEMPT_TIMEOUT,
                      attempt=functools.partial(TlsAttempt, context=context))
        engine.close()
        at = sorted(r.pop("connected_at"))
        return {"rep": rep, **r, "all_connected_s": at[-1] if len(at) == len(items) else None,
                "half_connected_s": at[len(at) // 2] if at else None, **meter.summary()}
    finally:
        server.stop()


def run(quick: bool = False) -> dict:
    size = SIZES["quick" if quick else "full"]
    names = state.device_names(state.DEVICE_PREFIX, size["devices"])
    items = [(connect_packet(f"storm-{n}", n, state.PASSWORD), None) for n in names]
    site = _site()
    for kind in KINDS:
        state.template(kind, size["devices"])
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for rep in range(size["reps"]):
        for kind in (KINDS if rep % 2 == 0 else KINDS[::-1]):
            runs[kind].append(_one(kind, site, items, size, rep))
    pairs = [a["all_connected_s"] / b["all_connected_s"] for a, b in zip(runs["registry"], runs["passwd"], strict=True)
             if a["all_connected_s"] and b["all_connected_s"]]
    return {"sizes": size, "runs": runs,
            "all_connected_s": {k: [r["all_connected_s"] for r in v] for k, v in runs.items()},
            "registry_over_passwd": statistics.median(pairs) if len(pairs) == size["reps"] else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    out = run(args.quick)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    (results / "tls_storm.json").write_text(json.dumps(out, indent=2, default=str))
    for kind, reps in out["runs"].items():
        for r in reps:
            print(f"{kind:9} rep {r['rep']}: {r['connected']}/{r['devices']} in, all after {r['all_connected_s']} s, "
                  f"half after {r['half_connected_s']} s, retries {r['retries']} {r['retry_reasons']}, "
                  f"cpu {r.get('cpu_s')}")
    print(f"registry/passwd (time until all are in): {out['registry_over_passwd']}  "
          f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
