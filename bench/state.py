"""Server folders with N granted devices, written offline before any server starts.

Provisioning 100,000 devices through a running service would take long, so the state is written the way the
service itself would leave it:
- ``registry``: users in the registry database only (HMAC verifier under the database's server secret, no
  client id, no permissions): the registry plugin's accounts are built from the store by ``serve`` at every
  start (the snapshot it writes before Mosquitto starts, then a reconcile). The folder is then *primed*:
  ``serve`` is started once and stopped, so the console account, service credentials, the snapshot and
  Mosquitto's persistence file exist and every measured start is a restart of an installed registry whose
  start-up reconcile finds nothing to fix (checked: see ``reconcile_corrections``).
- ``dynsec``: the same devices in a dynamic-security file, one client and one role each, as the registry's old
  provisioner left them (bench/dynsec_baseline.py).
- ``passwd``: ``name:password`` lines hashed by ``mosquitto_passwd -U`` (PBKDF2-SHA512, 101 iterations).

Every bench device has the same password (one PBKDF2 computed for the JSON files; Mosquitto still runs
PBKDF2 on every login, and the registry's verifiers are per name anyway).

Options for the stall and fleet benchmarks: ``probe`` adds the unrelated client (``PROBE_USER``, allowed to
publish and subscribe under ``probe/#``); ``pending`` names get a pending request each (registry: recorded
through ``Registry.record_attempt`` while unlocked, from distinct loopback addresses, then locked again; the
other kinds ignore them: their grants create the accounts); ``dynsec`` also gets an admin client
(``dynsec_baseline.ADMIN_USER``, password ``ADMIN_PASSWORD``) allowed on ``$CONTROL/dynamic-security/v1``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from . import dynsec_baseline, procs

PASSWORD = "bench-password-1"
PROBE_USER = "bench-probe"
PROBE_TOPICS = (("probe/#", "readWrite"),)
ADMIN_PASSWORD = "bench-admin-password-1"


def device_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def server_secret(reg) -> bytes:
    """The database's server secret (``registry.secret`` beside ``registry.db``), as the registry reads it."""
    from store import crypto

    return crypto.load_or_create_secret(reg.companion("secret"))


def files(db: Path):
    """Where ``serve`` keeps Mosquitto's files for this database (named after it: registry.mosquitto.conf...)."""
    from broker.mosquitto import config as mconf

    return mconf.MosquittoFiles(str(db))


def _registry_users(db: Path, names: list[str], probe: bool, pending: list[str]) -> None:
    from store import crypto, open_registry

    reg = open_registry(str(db))
    try:
        secret = server_secret(reg)
        now = time.time()
        rows = [dict(name=n, verifier=crypto.verifier(secret, n, PASSWORD), client_id=None, admin=False,
                     disabled=False, created_at=now, created_by="bench", created_how="cli") for n in names]
        with reg.db.atomic():
            for i in range(0, len(rows), 500):
                reg.m.User.insert_many(rows[i:i + 500]).execute()
        if probe:
            reg.add_user(PROBE_USER, PASSWORD, actor="bench")
            for pattern, access in PROBE_TOPICS:
                reg.permit(PROBE_USER, pattern, access, actor="bench")
        if pending:
            reg.unlock(seconds=3600, actor="bench")
            for i, name in enumerate(pending):
                peer = f"127.9.{i // 25 // 250}.{i // 25 % 250 + 1}"
                result = reg.record_attempt(name, PASSWORD, None, peer, "mqtt")
                if result.outcome != "pending":
                    raise RuntimeError(f"pending request for {name}: {result.outcome} ({result.reason})")
            reg.lock(actor="bench")
    finally:
        reg.close()


def prepare(kind: str, names: list[str], label: str, *, probe: bool = False, pending: list[str] = ()) -> Path:
    """A folder from which a ``kind`` server starts with ``names`` granted (password PASSWORD)."""
    work = procs.tempdir(f"{label}-{kind}")
    if kind == "passwd":
        path = work / "mosquitto.passwd"
        path.write_text("".join(f"{n}:{PASSWORD}\n" for n in [*names, *([PROBE_USER] if probe else [])]))
        if names or probe:  # (mosquitto_passwd -U fails on an empty file)
            subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True)
        path.chmod(0o600)
    elif kind == "dynsec":
        dynsec_baseline.write_file(work / dynsec_baseline.FILE_NAME, names, PASSWORD,
                                   extra={PROBE_USER: (PASSWORD, PROBE_TOPICS)} if probe else None,
                                   admin_password=ADMIN_PASSWORD if probe else None)
    elif kind == "registry":
        db = work / "registry.db"
        _registry_users(db, names, probe, list(pending))
        with procs.Server("registry", work):  # prime: console account, credentials, snapshot, persistence
            pass
        (work / "serve.log").rename(work / "prime.log")
    else:
        raise ValueError(kind)
    return work


def reconcile_corrections(server: procs.Server) -> int:
    """Corrections the start-up reconcile logged (0 when the offline state was exactly in sync)."""
    for line in server.log_text().splitlines():
        if "reconcile:" in line and "correction(s) at start" in line:
            return int(line.split("reconcile:")[1].split()[0])
    return 0


def unlock(db: Path, seconds: float = 3600) -> None:
    from store import open_registry

    reg = open_registry(str(db))
    try:
        reg.unlock(seconds=seconds, actor="bench")
    finally:
        reg.close()


def console(db: Path):
    from store import open_registry
    from store.console import read_console_credentials

    reg = open_registry(str(db))
    try:
        creds = read_console_credentials(reg)
    finally:
        reg.close()
    if creds is None:
        raise RuntimeError(f"no console credentials beside {db}")
    return creds


_TEMPLATES: dict[tuple, Path] = {}
DEVICE_PREFIX = "dev"


def template(kind: str, count: int, *, probe: bool = False, pending: list[str] = ()) -> Path:
    """A prepared folder with ``count`` granted devices ``dev-00000``...; built once per run and copied
    for every start (``procs.copy_state``)."""
    key = (kind, count, probe, tuple(pending))
    if key not in _TEMPLATES:
        _TEMPLATES[key] = prepare(kind, device_names(DEVICE_PREFIX, count), f"tpl{count}", probe=probe,
                                  pending=pending)
    return _TEMPLATES[key]


def fresh(kind: str, count: int, label: str, **options) -> Path:
    return procs.copy_state(template(kind, count, **options), label)
