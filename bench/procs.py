"""Start, measure and stop the servers under test: ours, stock amqtt, Debian's Mosquitto."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ours", "stock", "mosquitto")
LABELS = {"ours": "client-registry", "stock": "amqtt 0.12.1 (stock)", "mosquitto": "Mosquitto",
          "unfixed": "registry plugins on stock amqtt (no fixes)"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mosquitto() -> str | None:
    """Path of the mosquitto binary; installs Debian's packages (as root) when missing. None if impossible."""
    found = shutil.which("mosquitto") or (os.path.exists("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto")
    if found and shutil.which("mosquitto_passwd"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "mosquitto", "mosquitto-clients"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    found = shutil.which("mosquitto") or (os.path.exists("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto")
    return found if found and shutil.which("mosquitto_passwd") else None


def mosquitto_version() -> str:
    exe = ensure_mosquitto()
    if not exe:
        return "not installed"
    out = subprocess.run([exe, "-h"], capture_output=True, text=True).stdout
    return out.splitlines()[0].replace("mosquitto version ", "") if out else "?"


class Server:
    """One server under test in its own process. ``users`` are (name, password) pairs it must accept."""

    def __init__(self, kind: str, workdir: Path, db: str | None = None) -> None:
        self.kind = kind
        self.workdir = workdir
        self.db = db
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    # -- mosquitto needs its password file written before it starts
    def write_mosquitto_users(self, users: list[tuple[str, str]]) -> None:
        pw = self.workdir / "mosquitto.passwd"
        pw.write_text("".join(f"{u}:{p}\n" for u, p in users))
        subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
        os.chmod(pw, 0o644)

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
                f"password_file {self.workdir / 'mosquitto.passwd'}\npersistence false\n"
                "log_dest none\nmax_connections -1\nmax_keepalive 65535\nuser root\n")
            return [ensure_mosquitto() or "mosquitto", "-c", str(conf)]
        cmd = [sys.executable, "-m", "bench.serverproc", self.kind, "--port", str(self.port)]
        if self.kind in ("ours", "unfixed"):
            cmd += ["--db", str(self.db)]
        return cmd

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(self._command(), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        if self.kind != "mosquitto":
            line = self.proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"{self.kind} server did not start (exit {self.proc.poll()})")
        while time.monotonic() < deadline:  # listening?
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}")
                time.sleep(0.02)
        else:
            raise RuntimeError(f"{self.kind} server not listening after {timeout} s")
        self.started_at = time.monotonic()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- measurements from /proc
    def _status(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> int:
        """Resident set size in bytes."""
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        """Peak resident set size (VmHWM) in bytes since the process started."""
        return self._status("VmHWM")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_TEMPDIRS: list[Path] = []


def tempdir(prefix: str) -> Path:
    """A scratch folder (databases, password files) removed when the bench process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    if not _TEMPDIRS:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _TEMPDIRS])
    _TEMPDIRS.append(path)
    return path
