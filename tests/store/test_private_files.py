"""Private files (server secret, console and service credentials, Mosquitto's configuration) are 0600 from the
moment they exist, replaced whole, and never leave a temporary file behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

from store.private_files import write_private

# Watches the folder at every audit event of the write (the temporary file's creation, its chmod, the rename),
# under the most permissive umask: a file that was ever readable by others would show here.
WATCH = r"""
import json, os, stat, sys
from pathlib import Path
from store.private_files import write_private

folder, seen, busy = Path(sys.argv[1]), [], False

def hook(event, args):
    global busy
    if busy or not event.startswith("os."):
        return
    busy = True
    try:
        seen.extend([event, p.name, stat.S_IMODE(p.lstat().st_mode)] for p in folder.iterdir())
    finally:
        busy = False

os.umask(int(sys.argv[2], 8))
sys.addaudithook(hook)
write_private(folder / "registry.secret", "s3cret\n")
print(json.dumps(seen))
"""


def watched_write(folder, umask: str) -> list:
    out = subprocess.run([sys.executable, "-c", WATCH, str(folder), umask], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return json.loads(out)


def test_private_from_creation_whatever_the_umask(tmp_path):
    for umask in ("000", "277"):  # everything allowed; even the owner's write bit masked
        folder = tmp_path / umask
        folder.mkdir()
        seen = watched_write(folder, umask)
        temporary = [mode for _, name, mode in seen if name.endswith(".tmp")]
        assert temporary, "the watch saw the temporary file"
        assert all(mode & 0o077 == 0 for _, _, mode in seen), seen  # nobody else, at any moment
        assert temporary[0] == (0o600 if umask == "000" else 0o400), seen  # as created, before the fchmod
        assert stat.S_IMODE((folder / "registry.secret").stat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["registry.secret"]


def test_replacing_never_shows_the_new_content_through_the_old_file(tmp_path):
    path = tmp_path / "registry.console.credentials"
    path.write_text("old\n")
    path.chmod(0o644)  # e.g. restored from a backup with the wrong mode
    with open(path) as reader:  # opened while it was readable by others
        write_private(path, "new-password\n")
        assert reader.read() == "old\n"  # a new file was renamed into place; the old one was not rewritten
    assert path.read_text() == "new-password\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_create_only_leaves_the_first_writer(tmp_path):
    path = tmp_path / "registry.secret"
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append((write_private(path, f"{i}\n", replace=False), i)))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for won, i in results if won]
    assert len(winners) == 1 and path.read_text() == f"{winners[0]}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert write_private(path, "later\n", replace=False) is False and path.read_text() == f"{winners[0]}\n"
    assert os.stat(path).st_nlink == 1


def test_a_group_may_read_what_mosquitto_needs(tmp_path):
    """The accounts snapshot and the TLS files Mosquitto reads as its own user: 0640, that group's."""
    path = tmp_path / "registry.accounts.snapshot"
    write_private(path, b"snapshot", group=os.getgid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.stat().st_gid == os.getgid()
    write_private(path, b"again")  # without a group: back to the owner's alone
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
