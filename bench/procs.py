"""The servers under test, each in its own processes, and what we read about them from /proc.

- ``passwd``: plain Mosquitto with a password file (``mosquitto_passwd -U``);
- ``dynsec``: plain Mosquitto with the stock dynamic-security plugin, holding the same devices as one client
  and one role each, the way the registry used to provision them (bench/dynsec_baseline.py);
- ``registry``: ``client-registry serve`` (the Python service) supervising Mosquitto with our registry plugin
  alone (it holds every account in memory: broker/mosquitto/plugin_protocol.md).

The plain ones run with the configuration ``serve`` would generate (``broker.mosquitto.config.render_conf``)
with the registry plugin's lines replaced by dynamic security's two (``plugin ...`` and
``plugin_opt_config_file``) or by ``password_file``, so log settings, persistence and the user are the same.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("passwd", "dynsec", "registry")
LABELS = {"passwd": "Mosquitto + password file", "dynsec": "Mosquitto + dynamic security",
          "registry": "client-registry serve"}
SHORT = {"passwd": "passwd", "dynsec": "dynsec", "registry": "registry"}
READY_LINE = "client-registry serving:"
_LIVE: list[Server] = []


_PORTS_FROM = 20000
_next_port: int | None = None


def _port_slice() -> tuple[int, int]:
    """This process's own ports: below the kernel's ephemeral range, split between pytest-xdist workers."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (ephemeral_low - _PORTS_FROM) // max(count, 1)
    first = _PORTS_FROM + int(worker or 0) * size
    return first, first + size


def free_port() -> int:
    """A 127.0.0.1 TCP port nothing listens on, for a server started next. Probing with bind(0) and releasing
    races with anything that binds in between; these ports come from below the ephemeral range, from a slice
    of this test worker's own (an outgoing connection or another worker never gets them), and two asked for
    in a row differ."""
    global _next_port
    first, end = _port_slice()
    if end - first < 100:  # an unusual ephemeral range: no room below it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    if _next_port is None or not first <= _next_port < end:
        _next_port = first + secrets.randbelow(end - first)  # a fresh run does not start on a stale server
    for _ in range(end - first):
        port, _next_port = _next_port, first + (_next_port + 1 - first) % (end - first)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{end - 1}")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, None unless Debian's mosquitto (with mosquitto_passwd) is installed: the
    README's install step puts it there (nothing here installs anything)."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    return exe if exe and shutil.which("mosquitto_passwd") else None


