"""Building the plugin: cached by the hash of every source, one-line errors, no warnings."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker.mosquitto import plugin_build
from broker.mosquitto.plugin_build import PluginBuildError, build_plugin, plugin_path


def test_plugin_path_builds_once_and_caches(tmp_path):
    cache = tmp_path / "cache" / "client-registry"
    first = plugin_path(cache)
    assert re.fullmatch(r"registry_plugin-[0-9a-f]{12}\.so", first.name) and first.parent == cache
    assert stat.S_IMODE(first.stat().st_mode) == 0o644
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    mtime = first.stat().st_mtime_ns
    assert plugin_path(cache) == first
    assert first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no temp files left


def test_every_source_is_hashed(tmp_path, monkeypatch):
    first = plugin_path(tmp_path)
    for path in (*plugin_build.SOURCES, *plugin_build.HEADERS):
        copy = tmp_path / "src" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
    for index, name in enumerate(["registry_plugin.c", "registry_core.c", "registry_core.h"]):
        target = tmp_path / "src" / name
        target.write_bytes(target.read_bytes() + f"\n/* change {index} */\n".encode())
        monkeypatch.setattr(plugin_build, "SOURCES", (tmp_path / "src" / "registry_plugin.c",
                                                      tmp_path / "src" / "registry_core.c"))
        monkeypatch.setattr(plugin_build, "HEADERS", (tmp_path / "src" / "registry_core.h",))
        assert plugin_path(tmp_path) != first
        first = plugin_path(tmp_path)


def test_plugin_path_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert plugin_path().parent == tmp_path / "xdg" / "client-registry"


def test_plugin_path_concurrent_builds(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: plugin_path(tmp_path), range(4)))
    assert len(set(paths)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[0].name]


def test_build_plugin_to_explicit_path(tmp_path):
    out = build_plugin(tmp_path / "sub" / "registry_plugin.so")
    assert out == tmp_path / "sub" / "registry_plugin.so"
    assert out.read_bytes()[:4] == b"\x7fELF"


def test_build_error_without_compiler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(PluginBuildError) as info:
        plugin_path(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot build the registry plugin: no C compiler") and "apt-get install gcc" in message
    assert list(tmp_path.iterdir()) == []


def test_build_error_carries_the_compilers_first_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "cc -include /nonexistent/missing.h")
    with pytest.raises(PluginBuildError) as info:
        plugin_path(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "/nonexistent/missing.h" in message and "error" in message
    assert list(tmp_path.iterdir()) == []  # the temp file is gone


def test_build_error_without_header(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin_build, "HEADER", str(tmp_path / "mosquitto_broker.h"))
    with pytest.raises(PluginBuildError, match=r"^cannot build the registry plugin: mosquitto_broker\.h not found "
                                               r"\(apt-get install mosquitto-dev libmosquitto-dev\)$"):
        plugin_path(tmp_path / "cache")


def test_build_error_with_a_missing_source(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin_build, "SOURCES", (plugin_build.SOURCE, tmp_path / "registry_core.c"))
    with pytest.raises(PluginBuildError, match=r"registry_core\.c unreadable"):
        plugin_path(tmp_path / "cache")


def test_sources_compile_warning_free(tmp_path):
    result = subprocess.run([os.environ.get("CC", "cc"), *plugin_build.CFLAGS, "-o", str(tmp_path / "p.so"),
                             *map(str, plugin_build.SOURCES), *plugin_build.LDLIBS], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""


def test_plugin_links_libcrypto_and_libc_only(tmp_path):
    """The mosquitto_* symbols come from the broker, SHA-256 of passwords is built in; libcrypto (the one
    Mosquitto links itself) reads client certificates."""
    so = build_plugin(tmp_path / "p.so")
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    assert sorted(re.findall(r"NEEDED.*\[(.*)\]", needed)) == ["libc.so.6", "libcrypto.so.3"]


def test_build_error_without_openssl_headers(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin_build, "OPENSSL_HEADER", str(tmp_path / "x509.h"))
    with pytest.raises(PluginBuildError, match=r"^cannot build the registry plugin: OpenSSL's headers "
                                               r"\(openssl/x509\.h\) not found \(apt-get install libssl-dev\)$"):
        plugin_path(tmp_path / "cache")
