"""Who else uses the embedded broker: counted from the kernel's socket table, because the broker will not say.

Mosquitto 2.0.11 publishes ``$SYS/broker/clients/connected``, but the console account cannot read it: dynamic
security's admin ACL ``#`` does not match ``$``-topics, so the SUBACK is granted and nothing is ever delivered
(tried: nothing in 13 s with the default ``sys_interval`` of 10 s). The broker runs on this machine when it is
embedded, so the dashboard reads ``/proc/net/tcp`` and ``/proc/net/tcp6`` instead: every established connection
whose local port is the broker's is one MQTT session (or a client still connecting); the ones whose other end is
a socket of this very process (the dashboard's listener, the embedded service's own link) are not "others".
"""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED = "01"


def _sockets(proc: Path = Path("/proc/net")) -> list[tuple[str, str, str]]:
    """(local "addr:port", remote "addr:port", inode) of every established TCP socket, in /proc's hex form."""
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == ESTABLISHED:
                rows.append((fields[1], fields[2], fields[9]))
    return rows


def _own_inodes() -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def other_sessions(port: int, proc: Path = Path("/proc/net")) -> int | None:
    """Connections to the broker on ``port`` that are not this process's own; None when /proc cannot say."""
    if not (proc / "tcp").exists():
        return None
    rows = _sockets(proc)
    hex_port = f"{port:04X}"
    mine = _own_inodes()
    own_ends = {local for local, _remote, inode in rows if inode in mine}
    return sum(1 for local, remote, _inode in rows
               if local.rsplit(":", 1)[1] == hex_port and remote not in own_ends)
