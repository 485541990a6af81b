"""Files only their owner (and, for some, Mosquitto's group) may read: the server secret, console and service
credentials, Mosquitto's configuration, the accounts snapshot, the TLS keys and certificates. Written one way:
atomically, and never readable by anyone else, not even for a moment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE = 0o600
GROUP_READABLE = 0o640  # for Mosquitto running as its own user (broker.mosquitto.privileges)


def write_private(path: Path | str, content: str | bytes, *, replace: bool = True, group: int | None = None) -> bool:
    """Write ``content`` to ``path``, mode 0600. A new temporary file beside it is created 0600 from the
    start (``O_CREAT | O_EXCL``: never someone else's file or link; the umask can only narrow that mode, and
    ``fchmod`` makes it exactly 0600 before a byte is written), written, fsynced and renamed over ``path``:
    a reader sees the old whole file or the new whole file, and one holding the old file open never sees the
    new content. With ``replace=False`` an existing ``path`` wins (a racing process created it first): nothing
    is written and the result is False. With ``group`` (a gid) the file is that group's, and 0640."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL, 0600
    placed = False
    try:
        with os.fdopen(fd, "wb") as handle:
            if group is not None:
                os.fchown(handle.fileno(), -1, group)  # the group first, then its read bit
            os.fchmod(handle.fileno(), PRIVATE if group is None else GROUP_READABLE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
            placed = True
        else:
            try:
                os.link(tmp, path)  # unlike a rename, never overwrites what a racing process put there
            except FileExistsError:
                return False
        _fsync_folder(path.parent)
        return True
    finally:
        if not placed:
            os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """The rename itself survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
