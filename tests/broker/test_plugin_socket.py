"""The service end of the plugin socket: datagrams parsed strictly, garbage and floods never stop it, and the
passwords it holds for pending requests stay bounded."""

from __future__ import annotations

import socket
import struct

from broker.held_passwords import HeldPasswords
from broker.plugin_socket import MAGIC, encode, parse
from tests.broker.clients import mosquitto_pub
from tests.broker.conftest import wait_until


def test_parse_round_trip_and_strictness():
    knock = parse(encode("dev-1", "pw-1", "cid", "10.0.0.1", protocol=5))
    assert (knock.username, knock.password, knock.client_id, knock.peer, knock.protocol) == (
        b"dev-1", b"pw-1", b"cid", b"10.0.0.1", 5)
    good = encode("dev-1", "pw-1")
    assert parse(good + b"x") is None  # trailing bytes
    assert parse(good[:-1]) is None  # truncated
    assert parse(b"XXXX" + good[4:]) is None  # not ours
    assert parse(MAGIC + b"\x04" + struct.pack("!H", 65535) + b"a") is None  # a length past the end
    assert parse(b"") is None and parse(MAGIC) is None
    assert "pw-1" not in repr(knock)


def test_garbage_on_the_socket_does_not_stop_the_service(server, admin_reg):
    admin_reg.unlock(actor="test")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"CRK1", b"\xff" * 3000, encode("x", "y")[:-1], MAGIC + b"\x05" + b"\x00\x03\xff\xfe\xfd"
                     + b"\x00\x00" * 3, encode("\u202etxt", "pw-long-enough")):
            s.sendto(junk, str(server.srv.socket_path))
        # invalid UTF-8 in a username that Mosquitto itself would never pass: refused in one log line
        s.sendto(MAGIC + b"\x04" + b"\x00\x02\xc3\x28" + b"\x00\x05hello" + b"\x00\x00" * 2, str(server.srv.socket_path))
    assert mosquitto_pub(server.mqtt_port, "after-junk", "after-junk-pw").returncode != 0
    wait_until(lambda: [r.username for r in admin_reg.requests()].count("after-junk") == 1,
               message="the next real attempt to be recorded")
    assert server.srv._socket.counters["malformed"] >= 4
    assert any("not valid UTF-8" in line for line in server.lines)


def test_held_passwords_are_bounded_in_count_and_time():
    now = [0.0]
    held = HeldPasswords(limit=3, ttl=60, clock=lambda: now[0])
    for i in range(5):
        held.hold(i, f"pw-{i}")
    assert len(held) == 3 and held.take(0) is None and held.take(4) == "pw-4"
    assert held.take(4) is None  # handed out once
    now[0] = 61
    assert held.take(3) is None  # too old: the device's next login provisions it instead
    assert "pw-" not in repr(held)


def test_a_flood_of_refusals_does_not_write_the_log_full():
    from broker.log_text import Refusals

    lines, scheduled, now = [], [], [100.2]
    refusals = Refusals(lines.append, lambda delay, fn: scheduled.append(fn), per_second=20, clock=lambda: now[0])
    for i in range(1000):
        refusals(f"mqtt refuse user='flood-{i}': locked")
    assert len(lines) == 20 and len(scheduled) == 1
    scheduled[0]()
    assert lines[-1] == "mqtt refuse: 980 more refused attempts in the last second, not logged one by one"
    now[0] = 101.5
    refusals("mqtt refuse user='later': locked")
    assert lines[-1] == "mqtt refuse user='later': locked"
