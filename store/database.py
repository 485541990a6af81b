"""Opening the database: SQLite (WAL, busy timeout, foreign keys) or a server by URL; schema version."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import peewee as pw
from playhouse.db_url import connect as connect_url

from .errors import BusyError, StoreError
from .location import create_private_folder, is_url, sqlite_path
from .models import SCHEMA_VERSION, make_models

BUSY_TIMEOUT_MS = 5000
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "synchronous": "normal",
    "secure_delete": 1,  # a cleared pairing code or a removed user leaves no old bytes in the file
}


def describe(exc: BaseException, location: str) -> str:
    """One line for a database failure."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"database {location} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s); try again"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return f"database {location} is corrupt or not a client-registry database ({text})"
    if "readonly" in lowered or "read-only" in lowered:
        return f"database {location} is read-only ({text})"
    if "unable to open" in lowered:
        return f"cannot open database {location} ({text})"
    return f"database {location}: {text}"


@contextmanager
def translated(location: str):
    """Turn driver errors into StoreError with one clear line."""
    try:
        yield
    except StoreError:
        raise
    except (pw.PeeweeException, sqlite3.Error) as exc:
        text = str(exc).lower()
        error = BusyError if ("locked" in text or "busy" in text) else StoreError
        raise error(describe(exc, location)) from exc


def run_sql(db: pw.Database, text: str, params: tuple = ()):
    """Hand-written SQL for the hot paths (a device's attempt): building a peewee query costs more than
    running it (~0.1-0.3 ms of Python each, measured). ``?`` placeholders and double-quoted identifiers, so
    the same text runs on SQLite and PostgreSQL."""
    if db.param != "?":
        text = text.replace("?", db.param)
    return db.execute_sql(text, params)


class _Located(Protocol):
    location: str


_S = TypeVar("_S", bound=_Located)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def guarded(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """A registry part's method whose driver errors leave as StoreError with one clear line."""

    @functools.wraps(method)
    def wrapper(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with translated(self.location):
            return method(self, *args, **kwargs)

    return wrapper


def missing(location: str) -> str:
    return (f"no registry database at {location}: create it with `client-registry --db {location} init` "
            f"(or start `client-registry serve` or the dashboard on it)")


def _prepare_file(path, location: str, create: bool) -> None:
    """A new SQLite file is created private (0600: SQLite gives the WAL and SHM files the same mode) in a
    private folder, and only when ``create``; a missing one is never silently replaced."""
    if path.is_dir():
        raise StoreError(f"database {location} is a directory, not a file")
    if path.exists():
        return
    if not create:
        raise StoreError(missing(location))
    try:
        create_private_folder(path.parent)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create database {location}: {exc.strerror}") from exc


def connect(location: str, create: bool = True):
    """Open (creating the file and tables when ``create``) and return (database, models)."""
    path = sqlite_path(location)
    if not is_url(location):
        _prepare_file(path, location, create)
        db = pw.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        if path is not None:
            _prepare_file(path, location, create)
        try:
            db = connect_url(location)
        except Exception as exc:  # unknown scheme, missing driver: one line either way
            raise StoreError(f"cannot open database {location}: {exc}") from exc
        if isinstance(db, pw.SqliteDatabase):
            db.init(db.database, pragmas=SQLITE_PRAGMAS, timeout=BUSY_TIMEOUT_MS / 1000)  # type: ignore[arg-type]
    models = make_models(db)
    with translated(location):
        db.connect(reuse_if_open=True)
        if not create and not db.table_exists(models.Meta._meta.table_name):
            db.close()
            raise StoreError(missing(location))
        _prepare_schema(db, models, location)
    return db, models


# Columns added without a schema version bump: an older client-registry ignores them (an account bound to a
# certificate is then checked by password alone). New tables need nothing here (create_tables(safe=True)).
ADDED_COLUMNS = (
    ("requests", "rekey", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("requests", "certificate", "VARCHAR(64)"),
    ("requests", "certificate_info", "TEXT"),
    ("requests", "csr", "TEXT"),
    ("requests", "rotation", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("users", "certificate", "VARCHAR(64)"),
    ("users", "certificate_serial", "VARCHAR(64)"),
    ("users", "certificate_pem", "TEXT"),
)


def _prepare_schema(db: pw.Database, models, location: str) -> None:
    with write_transaction(db):  # reads then writes: take the write lock up front (see write_transaction)
        db.create_tables(models.all, safe=True)  # new tables of a newer schema are created here too
        row = models.Meta.get_or_none(models.Meta.key == "schema_version")
        if row is None:
            models.Meta.insert(key="schema_version", value=str(SCHEMA_VERSION)).on_conflict_ignore().execute()
            row = models.Meta.get(models.Meta.key == "schema_version")
        found = int(row.value)
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"database {location} was written by a newer client-registry (schema {found}); "
                f"this version understands schema {SCHEMA_VERSION}: upgrade client-registry"
            )
        if found < 2:
            raise StoreError(
                f"database {location} was written by client-registry 0.1 (schema {found}: argon2id hashes, "
                f"amqtt broker); this version keeps HMAC verifiers (schema {SCHEMA_VERSION}) and cannot convert "
                f"it: move it aside, start a new registry and let the devices register again"
            )
        if found < SCHEMA_VERSION:
            _upgrade(db, models, found)
        for table in {table for table, _, _ in ADDED_COLUMNS}:
            present = {c.name for c in db.get_columns(table)}
            for column, kind in ((c, k) for t, c, k in ADDED_COLUMNS if t == table and c not in present):
                db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')
        models.Window.insert(id=1).on_conflict_ignore().execute()


def _upgrade(db: pw.Database, models, found: int) -> None:
    """Additive upgrades, in the transaction that opens the database. 2 -> 3: the role tables were created
    above; requests gain ``requested_roles``. The version is raised so that an older client-registry refuses
    the file instead of stripping roles from the broker's accounts."""
    columns = {c.name for c in db.get_columns("requests")}
    if "requested_roles" not in columns:
        db.execute_sql('ALTER TABLE "requests" ADD COLUMN "requested_roles" TEXT')
    models.Meta.update(value=str(SCHEMA_VERSION)).where(models.Meta.key == "schema_version").execute()


def scrub_wal(db: pw.Database, *, wait: bool = True) -> bool:
    """After a secret (a pairing code) was cleared: secure_delete zeroes it in the page, but the WAL still holds
    the page's older versions until it is reset, and a reset only overwrites from the start. Copy every frame
    into the file and truncate the WAL to 0 bytes. False when a reader still used an old frame (busy after
    the busy timeout, at once without ``wait``): the caller tries again later. While the checkpoint waits for a
    reader it holds off every writer, so a retry that comes again soon does not wait. A server database
    (PostgreSQL) keeps its own WAL."""
    if not isinstance(db, pw.SqliteDatabase):
        return True
    if wait:
        busy, _, _ = db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0
    timeout = int(db.execute_sql("PRAGMA busy_timeout").fetchone()[0])
    db.execute_sql("PRAGMA busy_timeout = 0")
    try:
        busy, _, _ = db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute_sql(f"PRAGMA busy_timeout = {timeout}")
    return busy == 0


def write_transaction(db: pw.Database):
    """A transaction that takes the write lock at BEGIN: SQLite then waits (busy timeout) instead of failing
    when two processes upgrade a read to a write at once."""
    if isinstance(db, pw.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


