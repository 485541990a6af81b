"""The Mosquitto registry plugin, run for real: Mosquitto 2 + dynamic-security + registry_plugin.so,
clients over TCP (paho, mosquitto_pub, hand-built CONNECT packets), the registry as a bound datagram socket.

"No datagram" is never checked by sleeping: after the attempt under test, a sentinel attempt with a fresh
unknown username is made, and the next datagram must be the sentinel's. Mosquitto handles CONNECTs one at a
time, so a report for the earlier attempt would have been queued first."""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto import plugin_build
from broker.mosquitto.plugin_build import PluginBuildError, build_plugin, plugin_path

from .conftest import KNOWN_PASSWORD, KNOWN_USER, NO_CONNACK, Registry, attempt, wait_for

# CONNACK answers of Mosquitto 2.0.11 when the plugin says MOSQ_ERR_AUTH.
REFUSED = {3: 5, 4: 5, 5: 135}  # 3.x: "not authorised"; MQTT 5: 0x87 "Not authorized"
ACCEPTED = 0

_sentinels = itertools.count()


def assert_no_report_since(broker, registry: Registry) -> None:
    """Nothing was reported by earlier attempts: the next datagram is a fresh sentinel's."""
    name = f"sentinel-{next(_sentinels)}"
    assert attempt(broker.port, "sentinel", name, "pw") == REFUSED[4]
    report = registry.next()
    assert report.username == name.encode(), f"unexpected report before the sentinel: {report}"


