"""The service end of the plugin socket: the plugin's v2 datagrams (attempts, knocks, presence) and the CLI's v1
wake parsed strictly, and garbage and floods never stop it."""

from __future__ import annotations

import logging
import socket
import struct

import pytest

from broker.mosquitto import plugin_wire as wire
from broker.plugin_socket import MAGIC, WAKE, WAKE_DATAGRAM
from tests.broker.clients import mosquitto_pub
from tests.broker.conftest import wait_until


def _s(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def attempt(username: bytes, password: bytes = b"", client_id: bytes = b"", peer: bytes = b"", *,
            protocol: int = 4, kind: int = wire.UNKNOWN) -> bytes:
    """A CRK2 datagram as the plugin sends it (plugin_protocol.md, "Datagrams")."""
    return wire.ATTEMPT_MAGIC + bytes([protocol, kind]) + b"".join(map(_s, (username, password, client_id, peer)))


def knocks(total: int, *names: tuple[bytes, int]) -> bytes:
    return (wire.KNOCKS_MAGIC + struct.pack("!IH", total, len(names))
            + b"".join(_s(n) + struct.pack("!I", c) for n, c in names))


def presence(reset: bool, *changes: tuple[bool, bytes, bytes]) -> bytes:
    return (wire.PRESENCE_MAGIC + bytes([int(reset)]) + struct.pack("!H", len(changes))
            + b"".join(bytes([int(up)]) + _s(u) + _s(c) for up, u, c in changes))


def test_the_wake_is_v1s_bytes_and_nothing_else_passes_for_it(tmp_path):
    """The CLI's wake keeps the bytes earlier versions sent; other v1 datagrams (the old plugin's attempts)
    are not taken for anything."""
    assert MAGIC + bytes([WAKE]) + b"\0\0" * 4 == WAKE_DATAGRAM
    with pytest.raises(wire.WireError):
        wire.parse_datagram(WAKE_DATAGRAM)


def test_v2_datagrams_round_trip():
    got = wire.parse_datagram(attempt(b"dev-1", b"pw-1", b"cid", b"10.0.0.1", protocol=5, kind=wire.REKEY))
    assert got == wire.Attempt(5, wire.REKEY, b"dev-1", b"pw-1", b"cid", b"10.0.0.1")
    assert "pw-1" not in repr(got)
    assert wire.parse_datagram(knocks(7, (b"a", 2), (b"b", 1))) == wire.Knocks(7, ((b"a", 2), (b"b", 1)))
    assert wire.parse_datagram(knocks(0)) == wire.Knocks(0, ())
    assert wire.parse_datagram(presence(True, (True, b"dev-1", b"c1"), (False, b"dev-1", b"c0"))) == \
        wire.Presence(True, ((True, b"dev-1", b"c1"), (False, b"dev-1", b"c0")))


@pytest.mark.parametrize("junk", [
    attempt(b"dev-1", b"pw") + b"x",  # trailing bytes
    attempt(b"dev-1", b"pw")[:-1],  # truncated
    attempt(b"dev-1", kind=7),  # no such attempt kind
    knocks(3, (b"a", 1))[:-2],
    knocks(3, (b"a", 1)) + b"\x00",
    presence(False, (True, b"u", b"c"))[:-1],
    wire.PRESENCE_MAGIC + b"\x00" + struct.pack("!H", 2) + b"\x01" + _s(b"u") + _s(b"c"),  # n says two
    WAKE_DATAGRAM,  # v1 is not a v2 datagram (the socket takes it as the wake)
    b"CRK2", b"", b"\xff" * 40,
], ids=lambda j: j[:4].decode("latin-1") + str(len(j)))
def test_v2_datagrams_are_parsed_strictly(junk):
    with pytest.raises(wire.WireError):
        wire.parse_datagram(junk)


def test_garbage_on_the_socket_does_not_stop_the_service(server, admin_reg):
    admin_reg.unlock(actor="test")
    server.applied(admin_reg)  # the plugin knows it is unlocked
    junk = [b"", b"CRK1", b"CRK2", b"\xff" * 3000, WAKE_DATAGRAM[:-1], WAKE_DATAGRAM + b"x", attempt(b"x", b"y")[:-1],
            attempt(b"dev", b"pw-long-enough", kind=9), presence(False, (True, b"u", b"c")) + b"!",
            knocks(1, (b"x", 1))[:-1]]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for datagram in junk:
            s.sendto(datagram, str(server.srv.socket_path))
        # a v1 attempt (the old plugin's): not a wake, ignored
        v1 = MAGIC + bytes([4]) + b"".join(map(_s, ("\u202etxt".encode(), b"pw-long-enough", b"", b"")))
        s.sendto(v1, str(server.srv.socket_path))
        # invalid UTF-8 in a username that Mosquitto itself would never pass: refused in one log line
        s.sendto(attempt(b"\xc3\x28", b"hello"), str(server.srv.socket_path))
    assert mosquitto_pub(server.mqtt_port, "after-junk", "after-junk-pw").returncode != 0
    wait_until(lambda: [r.username for r in admin_reg.requests()].count("after-junk") == 1,
               message="the next real attempt to be recorded")
    assert server.srv._socket.counters["malformed"] >= len(junk)
    assert any("not valid UTF-8" in line for line in server.lines)
    assert [r.username for r in admin_reg.requests()] == ["after-junk"]  # nothing else became a request


def test_a_flood_of_refusals_does_not_write_the_log_full(broker_log):
    from broker.log_text import Refusals

    lines, scheduled, now = broker_log, [], [100.2]
    refusals = Refusals(logging.getLogger("broker.logins"), lambda delay, fn: scheduled.append(fn), per_second=20,
                        clock=lambda: now[0])
    for i in range(1000):
        refusals(f"mqtt refuse user='flood-{i}': locked")
    assert len(lines) == 20 and len(scheduled) == 1
    scheduled[0]()
    assert lines[-1] == "mqtt refuse: 980 more refused attempts in the last second, not logged one by one"
    now[0] = 101.5
    refusals("mqtt refuse user='later': locked")
    assert lines[-1] == "mqtt refuse user='later': locked"


def test_the_socket_is_private_whatever_the_umask_and_at_a_path_near_the_limit(tmp_path):
    """Bound in a private folder and moved in place (no process-wide umask change): 0600 even under umask 0,
    and a path of 107 bytes, AF_UNIX's limit, still works (the staging path is never longer)."""
    import asyncio
    import os
    import stat

    from broker.plugin_socket import PluginSocket, wake

    name = "registry.sock"
    folder = tmp_path / ("d" * (107 - len(str(tmp_path)) - len(name) - 2))
    folder.mkdir()
    path = folder / name
    assert len(os.fsencode(path)) == 107
    got: list = []

    async def handle(batch):
        got.extend(batch)

    async def run() -> int:
        sock = PluginSocket(path, handle)
        await sock.start()
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert wake(path)
            while not got:
                await asyncio.sleep(0.01)
            return mode
        finally:
            await sock.stop()

    old = os.umask(0)
    try:
        mode = asyncio.run(asyncio.wait_for(run(), 10))
    finally:
        os.umask(old)
    assert mode == 0o600
    assert os.listdir(folder) == []  # the staging folder is gone, and the socket with the service
