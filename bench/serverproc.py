"""Child process that runs one server under test, so the load generator does not share its GIL.

    python -m bench.serverproc ours  --db PATH --port N   # EmbeddedServer (registry plugins + amqtt fixes)
    python -m bench.serverproc stock --port N             # amqtt 0.12.1 as shipped, AnonymousAuthPlugin only
    python -m bench.serverproc unfixed --db PATH --port N # registry plugins on stock amqtt (amqtt_fixes=False)

Prints ``READY <port>`` on stdout once listening; stops on SIGTERM/SIGINT.

Benchmark configuration of *ours*: the per-peer flood limit (30 new requests per minute per peer address) and
the pending cap are lifted, because every simulated device comes from 127.0.0.1. Everything else is the
production code path, including ``serve``'s GC tuning (``tune_gc``); ``serve`` differs only in also starting
the HTTP API, which no benchmark here uses. *stock* runs with Python's default GC settings, as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_ours(db: str, port: int, fixes: bool = True) -> None:
    from broker.server import EmbeddedServer, tune_gc
    from store import open_registry
    from store.registry import RegistryConfig

    tune_gc()  # as `client-registry serve` does (serve_main)
    reg = open_registry(db, config=RegistryConfig(per_peer_per_minute=10**9, max_pending=10**7))
    try:
        async with EmbeddedServer(reg, mqtt_bind=f"127.0.0.1:{port}", http_bind=None, log=None,
                                  amqtt_fixes=fixes) as srv:
            print(f"READY {srv.mqtt_port}", flush=True)
            await _wait_for_signal()
    finally:
        reg.close()


async def run_stock(port: int) -> None:
    from amqtt.broker import Broker

    from broker.server import silence_amqtt_logging

    silence_amqtt_logging()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    print(f"READY {port}", flush=True)
    try:
        await _wait_for_signal()
    finally:
        await broker.shutdown()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("ours", "stock", "unfixed"))
    p.add_argument("--db")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    if a.kind in ("ours", "unfixed"):
        asyncio.run(run_ours(a.db, a.port, fixes=a.kind == "ours"))
    else:
        asyncio.run(run_stock(a.port))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