def paho_attempt(port: int, protocol, client_id: str, username: str, password: str):
    """One connection attempt with paho, pumped by hand so it cannot reconnect behind our back."""
    result = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         reconnect_on_failure=False)
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, flags, reason_code, props: result.setdefault("rc", reason_code)
    client.connect("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 10
        while "rc" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    finally:
        client.disconnect()
        client.loop(timeout=0.05)
    assert "rc" in result, "paho got no CONNACK"
    return result["rc"]


# --- 1. unknown usernames are refused and reported once ---

@pytest.mark.parametrize("protocol, level", [(mqtt.MQTTv311, 4), (mqtt.MQTTv5, 5)], ids=["v311", "v5"])
def test_unknown_username_via_paho_is_refused_and_reported(broker, registry, protocol, level):
    rc = paho_attempt(broker.port, protocol, f"dev-{level}", "new-device", "s3cret pw")
    assert rc.is_failure and rc.value == 135  # paho maps 3.1.1's code 5 to "Not authorized" too
    report = registry.next()
    assert (report.version, report.username, report.password, report.client_id, report.address) == \
        (level, b"new-device", b"s3cret pw", f"dev-{level}".encode(), b"127.0.0.1")
    assert_no_report_since(broker, registry)  # exactly one


@pytest.mark.parametrize("flag, level, message", [("31", 3, "not authorised"), ("311", 4, "not authorised"),
                                                  ("5", 5, "Not authorized")])
def test_unknown_username_via_mosquitto_pub_is_refused_and_reported(broker, registry, flag, level, message):
    result = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", flag,
                             "-i", f"pub{flag}", "-u", "pub-device", "-P", "pub-pw", "-t", "t", "-m", "x"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == REFUSED[level]  # mosquitto_pub exits with the CONNACK code
    assert message in result.stderr
    report = registry.next()
    assert (report.version, report.username, report.password, report.client_id, report.address) == \
        (level, b"pub-device", b"pub-pw", f"pub{flag}".encode(), b"127.0.0.1")
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("level", [3, 4, 5])
def test_raw_unknown_username_reports_protocol_version(broker, registry, level):
    assert attempt(broker.port, "raw", "raw-device", "pw", level=level) == REFUSED[level]
    assert registry.next().version == level


# --- 2. known dynamic-security clients never reach the plugin ---

@pytest.mark.parametrize("level", [3, 4, 5])
def test_known_client_connects_without_report(broker, registry, level):
    assert attempt(broker.port, "known", KNOWN_USER, KNOWN_PASSWORD, level=level) == ACCEPTED
    assert_no_report_since(broker, registry)


def test_known_client_connects_via_paho_without_report(broker, registry):
    assert paho_attempt(broker.port, mqtt.MQTTv5, "known", KNOWN_USER, KNOWN_PASSWORD).value == 0
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("level", [4, 5])
def test_known_client_wrong_password_refused_without_report(broker, registry, level):
    assert attempt(broker.port, "known", KNOWN_USER, "wrong-password", level=level) == REFUSED[level]
    assert_no_report_since(broker, registry)


def test_known_client_without_password_reaches_the_plugin(broker, registry):
    """dynamic-security defers a known username that sent no password, so it is reported (empty password)."""
    assert attempt(broker.port, "known", KNOWN_USER, None) == REFUSED[4]
    report = registry.next()
    assert (report.username, report.password) == (KNOWN_USER.encode(), b"")


@pytest.mark.parametrize("username", [None, b""], ids=["no-username", "empty-username"])
@pytest.mark.parametrize("level", [4, 5])
def test_no_username_is_refused_without_report(broker, registry, username, level):
    assert attempt(broker.port, "anon", username, None, level=level) == REFUSED[level]
    assert_no_report_since(broker, registry)


# --- 3. hostile input ---

@pytest.mark.parametrize("size", [60 * 1024, 65535])
def test_huge_username_refused_without_report(broker, registry, size):
    assert attempt(broker.port, "huge", b"u" * size, b"pw") == REFUSED[4]
    assert broker.alive()
    assert_no_report_since(broker, registry)


def test_huge_password_and_client_id_refused_without_report(broker, registry):
    assert attempt(broker.port, "c", "dev", b"\xff" * 65535) == REFUSED[4]
    assert attempt(broker.port, b"c" * 65535, "dev", "pw") == REFUSED[4]
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("field, cap", [("username", 1024), ("password", 4096), ("client_id", 1024)])
def test_field_caps(broker, registry, field, cap):
    def fields(n):
        values = {"client_id": b"cid", "username": b"dev", "password": b"pw"}
        values[field] = b"x" * n
        return values

    at_cap = fields(cap)
    assert attempt(broker.port, at_cap["client_id"], at_cap["username"], at_cap["password"]) == REFUSED[4]
    assert getattr(registry.next(), field) == b"x" * cap
    over = fields(cap + 1)
    assert attempt(broker.port, over["client_id"], over["username"], over["password"]) == REFUSED[4]
    assert_no_report_since(broker, registry)


def test_password_with_nul_is_truncated_at_the_nul(broker, registry):
    """Mosquitto hands plugins the password as a C string (dynamic-security hashes it the same way)."""
    assert attempt(broker.port, "nul", "dev", b"ab\x00cd") == REFUSED[4]
    assert registry.next().password == b"ab"
    assert attempt(broker.port, "nul", "dev", b"\x00rest") == REFUSED[4]
    assert registry.next().password == b""


def test_password_invalid_utf8_is_passed_raw(broker, registry):
    raw = b"\xff\xfe\xc0\x80\xed\xa0\x80 end"
    assert attempt(broker.port, "bin", "dev", raw) == REFUSED[4]
    assert registry.next().password == raw


@pytest.mark.parametrize("username", [b"\xff\xfe", b"a\x00b", b"a\x01b", b"\xed\xa0\x80"],
                         ids=["invalid-utf8", "nul", "control", "surrogate"])
@pytest.mark.parametrize("level", [3, 4, 5])
def test_malformed_username_never_reaches_the_plugin(broker, registry, username, level):
    """Mosquitto validates usernames as MQTT UTF-8: 3.1.1/5 clients are dropped without a CONNACK,
    3.1 clients are treated as having no username (refused, nothing reported)."""
    expected = NO_CONNACK if level in (4, 5) else REFUSED[3]
    assert attempt(broker.port, "bad", username, b"pw", level=level) == expected
    assert broker.alive()
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("level", [4, 5])
def test_empty_client_id_is_reported_as_the_generated_id(broker, registry, level):
    assert attempt(broker.port, b"", "dev", "pw", level=level) == REFUSED[level]
    assert re.fullmatch(rb"auto-[0-9A-F-]{36}", registry.next().client_id)


def test_empty_client_id_on_mqtt31_is_rejected_before_the_plugin(broker, registry):
    assert attempt(broker.port, b"", "dev", "pw", level=3) == 2  # identifier rejected
    assert_no_report_since(broker, registry)


# --- 4. never blocks ---

def _flood(broker, capsys, label: str, count: int = 200) -> None:
    start = time.monotonic()
    answers = [attempt(broker.port, f"flood{i}", f"flood-{i}", "flood-password-Zq7") for i in range(count)]
    elapsed = time.monotonic() - start
    assert answers == [REFUSED[4]] * count
    with capsys.disabled():
        print(f"\n[registry plugin] {label}: {count} refusals in {elapsed:.3f}s = {count / elapsed:.0f}/s")
    assert attempt(broker.port, "known", KNOWN_USER, KNOWN_PASSWORD) == ACCEPTED


def _plugin_warnings(broker, reason: str) -> list[str]:
    return [line for line in broker.log().splitlines() if "registry_plugin: cannot reach" in line and reason in line]


def test_flood_without_receiver(start_broker, short_dir, capsys):
    broker = start_broker()  # nobody bound at registry.sock
    _flood(broker, capsys, "no receiver")
    assert len(wait_for(lambda: _plugin_warnings(broker, "No such file or directory"), what="ENOENT warning")) == 1
    assert "flood-password-Zq7" not in broker.log()
    # The registry can come up later: the plugin finds it without a broker restart.
    registry = Registry(short_dir / "registry.sock")
    try:
        assert attempt(broker.port, "late", "late-device", "pw") == REFUSED[4]
        assert registry.next().username == b"late-device"
    finally:
        registry.close()


def test_flood_with_receiver_that_never_reads(start_broker, short_dir, capsys):
    registry = Registry(short_dir / "registry.sock", rcvbuf=4096)
    try:
        broker = start_broker()
        assert registry.fill() > 0
        _flood(broker, capsys, "full receiver")
        assert len(wait_for(lambda: _plugin_warnings(broker, "Resource temporarily unavailable"),
                            what="EAGAIN warning")) == 1
        assert "flood-password-Zq7" not in broker.log()
        # Once the registry catches up, reports flow again.
        registry.drain()
        assert_no_report_since(broker, registry)
    finally:
        registry.close()


def test_stale_socket_file(start_broker, short_dir):
    stale = Registry(short_dir / "registry.sock")
    stale.close()  # the path stays, nobody behind it: ECONNREFUSED
    broker = start_broker()
    assert [attempt(broker.port, "c", f"d{i}", "pw") for i in range(20)] == [REFUSED[4]] * 20
    assert len(wait_for(lambda: _plugin_warnings(broker, "Connection refused"), what="ECONNREFUSED warning")) == 1


@pytest.mark.parametrize("option, warning", [(None, "plugin_opt_socket not set"),
                                             ("relative/registry.sock", "must be an absolute path"),
                                             ("/" + "x" * 120, "is longer than 107 bytes")])
def test_unusable_socket_option_still_refuses(start_broker, registry, option, warning):
    broker = start_broker(socket_option=option)
    assert warning in broker.log()
    assert attempt(broker.port, "c", "dev", "pw") == REFUSED[4]
    assert attempt(broker.port, "known", KNOWN_USER, KNOWN_PASSWORD) == ACCEPTED
    assert registry.pending() is None  # the only socket the plugin could have reached, had it tried


# --- 5. building ---

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


def test_source_compiles_warning_free(tmp_path):
    result = subprocess.run([os.environ.get("CC", "cc"), *plugin_build.CFLAGS, "-o", str(tmp_path / "p.so"),
                             str(plugin_build.SOURCE)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
