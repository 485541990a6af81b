"""Presence rows: batches from the server, only for users, reset when the broker is new, unknown without a
server watching."""

from __future__ import annotations


def alive(reg) -> None:
    reg.note_applied(reg.last_event_id())  # what a running server's relay notes every 2 s


def test_unknown_without_a_watching_server(reg, clock):
    reg.add_user("sensor-1", "secret-1")
    snap = reg.presence()
    assert not snap.watched and snap.why_not == "no server is running on this registry"
    p = snap.of("sensor-1", reg.user("sensor-1").created_at)
    assert p.online is None and p.sessions is None and p.ever_connected is None

    reg.watch_presence(None)  # attached to the site's own Mosquitto
    alive(reg)
    snap = reg.presence()
    assert not snap.watched and "site's own broker" in snap.why_not


def test_batches_record_users_only(reg, clock):
    reg.watch_presence("mosquitto log")
    clock.advance(10)
    reg.add_user("sensor-1", "secret-1")
    reg.add_user("sensor-2", "secret-2")
    alive(reg)
    t = clock()
    reg.record_presence({"sensor-1": (2, t, None), "client-registry-service": (1, t, None), "ghost": (1, t, None)})
    snap = reg.presence()
    assert snap.watched
    assert set(snap.rows) == {"sensor-1"}  # not a user: dropped
    one = snap.of("sensor-1", reg.user("sensor-1").created_at)
    assert (one.online, one.sessions, one.last_connected, one.ever_connected) == (True, 2, t, True)
    two = snap.of("sensor-2", reg.user("sensor-2").created_at)
    assert (two.online, two.last_connected, two.ever_connected) == (False, None, False)  # "never"

    clock.advance(60)
    alive(reg)
    reg.record_presence({"sensor-1": (0, None, clock())})  # a time None keeps the stored one
    one = reg.presence().of("sensor-1", 0)
    assert (one.online, one.last_connected, one.last_disconnected) == (False, t, clock())


def test_reset_when_the_broker_restarts_or_the_server_starts(reg, clock):
    reg.watch_presence("mosquitto log")
    reg.add_user("sensor-1", "secret-1")
    alive(reg)
    reg.record_presence({"sensor-1": (1, clock(), None)})
    clock.advance(5)
    reg.record_presence({}, reset_at=clock())
    row = reg.presence().rows["sensor-1"]
    assert row[0] == 0 and row[2] == clock()

    reg.record_presence({"sensor-1": (1, clock(), None)})
    reg.watch_presence("mosquitto log")  # a new server: sessions it did not see end are gone
    assert reg.presence().rows["sensor-1"][0] == 0


def test_a_user_created_before_watching_began_is_not_never(reg, clock):
    reg.add_user("old-device", "secret-1")
    clock.advance(10)
    reg.watch_presence("mosquitto log")
    alive(reg)
    p = reg.presence().of("old-device", reg.user("old-device").created_at)
    assert p.online is False and p.ever_connected is None  # may have connected before: unknown


def test_removing_a_user_forgets_its_presence(reg, clock):
    reg.watch_presence("mosquitto log")
    reg.add_user("sensor-1", "secret-1")
    reg.record_presence({"sensor-1": (1, clock(), None)})
    reg.remove_user("sensor-1")
    reg.add_user("sensor-1", "secret-1")
    assert "sensor-1" not in reg.presence().rows
