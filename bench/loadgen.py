"""The load generator: one process, one epoll loop, raw MQTT 3.1.1 packets on non-blocking sockets.

No asyncio and no MQTT library: each connection costs the generator a socket, a connect, one write and one read
and little Python around them, so that on a 2-core machine the servers, not the generator, get most of the CPU.
Its CPU use is measured over every phase (``Meter``) and printed next to each throughput.
The cyclic garbage collector is off while a phase runs (a collection would show up as server latency).

Drivers:
- ``closed_loop``: N attempts with C in flight (sequential: C = 1), latency = socket opened -> CONNACK read;
- ``storm``: N devices start at once, keep their connection, retry after 0.5-1 s when refused or timed out;
- ``open_loop``: attempt i starts at t0 + i/rate whatever happened to the others (new devices arriving);
- ``Subscriber``: a persistent connection that timestamps each PUBLISH it receives.

Stand-alone (the dashboard benchmark's flood, in its own process):

    python -m bench.loadgen --port N --rate 500 --seconds 10 --prefix flood --block 200
prints one JSON line with what it sent and the CONNACK codes seen.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import heapq
import itertools
import json
import os
import random
import resource
import select
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable

from .mqtt import CONNACK, DISCONNECT, PUBLISH, SUBACK, connect_packet, parse_publish, split_packets, subscribe_packet

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
now = time.perf_counter

CONNECTING, WAITING, HELD, CLOSED = range(4)


def raise_fd_limit(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE for this process and the servers it starts (they inherit it); returns the soft
    limit now in force. As root the hard limit is raised too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want if hard == resource.RLIM_INFINITY else max(hard, want))
    for limits in ((target, target), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source_addresses(block: int, count: int) -> list[str]:
    """``count`` loopback source addresses 127.<block>.x.y (host parts 1-254), one per simulated site."""
    out = []
    for x in range(256):
        for y in range(1, 255):
            if len(out) == count:
                return out
            out.append(f"127.{block}.{x}.{y}")
    return out


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall time and CPU over a phase: the generator's own and each watched process's (by pid)."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = {k: v for k, v in (pids or {}).items() if v}
        self.wall = 0.0
        self.cpu: dict[str, float] = {}

    def __enter__(self) -> Meter:
        self._gc = gc.isenabled()
        gc.disable()
        self._cpu0 = {name: cpu_of(pid) for name, pid in self.pids.items()}
        self._self0 = self_cpu()
        self._t0 = now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = now() - self._t0
        self.cpu = {name: cpu_of(pid) - self._cpu0[name] for name, pid in self.pids.items()}
        self.cpu["loadgen"] = self_cpu() - self._self0
        if self._gc:
            gc.enable()

    def pct(self, name: str) -> float:
        """CPU of ``name`` as a percentage of one core over the phase."""
        return 100.0 * self.cpu.get(name, 0.0) / self.wall if self.wall else 0.0

    def summary(self) -> dict:
        return {"wall_s": self.wall, "cpu_pct": {name: self.pct(name) for name in self.cpu},
                "cpu_s": dict(self.cpu)}


class Engine:
    """The epoll loop. Handlers are objects with ``event(mask)``, keyed by file descriptor."""

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.ep = select.epoll()
        self.handlers: dict[int, object] = {}
        self.inflight: set[Attempt] = set()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.soon: list[Callable[[], None]] = []
        self._seq = itertools.count()
        self.next_due = float("inf")  # the open-loop scheduler's next start
        self.tick: Callable[[], None] | None = None

    def later(self, fn: Callable[[], None]) -> None:
        self.soon.append(fn)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self._seq), fn))

    def expire(self, timeout: float) -> None:
        cutoff = now() - timeout
        for a in [a for a in self.inflight if a.t_start < cutoff]:
            a.fail("timeout")

    def run(self, until: Callable[[], bool], deadline: float, timeout: float = 10.0) -> bool:
        """Serve events until ``until()`` is true (True) or ``deadline`` (perf_counter time) passes (False)."""
        poll = self.ep.poll
        handlers = self.handlers
        next_expiry = now() + 0.25
        while True:
            while self.soon:
                batch, self.soon = self.soon, []
                for fn in batch:
                    fn()
            if self.tick is not None:
                self.tick()
            if until():
                return True
            t = now()
            if t >= deadline:
                return False
            while self.timers and self.timers[0][0] <= t:
                heapq.heappop(self.timers)[2]()
            wake = min(deadline, self.next_due, next_expiry, self.timers[0][0] if self.timers else deadline)
            for fd, mask in poll(max(0.0, min(wake - t, 0.05)), 4096):
                h = handlers.get(fd)
                if h is not None:
                    h.event(mask)
            if t >= next_expiry:
                self.expire(timeout)
                next_expiry = t + 0.25

    def close(self) -> None:
        self.ep.close()


class Attempt:
    """One device's CONNECT: open a socket (from ``source``), write CONNECT, read CONNACK. ``rc`` is the
    CONNACK return code, None when none arrived (``error`` says why). With ``keep`` an accepted connection
    stays open (``close()`` ends it); ``on_drop`` hears when the server closes a kept connection."""

    __slots__ = (
        "buf",
        "engine",
        "error",
        "fd",
        "keep",
        "key",
        "on_done",
        "on_drop",
        "packet",
        "rc",
        "sock",
        "source",
        "state",
        "t_done",
        "t_sent",
        "t_start",
    )

    def __init__(self, engine: Engine, packet: bytes, on_done: Callable[[Attempt], None], *,
                 source: str | None = None, keep: bool = False, key: object = None) -> None:
        self.engine = engine
        self.packet = packet
        self.on_done = on_done
        self.source = source
        self.keep = keep
        self.key = key
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.buf = b""
        self.t_start = self.t_sent = self.t_done = 0.0
        self.rc: int | None = None
        self.error: str | None = None
        self.on_drop: Callable[[Attempt], None] | None = None

    def start(self) -> None:
        e = self.engine
        self.t_start = now()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self.error = f"socket: {exc.strerror}"
            e.later(self._done)
            return
        self.sock = s
        try:
            if self.source:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((self.source, 0))
            err = s.connect_ex(e.addr)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err not in (0, errno.EINPROGRESS):
            self.error = f"connect: {os.strerror(err)}"
            s.close()
            e.later(self._done)
            return
        self.fd = s.fileno()
        e.handlers[self.fd] = self
        e.inflight.add(self)
        try:  # on loopback the handshake is usually complete by now: skip the wait for writability
            self._opened()
        except BlockingIOError:
            e.ep.register(self.fd, EPOLLOUT)
            return
        except OSError as exc:
            e.ep.register(self.fd, EPOLLOUT)
            self.fail(f"send: {exc.strerror}")
            return
        e.ep.register(self.fd, EPOLLIN)

    def _opened(self) -> None:
        """The TCP connection is open: send CONNECT (BlockingIOError: not writable yet)."""
        self.sock.send(self.packet)
        self.t_sent = now()
        self.state = WAITING

    def _received(self, data: bytes) -> bytes | None:
        """What the server's bytes carry of MQTT (TlsAttempt: once decrypted); None: nothing yet."""
        return data

    def event(self, mask: int) -> None:
        state = self.state
        if state == WAITING:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(f"recv: {exc.strerror}")
                return
            if not data:
                self.fail("closed before CONNACK")
                return
            try:
                data = self._received(data)
            except OSError as exc:  # (ssl.SSLError: a refused or broken handshake)
                self.fail(f"tls: {exc}")
                return
            if data is None:
                return
            buf = self.buf + data
            if len(buf) < 4:
                self.buf = buf
                return
            self.rc = buf[3] if buf[0] == CONNACK and buf[1] == 2 else -1
            self._finish()
        elif state == CONNECTING:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(f"connect: {os.strerror(err)}")
                return
            try:
                self._opened()
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(f"send: {exc.strerror}")
                return
            self.engine.ep.modify(self.fd, EPOLLIN)
        elif state == HELD:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close()
                if self.on_drop is not None:
                    self.on_drop(self)

    def _close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        e = self.engine
        e.inflight.discard(self)
        if e.handlers.get(self.fd) is self:
            del e.handlers[self.fd]
        if self.sock is not None:
            self.sock.close()  # also leaves the epoll set (the only reference to the file)

    def _done(self) -> None:
        self.t_done = now()
        self.on_done(self)

    def fail(self, reason: str) -> None:
        if self.state in (CLOSED, HELD):
            return
        self.error = reason
        self.rc = None
        self._close()
        self._done()

    def _finish(self) -> None:
        self.t_done = now()
        if self.keep and self.rc == 0:
            self.state = HELD
            self.engine.inflight.discard(self)
        else:
            if self.rc == 0:
                with contextlib.suppress(OSError):
                    self.sock.send(DISCONNECT)
            self._close()
        self.on_done(self)

    def close(self) -> None:
        """End a kept connection cleanly (DISCONNECT, close)."""
        if self.state == HELD:
            with contextlib.suppress(OSError):
                self.sock.send(DISCONNECT)
        self._close()


