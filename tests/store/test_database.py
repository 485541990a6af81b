"""Opening the database: location rules and failures that must be one clear line."""

import os
import sqlite3
import stat

import pytest

from store import StoreError, open_registry
from store.console import CONSOLE_USER, ensure_console_account, read_console_credentials
from store.location import resolve


def test_location_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CLIENT_REGISTRY_DB", raising=False)
    assert resolve(None) == str(tmp_path / "xdg" / "client-registry" / "registry.db")
    monkeypatch.setenv("CLIENT_REGISTRY_DB", "/env/x.db")
    assert resolve(None) == "/env/x.db"
    assert resolve("/flag.db") == "/flag.db"


def test_sqlite_url_and_wal(tmp_path):
    reg = open_registry(f"sqlite:///{tmp_path}/by-url.db")
    reg.add_user("alice", "alice-pw", actor="op")
    assert reg.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reg.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    reg.close()
    assert (tmp_path / "by-url.db").exists()


def test_secret_file_is_private(reg):
    mode = stat.S_IMODE(os.stat(reg.companion("secret")).st_mode)
    assert mode == 0o600


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="corrupt or not a client-registry database"):
        open_registry(str(path))


def test_newer_schema_is_refused(db_path, reg):
    reg.close()
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer client-registry \\(schema 99\\)"):
        open_registry(db_path)


def test_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"cannot create database .*: Not a directory"):
        open_registry(str(blocker / "sub" / "registry.db"))


def test_database_locked_for_too_long(reg, db_path, monkeypatch):
    import store.database

    reg.close()
    monkeypatch.setitem(store.database.SQLITE_PRAGMAS, "busy_timeout", 200)
    monkeypatch.setattr(store.database, "BUSY_TIMEOUT_MS", 200)
    waiting = open_registry(db_path)
    holder = sqlite3.connect(db_path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="is locked by another process"):
            waiting.unlock(60, actor="op")
    finally:
        holder.rollback()
        holder.close()
    assert waiting.unlock(60, actor="op").unlocked  # nothing was lost: it works once the lock is gone


def test_console_account(reg, monkeypatch):
    monkeypatch.delenv("CLIENT_REGISTRY_CONSOLE_PASSWORD", raising=False)
    creds = ensure_console_account(reg)
    path = reg.companion("console.credentials")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_console_credentials(reg) == creds and creds.password not in repr(creds)
    assert reg.is_admin(CONSOLE_USER) and reg.authenticate(CONSOLE_USER, creds.password)
    assert ensure_console_account(reg) == creds  # second start: same account
    reg.m.User.update(disabled=True).where(reg.m.User.name == CONSOLE_USER).execute()  # by hand: the store refuses
    ensure_console_account(reg)
    assert reg.authenticate(CONSOLE_USER, creds.password)
