"""Server folders with N granted devices, written offline before any server starts.

Provisioning 10,000 devices through a running service would take long (dynamic security rewrites its whole
JSON file on every command), so the state is written the way the service itself would leave it:
- ``registry``: users in the registry database (HMAC verifier under the database's server secret, no client
  id, no permissions), and its dynamic-security file (``registry.dynamic-security.json``) with one client per user (Mosquitto's PBKDF2-SHA512 of the
  password, textname ``client-registry``, its role) and one role ``client-registry:user:<name>`` with the ACLs
  ``role_acls`` gives (none for a user without permissions), plus what ``ensure_dynsec_file`` adds (the service
  account and the shared roles). The folder is then *primed*: ``serve`` is started once and stopped, so the
  console account, service credentials and Mosquitto's persistence file exist and every measured start is a
  restart of an installed registry whose start-up reconcile finds nothing to fix (checked: see
  ``reconcile_corrections``).
- ``dynsec``: the same clients and roles in its own dynamic-security file (no service account).
- ``passwd``: ``name:password`` lines hashed by ``mosquitto_passwd -U`` (PBKDF2-SHA512, 101 iterations).

Every bench device has the same password (one PBKDF2 computed for the JSON files; Mosquitto still runs
PBKDF2 on every login, and the registry's verifiers are per name anyway).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from . import procs

PASSWORD = "bench-password-1"


def device_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def _dynsec_entities(names: list[str]) -> tuple[list[dict], list[dict]]:
    from broker.mosquitto import config as mconf
    from broker.mosquitto.dynsec import role_acls, user_role
    from store.views import Grants

    fields = mconf.pbkdf2_fields(PASSWORD)
    clients, roles = [], []
    for name in names:
        role = user_role(name)
        clients.append({"username": name, "textname": mconf.TEXTNAME, "roles": [{"rolename": role}], **fields})
        roles.append({"rolename": role, "acls": role_acls(Grants(name, False, False, None, ()))})
    return clients, roles


def _write_dynsec(path: Path, names: list[str]) -> None:
    from broker.mosquitto import config as mconf

    clients, roles = _dynsec_entities(names)
    data = {"defaultACLAccess": dict(mconf.DEFAULT_ACL_ACCESS), "clients": clients, "groups": [], "roles": roles}
    mconf.write_private(path, json.dumps(data) + "\n")


def server_secret(reg) -> bytes:
    """The database's server secret (``registry.secret`` beside ``registry.db``), as the registry reads it."""
    from store import crypto

    return crypto.load_or_create_secret(reg.companion("secret"))


def files(db: Path):
    """Where ``serve`` keeps Mosquitto's files for this database (named after it: registry.mosquitto.conf...)."""
    from broker.mosquitto import config as mconf

    return mconf.MosquittoFiles(str(db))


def _registry_users(db: Path, names: list[str]) -> None:
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
    finally:
        reg.close()


def prepare(kind: str, names: list[str], label: str) -> Path:
    """A folder from which a ``kind`` server starts with ``names`` granted (password PASSWORD)."""
    work = procs.tempdir(f"{label}-{kind}")
    if kind == "passwd":
        path = work / "mosquitto.passwd"
        path.write_text("".join(f"{n}:{PASSWORD}\n" for n in names))
        if names:  # (mosquitto_passwd -U fails on an empty file)
            subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True)
        path.chmod(0o600)
    elif kind == "dynsec":
        _write_dynsec(work / "dynamic-security.json", names)
    elif kind == "registry":
        from broker.mosquitto import config as mconf

        db = work / "registry.db"
        _registry_users(db, names)
        where = files(db)
        _write_dynsec(where.dynsec, names)
        mconf.ensure_dynsec_file(where.dynsec, mconf.load_or_create_service_credentials(where.service_credentials))
        with procs.Server("registry", work):  # prime: console account, persistence file
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


_TEMPLATES: dict[tuple[str, int], Path] = {}
DEVICE_PREFIX = "dev"


def template(kind: str, count: int) -> Path:
    """A prepared folder with ``count`` granted devices ``dev-00000``...; built once per run and copied
    for every start (``procs.copy_state``)."""
    key = (kind, count)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = prepare(kind, device_names(DEVICE_PREFIX, count), f"tpl{count}")
    return _TEMPLATES[key]


def fresh(kind: str, count: int, label: str) -> Path:
    return procs.copy_state(template(kind, count), label)
