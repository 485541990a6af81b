"""Who the supervised Mosquitto runs as. Started by root, Mosquitto 2.0.11 reads its configuration, then drops
to its ``user`` before it loads the registry plugin: as that user it loads the plugin's ``.so`` (a copy beside
the database: the build cache is in root's home), which reads the secret and the snapshot, reaches the plugin
socket (every report) and writes its persistence folder. Those files are handed to that user's group, never to
everyone."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_USER = "mosquitto"  # Debian's package creates it
AUTO = "auto"  # serve's default: DEFAULT_USER when running as root and it exists


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: frozenset[int]


def lookup(name: str) -> RunAs:
    """LookupError (one line) when there is no such user."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"no user named {name!r} (--mosquitto-user)") from None
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid)))


def default_user() -> str | None:
    """DEFAULT_USER when this process is root and that user exists; None: Mosquitto stays who runs serve."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DEFAULT_USER)
    except KeyError:
        return None
    return DEFAULT_USER


def blocked(user: RunAs, folder: Path) -> Path | None:
    """The first folder above ``folder`` that ``user`` may not enter, or None. ``folder`` itself is ours to
    open (hand_over)."""
    for parent in reversed(folder.resolve().parents):  # from / down
        st = parent.stat()
        bit = stat.S_IXUSR if st.st_uid == user.uid else stat.S_IXGRP if st.st_gid in user.groups else stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


def shared_copy(user: RunAs, source: Path, dest: Path) -> Path:
    """``source`` copied to ``dest`` (0640, ``user``'s group), replaced whole."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.chown(tmp, -1, user.gid)
        os.chmod(tmp, 0o640)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def hand_over(user: RunAs, *, folder: Path, readable: list[Path], writable_folder: Path | None) -> None:
    """Let ``user`` enter ``folder`` (0710: its group may open what it is given by name, not list it), read
    ``readable`` (0640, owner unchanged) and own ``writable_folder`` (Mosquitto's persistence, 0700)."""
    os.chown(folder, -1, user.gid)
    os.chmod(folder, 0o710)
    for path in readable:
        os.chown(path, -1, user.gid)
        os.chmod(path, 0o640)
    if writable_folder is not None:
        for path in [writable_folder, *writable_folder.iterdir()]:  # a root Mosquitto may have saved there
            os.chown(path, user.uid, user.gid)
