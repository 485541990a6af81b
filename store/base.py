"""The store's shared pieces, which every part of the registry receives: the opened database and its models, the
clock and the configuration, the write transaction, the audit-log and meta writers, whether a server is alive,
the WAL scrub after a secret was cleared, and the lookups every part makes (a user's row, a reserved name).

Each part (registration.py, access.py, roles.py, ...) is a :class:`Part` holding one job: it reaches the shared
pieces through ``self.base`` (aliased ``self.db`` and ``self.m``) and another part only when that part was given
to it at construction. :class:`store.registry.Registry` builds the base and the parts, in dependency order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import peewee as pw

from . import crypto
from . import location as loc
from .database import connect, run_sql, scrub_wal, write_transaction
from .durations import UNLOCK_DEFAULT
from .errors import RefusedError, StoreError
from .validation import normalise_username, reserved_problem, text_problem

SERVER_ALIVE = 5.0  # a server that noted nothing for this long is not running (it notes every 2 s)
SERVER_SEEN = "server_seen_at"  # meta key: when the running server last said it is alive (note_applied)
SCRUB_DUE = "scrub_due"  # meta key: a cleared secret may still be in the WAL (Base.scrub_secrets)


@dataclass(frozen=True)
class RegistryConfig:
    per_peer_per_minute: int = 30
    max_pending: int = 10_000
    expire_after: float = 24 * 3600
    default_unlock: int = UNLOCK_DEFAULT


class Base:
    """One opened registry database and what every part shares about it."""

    def __init__(self, location: str, config: RegistryConfig, clock: Callable[[], float], *, create: bool) -> None:
        self.location = location
        self.config = config
        self.clock = clock
        self.data_dir = loc.data_dir_for(location)
        self.db: pw.Database
        self.m: SimpleNamespace
        self.db, self.m = connect(location, create=create)
        secret = self.companion("secret")
        try:
            self._secret = crypto.load_or_create_secret(secret)
        except (OSError, ValueError) as exc:
            self.db.close()
            raise StoreError(f"cannot read or create the server secret {secret}: {exc}") from exc
        self._scrub_due = False  # a cleared pairing code may still be in the WAL (scrub_secrets)

    def close(self) -> None:
        self.db.close()

    def companion(self, name: str) -> Path:
        """A file of this database's own (secret, credentials, Mosquitto's files): see store.location."""
        return loc.companion(self.location, name)

    # ------------------------------------------------------------------ writing
    def write(self) -> AbstractContextManager[Any]:
        """A write transaction (database.write_transaction: the write lock taken at BEGIN)."""
        return write_transaction(self.db)

    def event(self, actor: str, kind: str, subject: str | None, at: float | None = None, **detail: Any) -> None:
        """Append to the audit log (inside the caller's transaction). Never a password, hash or fingerprint."""
        run_sql(self.db, 'INSERT INTO "events" ("time", "actor", "kind", "subject", "detail") VALUES (?, ?, ?, ?, ?)',
                (self.clock() if at is None else at, actor, kind, subject, json.dumps(detail)))

    def meta(self, key: str, value: str) -> None:
        """Set a meta value (inside the caller's transaction)."""
        M = self.m.Meta
        M.insert(key=key, value=value).on_conflict(conflict_target=[M.key], update={M.value: value}).execute()

    def meta_values(self, *keys: str) -> dict[str, str]:
        """The meta values of these keys that are set."""
        return dict(run_sql(self.db, f'SELECT "key", "value" FROM "meta" WHERE "key" IN ({", ".join("?" * len(keys))})',
                            keys).fetchall())

    def server_alive(self, noted_at: float | None) -> bool:
        """Was a server running when it noted this (its last note, or a problem it noted), that is, within
        SERVER_ALIVE of now? A server that died leaves its last notes behind: they stop counting."""
        return noted_at is not None and self.clock() - noted_at <= SERVER_ALIVE

    def scrub_secrets(self, cleared: bool = True) -> None:
        """Called after a committed pairing code or verifier was cleared (grant, deny, expiry, user removal;
        once per command, not per row): its old bytes leave the WAL too (database.scrub_wal). If a reader kept
        the WAL busy, meta ``scrub_due`` says so to whichever process comes next: the server's housekeeping
        calls this with ``cleared=False`` every 2 s and does it then (without waiting for a reader)."""
        flagged = run_sql(self.db, 'SELECT 1 FROM "meta" WHERE "key" = ?', (SCRUB_DUE,)).fetchone() is not None
        if not (cleared or self._scrub_due or flagged):
            return
        self._scrub_due = not scrub_wal(self.db, wait=cleared)  # a retry (every 2 s) holds no writer off
        if self._scrub_due != flagged:  # written after the truncation: this frame holds no secret
            with self.write():
                if self._scrub_due:
                    self.meta(SCRUB_DUE, "1")
                else:
                    self.m.Meta.delete().where(self.m.Meta.key == SCRUB_DUE).execute()

    # ------------------------------------------------------------------ lookups every part makes
    def verifier(self, username: str, password: str) -> str:
        return crypto.verifier(self._secret, username, password)

    def certificate_only_verifier(self, username: str) -> str:
        return crypto.certificate_only_verifier(self._secret, username)

    def user_row(self, name: str) -> Any:
        name = normalise_username(name)
        if text_problem(name, "username"):  # no user has a name UTF-8 cannot carry
            return None
        return self.m.User.get_or_none(self.m.User.name == name)

    def require_user(self, name: str) -> Any:
        row = self.user_row(name)
        if row is None:
            raise RefusedError(f"no user named {name!r}")
        return row

    def is_user(self, name: str) -> bool:
        """The hot path's question (is this attempt a user's?), without building a model instance."""
        return run_sql(self.db, 'SELECT 1 FROM "users" WHERE "name" = ?', (name,)).fetchone() is not None

    def reserved(self, name: str) -> str | None:
        """Why ``name`` (NFC) may never be a device's (validation.reserved_problem), or None."""
        site = run_sql(self.db, 'SELECT 1 FROM "site_accounts" WHERE "name" = ?', (name,)).fetchone() is not None
        return reserved_problem(name, site_account=site)


class Part:
    """One job of the registry, on the shared base. Another part it needs is given to its constructor."""

    def __init__(self, base: Base) -> None:
        self.base = base
        self.location = base.location  # for database.guarded
        self.db = base.db
        self.m = base.m
