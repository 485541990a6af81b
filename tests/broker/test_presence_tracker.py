"""Who is online, counted from the registry plugin's reports (broker/mosquitto/presence.py): logins and
disconnections kept by client id, as Mosquitto keeps sessions, written to the store in batches; and the output
reader of the supervised Mosquitto, whose lines are never taken apart by a long one."""

from __future__ import annotations

import asyncio

from broker.mosquitto import presence as presence_mod
from broker.mosquitto.presence import PresenceTracker
from broker.mosquitto.supervisor import LINE_MAX, LineSplitter


def tracker_with(now: list[float], written: list, ok: bool = True) -> PresenceTracker:
    async def write(changes, reset_at):
        written.append((changes, reset_at))
        return ok

    return PresenceTracker(lambda: now[0], write)


def test_logins_and_disconnections_are_counted_per_user_and_coalesced():
    now, written = [100.0], []
    tracker = tracker_with(now, written)
    for i in range(1000):  # a reconnect storm: one batch, one row per user
        tracker.change(f"sensor-{i % 10}", f"cid-{i}", True)
    assert tracker.count["sensor-3"] == 100
    now[0] = 101.0
    tracker.change("sensor-7", "cid-7", False)
    tracker.change("never-seen", "cid-x", False)  # a disconnection without a login: nobody's session
    asyncio.run(tracker.flush())
    [(changes, reset_at)] = written
    assert reset_at is None and len(changes) == 10 and "never-seen" not in changes
    assert changes["sensor-7"] == (99, 100.0, 101.0)
    assert changes["sensor-3"] == (100, 100.0, None)
    asyncio.run(tracker.flush())
    assert len(written) == 1  # nothing changed since: nothing written


def test_a_takeover_is_one_session_and_the_user_stays_online():
    """The same client id connecting again: the plugin reports the new session's login and no end of the
    old one (Mosquitto took it over). The user was online throughout, with one session."""
    now, written = [100.0], []
    tracker = tracker_with(now, written)
    tracker.change("dev-1", "esp-1", True)
    asyncio.run(tracker.flush())
    now[0] = 105.0
    tracker.change("dev-1", "esp-1", True)  # the new session takes the old one over
    assert tracker.count["dev-1"] == 1
    asyncio.run(tracker.flush())
    assert written[-1] == ({"dev-1": (1, 105.0, 105.0)}, None)  # online, with both times
    now[0] = 110.0
    tracker.change("dev-1", "esp-1", False)
    tracker.change("dev-1", "esp-1", False)  # one more than it had: never below zero
    asyncio.run(tracker.flush())
    assert written[-1] == ({"dev-1": (0, None, 110.0)}, None) and "dev-1" not in tracker.count


def test_a_restart_ends_every_session_and_a_failed_write_is_kept():
    now, written = [100.0], []
    tracker = tracker_with(now, written, ok=False)  # the database is away: nothing is lost meanwhile
    tracker.change("dev-1", "c1", True)
    asyncio.run(tracker.flush())
    now[0] = 101.0
    tracker.change("dev-2", "c2", True)
    asyncio.run(tracker.flush())
    assert written[-1] == ({"dev-1": (1, 100.0, None), "dev-2": (1, 101.0, None)}, None)
    now[0] = 102.0
    tracker.restarted()  # Mosquitto restarted: every session it had is gone, the pending changes too
    asyncio.run(tracker.flush())
    assert written[-1] == ({}, 102.0) and not tracker.count


def test_the_number_of_sessions_counted_is_bounded(monkeypatch, broker_log):
    monkeypatch.setattr(presence_mod, "MAX_SESSIONS", 3)
    now, written, logged = [100.0], [], broker_log
    tracker = tracker_with(now, written)
    for i in range(5):
        tracker.change(f"dev-{i}", f"c{i}", True)
    assert tracker.count == {"dev-0": 1, "dev-1": 1, "dev-2": 1}
    assert len(logged) == 1 and "more than 3 sessions" in logged[0]


def test_output_lines_survive_a_line_longer_than_any_buffer():
    splitter = LineSplitter()
    data = b"one\n" + b"x" * (3 * LINE_MAX) + b"Client victim closed its connection.\ntwo\nthree"
    lines = []
    for at in range(0, len(data), 4096):  # as the pipe hands it over
        lines += splitter.feed(data[at:at + 4096])
    lines += splitter.close()
    assert lines[0] == b"one" and len(lines[1]) == LINE_MAX and lines[2:] == [b"two", b"three"]
    assert not any(line.startswith(b"Client victim") for line in lines)  # the cut rest is not a line