def mosquitto_version() -> str:
    exe = find_mosquitto()
    if not exe:
        return "not installed"
    out = subprocess.run([exe, "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].replace("mosquitto version ", "") if out else "?"


def client_registry_command() -> list[str]:
    script = Path(sys.executable).with_name("client-registry")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cli.main import main; sys.argv[0] = 'client-registry'; main()"]


def plain_conf(kind: str, port: int, workdir: Path, tls_port: int | None = None) -> str:
    """What ``serve`` would write (``render_conf``), with the registry plugin's lines replaced by dynamic
    security (``dynsec``) or a password file (``passwd``): same listener, log, persistence and user (and with
    ``tls_port`` the TLS listener ``serve --tls`` adds, on the tls init files in ``workdir``)."""
    from broker.mosquitto import config as mconf

    from . import dynsec_baseline

    fake = {"registry_plugin": Path("/bench/registry_plugin.so"), "secret": Path("/bench/registry.secret"),
            "snapshot": Path("/bench/registry.accounts.snapshot"), "socket": Path("/bench/registry.sock")}
    tls = {}
    if tls_port is not None:
        from broker.tls import TlsSettings

        tls = {"tls_listener": mconf.listener_line("127.0.0.1", tls_port),
               "tls_options": TlsSettings.of_database(str(workdir / "registry.db")).mosquitto_lines()}
    text = mconf.render_conf(listener=mconf.listener_line("127.0.0.1", port), user=mconf.current_user(),
                             persistence=workdir / "mosquitto-data", **fake, **tls)
    lines = text.splitlines()
    registry_lines = mconf.plugin_lines(fake["registry_plugin"], secret=fake["secret"],
                                        snapshot=fake["snapshot"], socket=fake["socket"])
    for line in registry_lines:
        if line not in lines:
            raise RuntimeError(f"render_conf changed: no line {line!r}; update bench/procs.py")
    at = lines.index(registry_lines[0])
    lines = [line for line in lines if line not in registry_lines]
    if kind == "passwd":
        ours = [f"password_file {workdir / 'mosquitto.passwd'}"]
    else:
        ours = dynsec_baseline.conf_lines(workdir / dynsec_baseline.FILE_NAME)
    lines[at:at] = ours
    if any("/bench/" in line for line in lines):
        raise RuntimeError("render_conf changed: a registry file is still named; update bench/procs.py")
    (workdir / "mosquitto-data").mkdir(mode=0o700, exist_ok=True)
    return "\n".join(lines) + "\n"


def _status(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss(pid: int | None) -> int:
    """Resident set size in bytes (0 for no process)."""
    return _status(pid, "VmRSS") if pid else 0


def peak_rss(pid: int | None) -> int:
    """Peak resident set size (VmHWM) in bytes since the process started."""
    return _status(pid, "VmHWM") if pid else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """One server under test, started from the files in ``workdir`` (see bench/state.py)."""

    def __init__(self, kind: str, workdir: Path, *, tls: bool = False) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.tls_port = free_port() if tls else None  # a TLS listener too, on the tls init files in workdir
        self.proc: subprocess.Popen | None = None
        self.pids: dict[str, int] = {}
        self.log_path = workdir / ("serve.log" if kind == "registry" else "mosquitto.log")
        self.spawned_at = 0.0
        self.listening_s: float | None = None  # spawn -> the MQTT port answers
        self.ready_s: float | None = None  # spawn -> ready (registry: the "serving" line)

    @property
    def db(self) -> Path:
        return self.workdir / "registry.db"

    def _command(self) -> list[str]:
        if self.kind == "registry":
            tls = ["--tls", "--mqtt-tls-bind", f"127.0.0.1:{self.tls_port}"] if self.tls_port else []
            return [*client_registry_command(), "--db", str(self.db), "serve", "--mqtt-bind",
                    f"127.0.0.1:{self.port}", "--http-bind", f"127.0.0.1:{free_port()}", *tls]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(plain_conf(self.kind, self.port, self.workdir, self.tls_port))
        return [find_mosquitto() or "mosquitto", "-c", str(conf)]

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self, timeout: float = 120.0, wait: str = "ready") -> Server:
        """Spawn and return once the MQTT port answers (``wait="listening"``) or the server is ready
        (``"ready"``: for ``registry``, the "serving" line, i.e. after its start-up reconcile)."""
        self.start_async()
        return self.wait_started(timeout, wait)

    def start_async(self) -> float:
        """Spawn and return at once (the monotonic time of the spawn); ``wait_started`` waits for it."""
        command = self._command()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.spawned_at = time.monotonic()
            self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        _LIVE.append(self)
        return self.spawned_at

    def wait_started(self, timeout: float = 120.0, wait: str = "ready") -> Server:
        """What ``start`` waits for, after ``start_async``; raises when the server exits or is late."""
        deadline = self.spawned_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_tail()}")
            if self.listening_s is None and self._answers():
                self.listening_s = time.monotonic() - self.spawned_at
            if self.listening_s is not None and (self.kind != "registry" or wait == "listening"):
                break
            if self.kind == "registry" and READY_LINE in self.log_text():
                if self.listening_s is None:
                    self.listening_s = time.monotonic() - self.spawned_at
                break
            time.sleep(0.005)
        else:
            self.stop()
            raise RuntimeError(f"{self.kind} not {wait} after {timeout:.0f} s: {self.log_tail()}")
        if self.kind == "registry":
            from .state import files

            pid_file = files(self.db).conf.with_suffix(".pid")  # MosquittoSupervisor.pid_file
            self.pids = {"mosquitto": self._written_pid(pid_file, deadline), "service": self.proc.pid}
            if wait == "ready":
                self.ready_s = time.monotonic() - self.spawned_at
        else:
            self.pids = {"mosquitto": self.proc.pid}
            self.ready_s = self.listening_s
        return self

    def _written_pid(self, pid_file: Path, deadline: float) -> int:
        """The service writes Mosquitto's pid just after spawning it: on a busy machine Mosquitto may already
        answer on its port before the file is there, or while it is still empty."""
        while True:
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{pid_file} not written: {self.log_tail()}") from None
                time.sleep(0.005)

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """For a registry started with ``wait="listening"``: wait for its "serving" line (False: it exited
        or did not get there in time)."""
        if self.ready_s is not None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            if READY_LINE in self.log_text():
                self.ready_s = time.monotonic() - self.spawned_at
                return True
            time.sleep(0.01)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and all(_alive(p) for p in self.pids.values())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def count_log(self, needle: str) -> int:
        return self.log_text().count(needle)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        child = self.pids.get("mosquitto")
        if self.kind == "registry" and child and _alive(child):  # serve normally stops it; never leave it
            os.kill(child, signal.SIGTERM)
            for _ in range(100):
                if not _alive(child):
                    break
                time.sleep(0.05)
            else:
                os.kill(child, signal.SIGKILL)
        self.proc = None
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- measurements
    def rss(self) -> dict[str, int]:
        return {name: rss(pid) for name, pid in self.pids.items()}

    def peak_rss(self) -> dict[str, int]:
        return {name: peak_rss(pid) for name, pid in self.pids.items()}


def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all)

_TEMPDIRS: list[Path] = []


def tempdir(prefix: str) -> Path:
    """A scratch folder removed when the bench process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    if not _TEMPDIRS:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _TEMPDIRS])
    _TEMPDIRS.append(path)
    return path


def copy_state(template: Path, label: str) -> Path:
    """A fresh copy of a prepared server folder (each start of a server gets its own)."""
    target = tempdir(label)
    shutil.copytree(template, target, dirs_exist_ok=True, symlinks=True,
                    ignore=shutil.ignore_patterns("*.log", "*.sock", "*.pid"))
    return target


def netstat_counters() -> dict[str, int]:
    """TcpExt ListenOverflows / ListenDrops: SYNs dropped because an accept queue was full."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}
