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


def describe() -> dict:
    return {
        "cores": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gib": round(_mem_gib(), 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "versions": {n: _ver(n) for n in ("client-registry", "amqtt", "textual", "peewee", "argon2-cffi",
                                          "paho-mqtt")} | {"mosquitto": procs.mosquitto_version()},
    }
