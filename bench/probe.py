"""The unrelated client: a granted device that publishes to itself every 2 ms and times each round trip.

It runs in its own process (``Probe`` starts it), so that whatever the bench process does meanwhile (grants
through the store, a load generator) never delays its clock or its socket: what it sees is the broker's
latency (and the machine's: the noise floor is measured the same way with nothing else going on).

One connection (MQTT 3.1.1, keepalive 60 s), subscribed at QoS 0 to ``probe/<user>/rtt``; every
``interval`` it publishes at QoS 0 to that topic an 8-byte sequence number and notes the time (CLOCK_MONOTONIC:
the same clock as the bench process's ``time.monotonic()``). A tick missed because the probe itself was not
scheduled is skipped, not sent late in a burst (the skipped ticks are counted). Ends when a line arrives on
stdin or after ``--max-s``; then prints one JSON line: ``samples`` = [[sent_at, rtt or null], ...] (null: no
answer by the end, after a grace of ``--grace-s``), ``skipped``, ``errors``.

Mosquitto 2.0.11 leaves Nagle's algorithm on for its clients (``set_tcp_nodelay false``), so an echo written
while the previous one is not yet acknowledged waits for that ACK; with the receiver's delayed ACK riding on
its next publish, the probe would settle into a steady 2 ms (one interval) of round trip that no broker work
explains (seen: p50 0.1 ms in one run, 2.0 ms in the next, on the same idle broker). The probe therefore ACKs
at once (``TCP_QUICKACK`` after every read), like a client with data to send would, so that what remains is
the broker's own latency.

    python -m bench.probe --port N --user U --password P [--interval 0.002] [--max-s 900]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

from .mqtt import CONNACK, PUBLISH, SUBACK, connect_packet, packet, parse_publish, split_packets, subscribe_packet

now = time.monotonic
QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def _publish(topic: str, payload: bytes) -> bytes:
    return packet(PUBLISH, struct.pack("!H", len(topic.encode())) + topic.encode() + payload)


def run(port: int, user: str, password: str, interval: float, max_s: float, grace_s: float) -> dict:
    topic = f"probe/{user}/rtt"
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()

    def read_one() -> tuple[int, bytes]:
        while True:
            got = split_packets(buf)
            if got:
                return got[0]
            data = s.recv(65536)
            if not data:
                raise RuntimeError("probe: connection closed during set-up")
            buf.extend(data)

    s.sendall(connect_packet(f"probe-{os.getpid()}", user, password, keepalive=60))
    head, body = read_one()
    if head != CONNACK or body[1] != 0:
        raise RuntimeError(f"probe refused (CONNACK {body!r})")
    s.sendall(subscribe_packet(topic, qos=0))
    head, body = read_one()
    if head != SUBACK or body[-1] == 0x80:
        raise RuntimeError(f"probe: subscription to {topic} refused")
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    print("ready", flush=True)

    sent: list[float] = []
    rtt: list[float | None] = []
    skipped = errors = 0
    t0 = now()
    deadline = t0 + max_s
    next_at = t0
    stop_at: float | None = None
    stdin = sys.stdin.fileno()
    watch = [s, stdin]
    while True:
        t = now()
        if stop_at is None and t >= deadline:
            stop_at = t
        if stop_at is not None and (t >= stop_at + grace_s or all(r is not None for r in rtt[-200:])):
            break
        if stop_at is None and t >= next_at:
            missed = int((t - next_at) / interval)
            skipped += missed
            next_at += (missed + 1) * interval
            try:
                s.send(_publish(topic, struct.pack("!Q", len(sent))))
                sent.append(t)
                rtt.append(None)
            except BlockingIOError:
                skipped += 1
            except OSError:
                errors += 1
                break
        wait = max(0.0, (next_at if stop_at is None else t + 0.01) - now())
        readable, _, _ = select.select(watch, [], [], wait)
        if stdin in readable:
            os.read(stdin, 4096)
            watch.remove(stdin)
            stop_at = now()
        if s in readable:
            try:
                data = s.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                errors += 1
                break
            t = now()
            s.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)  # Linux clears it again: set after every read
            buf.extend(data)
            for head, body in split_packets(buf):
                if head >> 4 == PUBLISH:
                    _, payload, _ = parse_publish(head, body)
                    (seq,) = struct.unpack("!Q", payload[:8])
                    if seq < len(rtt) and rtt[seq] is None:
                        rtt[seq] = t - sent[seq]
    with contextlib.suppress(OSError):
        s.send(b"\xe0\x00")
    s.close()
    return {"samples": [[a, b] for a, b in zip(sent, rtt, strict=False)], "skipped": skipped, "errors": errors,
            "interval": interval}


class Probe:
    """The probe as a child process: ``start()`` returns once it is subscribed, ``stop()`` its result."""

    def __init__(self, port: int, user: str, password: str, interval: float = 0.002, max_s: float = 900.0,
                 grace_s: float = 5.0) -> None:
        self.args = [sys.executable, "-m", "bench.probe", "--port", str(port), "--user", user, "--password",
                     password, "--interval", str(interval), "--max-s", str(max_s), "--grace-s", str(grace_s)]
        self.proc: subprocess.Popen | None = None
        self.result: dict | None = None

    def start(self, timeout: float = 30.0) -> Probe:
        from .procs import ROOT

        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"probe did not start: {line!r} {self.proc.stderr.read()[-500:]}")
        return self

    def stop(self, timeout: float = 60.0) -> dict:
        if self.result is not None or self.proc is None:
            return self.result or {}
        try:
            out, err = self.proc.communicate("stop\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        line = out.strip().splitlines()[-1] if out.strip() else ""
        if not line.startswith("{"):
            raise RuntimeError(f"probe failed: {err.strip()[-500:]}")
        self.result = json.loads(line)
        return self.result

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None and self.result is None:
            try:
                self.stop()
            except Exception:
                self.proc.kill()


def window(result: dict, start: float, end: float) -> dict:
    """Round trips of the probes sent in [start, end) (monotonic seconds): p50/p99/max in ms, and how many
    got no answer at all."""
    from .common import percentile

    got = [r for t, r in result.get("samples", []) if start <= t < end]
    ms = [1000 * r for r in got if r is not None]
    return {"n": len(got), "lost": sum(1 for r in got if r is None), "p50_ms": percentile(ms, 0.5),
            "p99_ms": percentile(ms, 0.99), "max_ms": max(ms) if ms else None}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--interval", type=float, default=0.002)
    p.add_argument("--max-s", type=float, default=900.0)
    p.add_argument("--grace-s", type=float, default=5.0)
    a = p.parse_args()
    print(json.dumps(run(a.port, a.user, a.password, a.interval, a.max_s, a.grace_s)), flush=True)


if __name__ == "__main__":
    main()
