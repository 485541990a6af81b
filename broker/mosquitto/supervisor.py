"""Mosquitto as a supervised child process: started with the generated configuration, its output logged
with a prefix, restarted with backoff when it dies, stopped with the service."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from store.device_text import escaped

log = logging.getLogger(__name__)

MIN_VERSION = (2, 0)
READY_TIMEOUT = 10.0
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def pid_file_of(conf: Path) -> Path:
    """Where the service writes the pid of the Mosquitto it runs on ``conf``."""
    return conf.with_suffix(".pid")


def running_mosquitto(conf: Path) -> int | None:
    """The pid of a Mosquitto running on ``conf`` (a service's, or one it left running), from the pid file
    beside it; None when there is none."""
    try:
        pid = int(pid_file_of(conf).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(conf).encode() in cmdline else None


class MosquittoError(Exception):
    """Mosquitto cannot be found or started; str() is one line for the operator."""


def find_mosquitto(explicit: str | None = None) -> str:
    path = explicit or shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None)
    if not path or not Path(path).is_file():
        where = explicit or "PATH, /usr/sbin"
        raise MosquittoError(f"mosquitto not found in {where} (apt-get install mosquitto, or --mosquitto PATH)")
    return path


def mosquitto_version(path: str) -> str:
    """"2.0.11" from `mosquitto -h`; MosquittoError when older than 2.0 or not Mosquitto at all."""
    try:
        out = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MosquittoError(f"cannot run {path}: {exc}") from None
    match = re.search(r"mosquitto version (\d+)\.(\d+)\.?(\d*)", out.stdout + out.stderr)
    if not match:
        raise MosquittoError(f"{path} does not look like Mosquitto (no version in `{path} -h`)")
    version = tuple(int(x) for x in match.groups() if x)
    if version[:2] < MIN_VERSION:
        raise MosquittoError(f"{path} is Mosquitto {'.'.join(map(str, version))}; 2.0 or newer is needed "
                             "(dynamic security)")
    return ".".join(map(str, version))


DIE_WITH_PARENT = Path(__file__).with_name("die_with_parent.py")


def command(binary: str, conf: Path, *, outlive: bool) -> list[str]:
    """Mosquitto's command line; without ``outlive``, through the die-with-parent exec wrapper."""
    argv = [binary, "-c", str(conf)]
    if outlive:
        return argv
    return [sys.executable, "-I", "-S", str(DIE_WITH_PARENT), str(os.getpid()), *argv]


def port_answers(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def raise_open_files(wanted: int) -> None:
    """Raise this process's soft open-files limit towards ``wanted`` (never above the hard one): Mosquitto,
    started from here, inherits it and needs a descriptor per connection, whatever its max_connections says."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        # If refused, Mosquitto refuses connections beyond the current limit.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


LINE_MAX = 64 * 1024  # output lines are cut here (Mosquitto's own are at most 999 bytes)
SAID_WAIT = 5.0  # seconds `said` waits for a line Mosquitto wrote before the refusal being explained
PUMP_EVERY = 0.05  # seconds between two looks of the event loop at what the reader thread kept
PIPE_SIZE = 1 << 20  # what the output pipe holds while the reader thread waits for the GIL
BUFFER_BYTES = 4 << 20  # what the reader thread keeps for the loop; beyond, lines are dropped and counted


class LineSplitter:
    """Bytes in, lines out (without their ``\n``; split on ``\n`` only). A line longer than LINE_MAX is cut to
    it and the rest of it dropped, never taken for a line of its own."""

    def __init__(self) -> None:
        self.pending = b""
        self.skipping = False

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        out = []
        for line in lines:
            if self.skipping:  # the end of a line already cut
                self.skipping = False
                continue
            out.append(line[:LINE_MAX])
        if len(self.pending) > LINE_MAX:
            if not self.skipping:
                out.append(self.pending[:LINE_MAX])
            self.skipping = True
            self.pending = b""
        return out

    def close(self) -> list[bytes]:
        rest, self.pending = self.pending, b""
        return [rest] if rest and not self.skipping else []


class OutputBuffer:
    """Mosquitto's output lines between the reader thread (``put``, never waits) and the event loop (``take``):
    at most ``limit`` bytes are kept, the lines that do not fit are dropped and counted, so a stalled loop
    never makes Mosquitto wait on its log writes, whatever it writes for every client."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = BUFFER_BYTES if limit is None else limit
        self._lines: deque[bytes] = deque()
        self._size = 0
        self._dropped = 0
        self._ended = False
        self._lock = threading.Lock()

    def put(self, line: bytes) -> None:
        with self._lock:
            if self._size + len(line) > self.limit:
                self._dropped += 1
                return
            self._lines.append(line)
            self._size += len(line)

    def end(self) -> None:
        with self._lock:
            self._ended = True

    def take(self) -> tuple[list[bytes], int, bool]:
        """The lines kept since the last take, how many were dropped meanwhile, and whether the output ended."""
        with self._lock:
            lines, self._lines, self._size = list(self._lines), deque(), 0
            dropped, self._dropped = self._dropped, 0
            return lines, dropped, self._ended


def _read_output(fd: int, buffer: OutputBuffer) -> None:
    """The reader thread: Mosquitto's output read as soon as it is written, until it exits."""
    splitter = LineSplitter()
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            for line in splitter.feed(chunk) if chunk else splitter.close():
                buffer.put(line)
            if not chunk:
                return
    finally:
        os.close(fd)
        buffer.end()


class MosquittoSupervisor:
    """``await start()`` returns once Mosquitto accepts connections on ``(host, port)`` (or raises
    MosquittoError with its own words); afterwards it is restarted whenever it exits, with backoff, until
    ``await stop()``. ``state`` is "running", "restarting" or "stopped"; ``on_state`` hears every change."""

    def __init__(self, binary: str, conf: Path, host: str, port: int,
                 on_state: Callable[[str], None] | None = None, *, outlive: bool = True,
                 on_line: Callable[[bytes], bool] | None = None, on_spawn: Callable[[], None] | None = None) -> None:
        self.binary = binary
        self.conf = conf
        self.host = host
        self.port = port
        self.on_state = on_state or (lambda state: None)
        self.on_line = on_line or (lambda line: False)  # sees every output line first; True: do not log it
        self.on_spawn = on_spawn or (lambda: None)  # a new Mosquitto: the old one's sessions are gone
        self.outlive = outlive
        self.state = "stopped"
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._tail: deque[str] = deque(maxlen=20)
        self._task: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()  # loggers of its output (one per spawn)
        self.dropped_lines = 0  # output lines dropped while the event loop could not keep up (logged too)
        self._stopping = False

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.on_state(state)

    @property
    def pid_file(self) -> Path:
        return pid_file_of(self.conf)

    async def end_orphan(self) -> None:
        """A Mosquitto left running by a service that was killed (it kept serving the fleet meanwhile) is
        stopped before a new one starts on the same configuration."""
        pid = running_mosquitto(self.conf)
        if pid is None:
            return
        log.info(f"mosquitto: stopping the one left running by an earlier service (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._tail.clear()
        self.on_spawn()
        # Its own session: a Ctrl-C meant for the dashboard does not reach it. With ``outlive`` (serve) it
        # outlives a service killed with SIGKILL, so the fleet keeps working until the service is back;
        # without (a dashboard that embeds it), it ends with its parent, e.g. when the terminal is closed.
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # a lower limit on this machine: the default 64 KiB
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command(self.binary, self.conf, outlive=self.outlive), stdin=subprocess.DEVNULL,
                stdout=write_end, stderr=subprocess.STDOUT, start_new_session=True,
                umask=0o077)  # its files private (dynsec); set in the child, not in this process
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{proc.pid}\n")
        buffer = OutputBuffer()
        threading.Thread(target=_read_output, args=(read_end, buffer), name="mosquitto-output",
                         daemon=True).start()
        pump = asyncio.create_task(self._pump(buffer), name="mosquitto-output")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return proc

    async def _pump(self, buffer: OutputBuffer) -> None:
        """What the reader thread kept, logged every PUMP_EVERY s rather than at every line: a wake-up of the
        loop per line cost ~40 µs, most of the service's CPU in a reconnect storm (20,000 connection notices)."""
        while True:
            lines, dropped, ended = buffer.take()
            for line in lines:
                self._line(line)
            if dropped:
                self.dropped_lines += dropped
                log.warning(f"mosquitto: {dropped} output line(s) dropped: the service was too busy to log them "
                         f"({self.dropped_lines} in all)")
            if ended:
                return
            await asyncio.sleep(PUMP_EVERY)

    def _line(self, line: bytes) -> None:
        if self.on_line(line):
            return
        text = escaped(line.rstrip())  # it copies device text (client ids) into its lines
        if text:
            self._tail.append(text)
            log.info(f"mosquitto: {text}")

    def last_line(self, containing: str) -> str | None:
        """The newest of its recent output lines holding ``containing`` (escaped, as logged)."""
        return next((line for line in reversed(self._tail) if containing in line), None)

    async def said(self, containing: str, within: float = SAID_WAIT) -> str | None:
        """``last_line`` once it has come: what Mosquitto wrote just before it refused us (its plugin's words
        at start) reaches the tail through the reader thread and the pump a moment later, later under load."""
        deadline = time.monotonic() + within
        while (line := self.last_line(containing)) is None and time.monotonic() < deadline:
            await asyncio.sleep(PUMP_EVERY)
        return line

    async def _ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            if await asyncio.to_thread(port_answers, self.host, self.port):
                return
            with contextlib.suppress(TimeoutError):  # still running: ask the port again
                await asyncio.wait_for(proc.wait(), 0.05)
        await asyncio.sleep(2 * PUMP_EVERY)  # let the last output lines arrive
        errors = [line for line in self._tail if "rror" in line] or list(self._tail)[-1:]
        reason = errors[-1] if errors else f"exit code {proc.returncode}"
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            reason = f"it did not listen on {self.host}:{self.port} within {READY_TIMEOUT:.0f} s"
        raise MosquittoError(f"mosquitto did not start: {reason.removeprefix('Error: ')}")

    async def start(self) -> None:
        await self.end_orphan()
        self.proc = await self._spawn()
        await self._ready(self.proc)
        self._set("running")
        self._task = asyncio.create_task(self._watch(), name="mosquitto-supervisor")

    async def _watch(self) -> None:
        attempt = 0
        up_since = time.monotonic()
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - up_since > 60:  # it was healthy for a while: start the backoff over
                attempt = 0
            self._set("restarting")
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            log.warning(f"mosquitto exited with code {code}; restarting in {delay:g} s")
            await asyncio.sleep(delay)
            try:
                self.proc = await self._spawn()
                await self._ready(self.proc)
            except MosquittoError as exc:
                log.error(str(exc))
                attempt += 1
                continue
            self.restarts += 1
            up_since = time.monotonic()
            attempt += 1
            self._set("running")

    def reload(self) -> bool:
        """SIGHUP: Mosquitto reloads its configuration (a TLS listener's ``crlfile`` among it). False when
        none is running (the next one reads the files as they are)."""
        proc = self.proc
        if proc is None or proc.returncode is not None or self.state != "running":
            return False
        try:
            os.kill(proc.pid, signal.SIGHUP)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        # Mosquitto has exited: its output ends, and the readers finish within PUMP_EVERY (its last lines are
        # logged); a loop that closes before they do would destroy them pending.
        pumps = list(self._pumps)
        if pumps:
            _, late = await asyncio.wait(pumps, timeout=1.0)
            for pump in late:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        self.pid_file.unlink(missing_ok=True)
        self._set("stopped")
