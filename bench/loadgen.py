"""Stand-alone open-loop load generator (its own process): new devices CONNECT at a set rate.

    python -m bench.loadgen --port N --rate 500 --seconds 10 --prefix flood
Prints one JSON line with what it sent and the CONNACK codes seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

from .b_pipeline import _attempt
from .common import Clock, raise_fd_limit


async def flood(port: int, rate: int, seconds: float, prefix: str) -> dict:
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    codes: Counter = Counter()
    tasks = []
    n = int(rate * seconds)
    with Clock() as clock:
        t0 = loop.time()
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"{prefix}-{i:06d}"
            tasks.append(asyncio.create_task(_attempt(port, name, "pw-" + name, sent, codes)))
        send_s = loop.time() - t0
        await asyncio.gather(*tasks)
    return {"attempts": n, "send_s": send_s, "total_s": clock.wall, "loadgen_cpu_pct": clock.loadgen_cpu_pct,
            "connack_codes": {str(k): v for k, v in codes.items()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--prefix", default="flood")
    a = p.parse_args()
    raise_fd_limit()
    print(json.dumps(asyncio.run(flood(a.port, a.rate, a.seconds, a.prefix))), flush=True)


if __name__ == "__main__":
    main()
