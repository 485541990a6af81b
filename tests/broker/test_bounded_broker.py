"""The supervised Mosquitto is bounded before anyone is authenticated: a CONNECT announcing 256 MiB is closed
unread (max_packet_size), and connections beyond max_connections are closed at once."""

from __future__ import annotations

from pathlib import Path

from tests.broker import mqtt_raw as raw
from tests.broker.conftest import ServerThread

MiB = 1 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_256_mib_connect_is_closed_unread_and_mosquitto_stays_small(server, admin_reg):
    pid = server.srv.supervisor.proc.pid
    before = rss(pid)
    sock = raw.open_socket(server.mqtt_port)
    closed = False
    try:
        sock.sendall(b"\x10\xff\xff\xff\x7f")  # CONNECT, remaining length 268,435,455 (the most MQTT can say)
        chunk = b"\0" * MiB
        try:
            for _ in range(64):  # without a bound Mosquitto buffers every byte of it, unauthenticated
                sock.sendall(chunk)
        except OSError:
            closed = True  # reset: Mosquitto closed it after the fixed header
        grown = rss(pid) - before
        closed = closed or raw.closed_by_peer(sock, 5)
    finally:
        sock.close()
    assert grown < 20 * MiB, f"Mosquitto grew by {grown / MiB:.0f} MiB"
    assert closed, "the oversized CONNECT was left open"
    server.add_device(admin_reg, "sensor-big", "secret-big")  # a normal device still gets in
    ok = raw.open_socket(server.mqtt_port)
    try:
        ok.sendall(raw.connect("sensor-big-1", "sensor-big", "secret-big"))
        assert raw.read_connack(ok) == 0
    finally:
        ok.close()


def test_connections_beyond_max_connections_are_closed(db_path):
    st = ServerThread(db_path, max_connections=3).start()
    socks = []
    try:
        refused = None
        for i in range(5):  # the service's own connection may or may not count: 2.0.11 counts loosely
            socks.append(raw.open_socket(st.mqtt_port))
            if raw.closed_by_peer(socks[-1], 0.5):
                refused = i
                break
        assert refused is not None and refused <= 3, "connections beyond max_connections were accepted"
        assert st.srv.broker_state == "running"
    finally:
        for s in socks:
            s.close()
        st.stop()
