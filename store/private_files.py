"""Files only their owner may read (the server secret, console and service credentials, Mosquitto's
configuration), written one way: atomically and never readable by anyone else, not even for a moment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE = 0o600


def write_private(path: Path | str, content: str | bytes, *, replace: bool = True) -> bool:
    """Write ``content`` to ``path``, mode 0600. A new temporary file beside it is created 0600 from the
    start (``O_CREAT | O_EXCL``: never someone else's file or link; the umask can only narrow that mode, and
    ``fchmod`` makes it exactly 0600 before a byte is written), written, fsynced and renamed over ``path``:
    a reader sees the old whole file or the new whole file, and one holding the old file open never sees the
    new content. With ``replace=False`` an existing ``path`` wins (a racing process created it first): nothing
    is written and the result is False."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL, 0600
    placed = False
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE)
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