class TlsAttempt(Attempt):
    """The same CONNECT over TLS: the handshake (an ``ssl.SSLObject`` over memory buffers, so the epoll loop
    stays the only I/O), then CONNECT and CONNACK encrypted. ``t_sent`` is when the handshake ended. For
    storms (``keep``): a kept connection's later bytes (TLS 1.3 session tickets) are read and dropped, and
    ``close()`` just closes (the server sees it)."""

    __slots__ = ("bio_in", "bio_out", "tls", "unsent")

    def __init__(self, engine: Engine, packet: bytes, on_done: Callable[[Attempt], None], *,
                 context: ssl.SSLContext, **options) -> None:
        super().__init__(engine, packet, on_done, **options)
        assert self.keep, "TlsAttempt is for storms (kept connections)"
        self.bio_in, self.bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.bio_in, self.bio_out, server_hostname=engine.addr[0])
        self.unsent = b""

    def _flush(self) -> None:
        data = self.unsent + self.bio_out.read()
        if data:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:  # not connected yet: sent when the socket is writable (_opened again)
                self.unsent = data
                raise
            self.unsent = data[sent:]  # (a handshake's flight fits a loopback socket's buffer)

    def _opened(self) -> None:
        if not self._step():
            self.state = WAITING  # for the server's flight (t_sent still 0: the handshake goes on)

    def close(self) -> None:
        self._close()

    def _step(self) -> bool:
        """Advance the handshake; True once it is done and CONNECT is sent."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        self.tls.write(self.packet)
        self._flush()
        self.t_sent = now()
        self.state = WAITING
        return True

    def _received(self, data: bytes) -> bytes | None:
        self.bio_in.write(data)
        if self.t_sent == 0.0 and not self._step():
            return None
        try:
            return self.tls.read(4096) or None
        except ssl.SSLWantReadError:
            return None


class Subscriber:
    """A persistent client (blocking set-up, then driven by the engine) that timestamps each PUBLISH."""

    def __init__(self, engine: Engine, username: str, password: str, topic: str,
                 on_message: Callable[[float, str, bytes], None]) -> None:
        self.engine = engine
        self.on_message = on_message
        self.buf = bytearray()
        self.count = 0
        s = socket.create_connection(engine.addr, timeout=10)
        s.sendall(connect_packet(f"bench-sub-{os.getpid()}-{time.monotonic_ns()}", username, password,
                                 keepalive=0))
        head, body = self._read_one(s)
        if head != CONNACK or body[1] != 0:
            s.close()
            raise RuntimeError(f"subscriber refused (CONNACK {body!r})")
        s.sendall(subscribe_packet(topic, qos=0))
        head, body = self._read_one(s)
        if head != SUBACK or body[-1] == 0x80:
            s.close()
            raise RuntimeError(f"subscription to {topic} refused ({head:#x} {body!r})")
        s.setblocking(False)
        self.sock = s
        engine.handlers[s.fileno()] = self
        engine.ep.register(s.fileno(), EPOLLIN)

    def _read_one(self, s: socket.socket) -> tuple[int, bytes]:
        while True:
            packets = split_packets(self.buf)
            if packets:
                return packets[0]
            data = s.recv(65536)
            if not data:
                raise RuntimeError("subscriber: connection closed during set-up")
            self.buf += data

    def event(self, mask: int) -> None:
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        t = now()
        if not data:
            self.close()
            return
        self.buf += data
        for head, body in split_packets(self.buf):
            if head >> 4 == PUBLISH:
                topic, payload, pid = parse_publish(head, body)
                if pid:
                    self.sock.send(b"\x40\x02" + pid)
                self.count += 1
                self.on_message(t, topic, payload)

    def close(self) -> None:
        fd = self.sock.fileno()
        if fd >= 0:
            self.engine.handlers.pop(fd, None)
            with contextlib.suppress(OSError):
                self.sock.send(DISCONNECT)
            self.sock.close()


# -- drivers -----------------------------------------------------------------------------------------------
def closed_loop(engine: Engine, make: Callable[[int], tuple[bytes, str | None]], total: int, concurrency: int,
                *, limit_s: float, timeout: float = 10.0) -> dict:
    """``total`` attempts (``make(i)`` gives attempt i's packet and source address), ``concurrency`` in
    flight. Returns the CONNACK codes (or errors), the latencies (s) and whether it finished in time."""
    codes: Counter = Counter()
    latencies: list[float] = []
    started = finished = 0

    def launch() -> None:
        nonlocal started
        if started < total:
            i = started
            started += 1
            packet, source = make(i)
            Attempt(engine, packet, on_done, source=source).start()

    def on_done(a: Attempt) -> None:
        nonlocal finished
        finished += 1
        if a.rc is None:
            codes[a.error or "error"] += 1
        else:
            codes[a.rc] += 1
            latencies.append(a.t_done - a.t_start)
        launch()

    for _ in range(min(concurrency, total)):
        launch()
    complete = engine.run(lambda: finished >= total, now() + limit_s, timeout)
    return {"attempts": finished, "codes": {str(k): v for k, v in codes.items()}, "latencies": latencies,
            "complete": complete}


def storm(engine: Engine, items: list[tuple[bytes, str | None]], *, limit_s: float, timeout: float = 10.0,
          backoff: tuple[float, float] = (0.5, 1.0), attempt: Callable[..., Attempt] = Attempt) -> dict:
    """All devices start at once and keep their connection; a device refused or timed out retries after a
    random ``backoff``. Times are seconds since the start. ``attempt``: e.g. a TlsAttempt with its context."""
    t0 = now()
    connected_at: list[float] = []
    held: list[Attempt] = []
    retries = Counter()
    dropped = 0
    rnd = random.Random(1)

    def on_drop(a: Attempt) -> None:
        nonlocal dropped
        dropped += 1

    def start(i: int) -> None:
        packet, source = items[i]
        a = attempt(engine, packet, on_done, source=source, keep=True, key=i)
        a.on_drop = on_drop
        a.start()

    def on_done(a: Attempt) -> None:
        if a.rc == 0:
            connected_at.append(a.t_done - t0)
            held.append(a)
            return
        retries[str(a.rc) if a.rc is not None else (a.error or "error")] += 1
        engine.call_at(now() + rnd.uniform(*backoff), lambda i=a.key: start(i))

    for i in range(len(items)):
        start(i)
    launched = now() - t0
    engine.run(lambda: len(connected_at) >= len(items), t0 + limit_s, timeout)
    engine.timers.clear()
    for a in list(engine.inflight):
        a.fail("stopped")
    out = {"devices": len(items), "connected": len(connected_at), "retries": sum(retries.values()),
           "retry_reasons": dict(retries), "launch_s": launched, "connected_at": connected_at,
           "dropped_after_connect": dropped}
    for a in held:
        a.close()
    return out


def open_loop(engine: Engine, items: list[tuple[object, bytes, str | None]], rate: float, *,
              timeout: float = 30.0) -> dict:
    """Attempt i (key, packet, source) starts at t0 + i/rate. Returns, per key, when its CONNECT was
    written (perf_counter time) and its CONNACK code; the generator's lag behind the schedule."""
    n = len(items)
    sent: dict[object, float] = {}
    codes: Counter = Counter()
    lag: list[float] = []
    finished = 0
    t0 = now() + 0.01
    i = 0

    def on_done(a: Attempt) -> None:
        nonlocal finished
        finished += 1
        codes[a.rc if a.rc is not None else (a.error or "error")] += 1
        if a.t_sent:
            sent[a.key] = a.t_sent

    def tick() -> None:
        nonlocal i
        t = now()
        while i < n and t >= t0 + i / rate:
            key, packet, source = items[i]
            lag.append(t - (t0 + i / rate))
            Attempt(engine, packet, on_done, source=source, key=key).start()
            i += 1
        engine.next_due = t0 + i / rate if i < n else float("inf")

    engine.tick = tick
    try:
        engine.run(lambda: finished >= n, t0 + n / rate + timeout + 5, timeout)
    finally:
        engine.tick = None
        engine.next_due = float("inf")
    return {"sent": sent, "codes": {str(k): v for k, v in codes.items()}, "t0": t0,
            "send_s": (max(sent.values()) - t0) if sent else 0.0, "lag": lag}


def new_devices(prefix: str, count: int, block: int, per_address: int) -> list[tuple[str, bytes, str]]:
    """``count`` new devices (name, CONNECT, source address): name ``prefix-NNNNNN``, password ``pw-<name>``,
    at most ``per_address`` of them from each address 127.<block>.x.y."""
    sources = source_addresses(block, -(-count // per_address))
    out = []
    for i in range(count):
        name = f"{prefix}-{i:06d}"
        out.append((name, connect_packet(f"cid-{name}", name, "pw-" + name), sources[i // per_address]))
    return out


def flood(port: int, rate: int, seconds: float, prefix: str, block: int, per_address: int = 25) -> dict:
    engine = Engine("127.0.0.1", port)
    items = new_devices(prefix, int(rate * seconds), block, per_address)
    with Meter() as meter:
        r = open_loop(engine, items, rate)
    engine.close()
    return {"attempts": len(items), "send_s": r["send_s"], "total_s": meter.wall,
            "loadgen_cpu_pct": meter.pct("loadgen"), "connack_codes": r["codes"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--prefix", default="flood")
    p.add_argument("--block", type=int, default=200, help="source addresses 127.BLOCK.x.y")
    a = p.parse_args()
    raise_fd_limit()
    print(json.dumps(flood(a.port, a.rate, a.seconds, a.prefix, a.block)), flush=True)


if __name__ == "__main__":
    main()
