"""Where the registry keeps its files: one XDG lookup (platformdirs) for data, configuration and cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.location import cache_dir, config_dir, resolve

VARIABLES = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIENT_REGISTRY_DB", raising=False)
    return tmp_path


def test_absolute_xdg_values_are_used(home, monkeypatch):
    for name in VARIABLES:
        monkeypatch.setenv(name, str(home / name.lower()))
    assert resolve(None) == str(home / "xdg_data_home" / "client-registry" / "registry.db")
    assert config_dir() == home / "xdg_config_home" / "client-registry"
    assert cache_dir() == home / "xdg_cache_home" / "client-registry"


@pytest.mark.parametrize("value", ["relative/dir", "./here", "~/tilde", ""])
def test_relative_or_empty_xdg_values_are_ignored(home, monkeypatch, tmp_path, value):
    """The XDG spec: a relative value is invalid and ignored, so the database never lands wherever the command
    happened to run (the store, the keymap and the plugin cache once disagreed on this)."""
    for name in VARIABLES:
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert resolve(None) == str(home / ".local" / "share" / "client-registry" / "registry.db")
    assert config_dir() == home / ".config" / "client-registry"
    assert cache_dir() == home / ".cache" / "client-registry"
    assert Path(resolve(None)).is_absolute()
