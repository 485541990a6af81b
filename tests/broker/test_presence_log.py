"""Mosquitto's connection notices as untrusted text (broker/mosquitto/presence.py), and the output reader that
feeds them: no line a client id can write is taken for another user's."""

from __future__ import annotations

import asyncio

from broker.mosquitto.presence import LINE_LIMIT, PresenceTracker, parse
from broker.mosquitto.supervisor import LINE_MAX, LineSplitter


def test_parse_connection_notices():
    assert parse(b"New client connected from 10.0.0.7:50012 as esp-1 (p4, c1, k60, u'sensor-1').") == (
        "connected", "esp-1", "sensor-1")
    assert parse(b"New client connected from ::1:50012 as a b (c) (p5, c0, k0, u'it''s').") == (
        "connected", "a b (c)", "it''s")
    for ending in ("closed its connection", "disconnected", "disconnected, not authorised",
                   "has exceeded timeout, disconnecting", "been disconnected by administrative action",
                   "disconnected due to protocol error", "disconnected: Connection reset by peer"):
        assert parse(f"Client esp 1 {ending}.".encode()) == ("ended", "esp 1", None)
    assert parse(b"Bad socket read/write on client esp-1: Unknown error.") == ("ended", "esp-1", None)
    assert parse(b"Client esp-1 already connected, closing old connection.") == ("other", "", None)
    assert parse(b"New client connected from 10.0.0.7:1 as anon (p4, c1, k60).") == ("other", "", None)
    assert parse(b"New connection from 10.0.0.7:50012 on port 1883.") == ("other", "", None)  # not logged either
    assert parse(b"Opening ipv4 listen socket on port 1883.") is None


def test_a_client_id_imitating_the_suffix_is_not_trusted():
    # The client id carries a whole forged notice: the line holds two suffixes, so nobody is marked online.
    line = b"New client connected from 10.0.0.7:1 as x (p4, c1, k60, u'victim') (p4, c1, k60, u'attacker')."
    assert parse(line) == ("other", "", None)
    # A line as long as Mosquitto's buffer may have been cut right after a forged suffix.
    cut = b"New client connected from 10.0.0.7:1 as " + b"A" * 900 + b" (p4, c1, k60, u'victim')."
    cut = cut.ljust(LINE_LIMIT, b"A")[:LINE_LIMIT]
    assert parse(cut) == ("other", "", None)


def test_tracker_counts_sessions_by_client_id_and_coalesces():
    now = [100.0]
    written = []

    async def write(changes, reset_at):
        written.append((changes, reset_at))
        return True

    tracker = PresenceTracker(lambda: now[0], write, log=lambda line: None)
    for i in range(1000):  # a reconnect storm: one batch, one row per user
        tracker.feed(f"New client connected from 10.0.0.7:{i} as dev-{i} (p4, c1, k60, u'sensor-{i % 10}').".encode())
    assert tracker.count["sensor-3"] == 100
    tracker.feed(b"New client connected from 10.0.0.8:1 as dev-3 (p4, c1, k60, u'sensor-9').")  # taken over
    assert tracker.count["sensor-3"] == 99 and tracker.count["sensor-9"] == 101
    now[0] = 101.0
    tracker.feed(b"Client dev-7 closed its connection.")
    tracker.feed(b"Client <unknown> disconnected, not authorised.")  # a refused login: nobody's session
    tracker.feed(b"Client never-seen closed its connection.")
    asyncio.run(tracker.flush())
    [(changes, reset_at)] = written
    assert reset_at is None and len(changes) == 10
    assert changes["sensor-7"] == (99, 100.0, 101.0)
    tracker.restarted()
    asyncio.run(tracker.flush())
    assert written[-1] == ({}, 101.0) and not tracker.count


def test_output_lines_survive_a_line_longer_than_any_buffer():
    splitter = LineSplitter()
    data = b"one\n" + b"x" * (3 * LINE_MAX) + b"Client victim closed its connection.\ntwo\nthree"
    lines = []
    for at in range(0, len(data), 4096):  # as the pipe hands it over
        lines += splitter.feed(data[at:at + 4096])
    lines += splitter.close()
    assert lines[0] == b"one" and len(lines[1]) == LINE_MAX and lines[2:] == [b"two", b"three"]
    assert not any(line.startswith(b"Client victim") for line in lines)  # the cut rest is not a line
