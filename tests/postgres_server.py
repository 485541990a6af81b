"""A throw-away PostgreSQL server on 127.0.0.1 for tests: Debian's postgresql binaries, a temporary cluster."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from contextlib import contextmanager

from bench.procs import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: apt-get install postgresql")
    return found[-1]


@contextmanager
def postgres_server(folder: str):
    """Yield a postgresql:// URL for a fresh database; the cluster is stopped and removed afterwards."""
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = os.path.join(folder, "pgdata")
    os.makedirs(data)
    if as_root:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    subprocess.run([*run_as, _bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres"], **quiet)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*run_as, _bin("pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(folder, "log"),
                    "-w", "start"], **quiet)
    try:
        subprocess.run([*run_as, _bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "registry"], **quiet)
        yield f"postgresql://postgres@127.0.0.1:{port}/registry"
    finally:
        subprocess.run([*run_as, _bin("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)
