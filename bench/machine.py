"""Describe the machine and the software under test."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from . import procs


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _ver(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _sysctl(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _code() -> dict:
    """The commit measured, and the files changed since it outside bench/, tests/ and docs/."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=procs.ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith(("bench/", "tests/", "docs/"))]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "?", "uncommitted": changed}


def code_fingerprint() -> str:
    """A hash of the product's source (store/, broker/, tui/): compared at the start and the end of a run, it
    tells whether the code under test changed while it ran."""
    import hashlib

    digest = hashlib.sha256()
    for folder in ("store", "broker", "tui"):
        for path in sorted((procs.ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".c", ".tcss") and path.is_file():
                digest.update(str(path.relative_to(procs.ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def describe() -> dict:
    import sqlite3

    return {
        "cores": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gib": round(_mem_gib(), 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "versions": {n: _ver(n) for n in ("client-registry", "peewee", "paho-mqtt", "aiohttp", "textual")}
        | {"mosquitto": procs.mosquitto_version(), "sqlite": sqlite3.sqlite_version},
        "code": {**_code(), "fingerprint": code_fingerprint()},
        "sysctl": {"net.unix.max_dgram_qlen": _sysctl("/proc/sys/net/unix/max_dgram_qlen"),
                   "net.core.somaxconn": _sysctl("/proc/sys/net/core/somaxconn"),
                   "net.ipv4.tcp_tw_reuse": _sysctl("/proc/sys/net/ipv4/tcp_tw_reuse")},
    }
