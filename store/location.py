"""Where things live: the database (--db, else $CLIENT_REGISTRY_DB, else the user data directory) and the
user's data, configuration and cache directories (platformdirs: $XDG_DATA_HOME, $XDG_CONFIG_HOME,
$XDG_CACHE_HOME when absolute, as the XDG spec says; relative values are ignored)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from platformdirs import PlatformDirs

ENV_DB = "CLIENT_REGISTRY_DB"
APP_DIR = "client-registry"


def _dirs() -> PlatformDirs:  # read the environment on every call: tests and callers may change it
    return PlatformDirs(APP_DIR, appauthor=False)


def default_data_dir() -> Path:
    """``~/.local/share/client-registry`` or ``$XDG_DATA_HOME/client-registry``."""
    return Path(_dirs().user_data_dir)


def config_dir() -> Path:
    """``~/.config/client-registry`` or ``$XDG_CONFIG_HOME/client-registry`` (the dashboard's keymap)."""
    return Path(_dirs().user_config_dir)


def cache_dir() -> Path:
    """``~/.cache/client-registry`` or ``$XDG_CACHE_HOME/client-registry`` (built plugins)."""
    return Path(_dirs().user_cache_dir)


def resolve(db: str | None) -> str:
    """The location to open, as given (path or URL) or from the environment or the default."""
    if db:
        return db
    env = os.environ.get(ENV_DB)
    if env:
        return env
    return str(default_data_dir() / "registry.db")


def is_url(location: str) -> bool:
    return "://" in location


def sqlite_path(location: str) -> Path | None:
    """The file of an SQLite location, or None for a server database (PostgreSQL, ...)."""
    if not is_url(location):
        return Path(location).expanduser()
    scheme, _, rest = location.partition("://")
    if scheme.split("+")[0] != "sqlite":
        return None
    # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db"
    path = rest[1:] if rest.startswith("/") else rest
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser()


def data_dir_for(location: str) -> Path:
    """The folder for files that belong beside the database (server secret, console credentials)."""
    path = sqlite_path(location)
    return path.parent if path is not None else default_data_dir()


def companion(location: str, name: str) -> Path:
    """A file that belongs to this database and no other: ``registry.db`` -> ``registry.<name>`` beside it;
    a server database -> ``<host>_<dbname>.<name>`` in the default data directory."""
    path = sqlite_path(location)
    if path is not None:
        return path.with_name(f"{path.stem}.{name}")
    parts = urlsplit(location)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{parts.hostname or 'local'}_{parts.path.strip('/') or 'db'}")
    return default_data_dir() / f"{stem}.{name}"


def create_private_folder(folder: Path) -> None:
    """Create the data folder (and parents) only its owner can enter, whatever the umask."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    folder.chmod(0o700)
