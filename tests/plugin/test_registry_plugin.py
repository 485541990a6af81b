"""The Mosquitto registry plugin v2, run for real: Mosquitto 2 + registry_plugin.so, clients over TCP (paho,
mosquitto_pub, hand-built CONNECT packets), the service as a paho client on the control topic and the
registry socket as a bound datagram socket. Nothing waits by sleeping: "no datagram" is checked with a
sentinel attempt (an unknown name while unlocked) whose report must come next."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time

import pytest

from broker.mosquitto import plugin_wire as wire

from .conftest import (
    ACCEPTED,
    DEVICE,
    DEVICE_PASSWORD,
    DEVICE_USER,
    NO_CONNACK,
    REFUSED,
    SERVICE,
    SERVICE_USER,
    Client,
    Registry,
    Service,
    account,
    attempt,
    wait_until,
    write_snapshot,
)

OPEN = time.time() + 3600  # a registration window open for the test's duration
_sentinels = itertools.count()


def assert_no_report_since(broker, registry: Registry) -> None:
    """Nothing but presence was reported by earlier attempts: the next attempt report is a fresh sentinel's
    (the window must be open)."""
    name = f"sentinel-{next(_sentinels)}"
    assert attempt(broker.port, "sentinel", name, "pw") == REFUSED[4]
    report = registry.next(wire.Attempt)
    assert report.username == name.encode(), f"unexpected report before the sentinel: {report}"


def state_of(records: list[bytes]) -> tuple[int, int]:
    return len(records), wire.digest_of(records)


# --- 1. accounts from the snapshot ---

@pytest.mark.parametrize("level", [3, 4, 5])
def test_snapshot_account_logs_in_and_wrong_password_is_refused(start_broker, registry, level):
    broker = start_broker()
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD, level=level) == ACCEPTED
    assert attempt(broker.port, "d1", DEVICE_USER, "wrong", level=level) == REFUSED[level]
    assert attempt(broker.port, "d1", DEVICE_USER, None, level=level) == REFUSED[level]
    assert any("loaded 2 accounts" in line for line in broker.plugin_log())


def test_snapshot_account_via_mosquitto_pub(broker, registry):
    ok = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-i", "pub", "-u", DEVICE_USER,
                         "-P", DEVICE_PASSWORD, "-t", "devices/device-1/x", "-m", "x"], capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "5", "-i", "pub",
                          "-u", DEVICE_USER, "-P", "nope", "-t", "t", "-m", "x"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == REFUSED[5] and "Not authorized" in bad.stderr


def test_empty_password_account(start_broker, registry):
    """A missing password is the empty string."""
    broker = start_broker([SERVICE, account("nopw", "")])
    assert attempt(broker.port, "c", "nopw", None) == ACCEPTED
    assert attempt(broker.port, "c", "nopw", b"") == ACCEPTED
    assert attempt(broker.port, "c", "nopw", b"x") == REFUSED[4]


def test_password_is_truncated_at_nul(start_broker, registry):
    broker = start_broker([SERVICE, account("nul", "ab")])
    assert attempt(broker.port, "c", "nul", b"ab\x00cd") == ACCEPTED


def test_bound_client_id(start_broker, registry):
    broker = start_broker([SERVICE, account("bound", "pw", client_id="the-id")])
    assert attempt(broker.port, "the-id", "bound", "pw") == ACCEPTED
    assert attempt(broker.port, "other-id", "bound", "pw") == REFUSED[4]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "trailing", "magic", "duplicate", "empty"])
def test_bad_snapshot_starts_empty_with_one_line(start_broker, registry, short_dir, damage):
    path = short_dir / "snapshot.bin"
    records = write_snapshot(path, [SERVICE, DEVICE])
    data = path.read_bytes()
    if damage == "truncated":
        data = data[:-20]
    elif damage == "flipped":
        data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    elif damage == "trailing":
        data = data[:-8] + b"x" + data[-8:]  # the checksum of the records alone still matches
    elif damage == "magic":
        body = b"CRS1" + data[4:-8]
        data = body + wire.snapshot_checksum(body[:24], wire.digest_of(records)).to_bytes(8, "big")
    elif damage == "duplicate":
        data = wire.snapshot(1, None, [records[1], records[1]])
    else:
        data = b""
    path.write_bytes(data)
    broker = start_broker(snapshot=path)
    lines = [line for line in broker.plugin_log() if "snapshot" in line]
    assert len(lines) == 1 and "refused" in lines[0] and "starting with no accounts" in lines[0], lines
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == REFUSED[4]


def test_missing_snapshot_starts_empty(start_broker, registry, short_dir):
    broker = start_broker(snapshot=short_dir / "nope.bin")
    assert [line for line in broker.plugin_log() if "snapshot" in line and "missing" in line]
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == REFUSED[4]


@pytest.mark.parametrize("content", ["", "abc\n", "00" * 31 + "\n", "zz" * 32])
def test_bad_secret_stops_the_broker_with_one_line(start_broker, short_dir, content):
    broker = start_broker(expect_running=False)
    broker.stop()
    broker.secret_path.write_text(content)
    broker.start(expect_running=False)
    wait_until(lambda: not broker.alive(), message="mosquitto to exit")
    assert [line for line in broker.plugin_log() if "secret file" in line]


def test_large_snapshot_loads_fast(start_broker, registry, short_dir, capsys):
    accounts = [SERVICE] + [wire.Account(f"device-{i:06d}", bytes(32), 0, f"cid-{i}",
                                         ((wire.READ | wire.WRITE, f"devices/device-{i:06d}/#"), (wire.READ, "bc/#")))
                            for i in range(100_000)]
    broker = start_broker(accounts)
    line = next(line for line in broker.plugin_log() if "loaded 100001 accounts" in line)
    ms = float(line.rsplit(" in ", 1)[1].split()[0])
    with capsys.disabled():
        print(f"\n[registry plugin] 100,001 accounts loaded in {ms:.1f} ms")
    assert ms < 1000
    service = Service(broker.port)
    try:
        answer = service.query()
        assert answer.accounts == 100_001
        assert answer.digest == wire.digest_of(a.record() for a in accounts)
    finally:
        service.close()


# --- 2. control messages ---

def test_put_and_delete_through_control(broker, registry, service):
    base = [SERVICE.record(), DEVICE.record()]
    answer = service.query()
    assert (answer.status, answer.state_seq, answer.accounts, answer.digest) == (0, 1, *state_of(base))
    new = account("device-2", "pw2", acls=[(wire.WRITE, "devices/device-2/#")])
    answer = service.send([new.record()], seq=7)
    assert (answer.status, answer.state_seq, answer.accounts, answer.digest) == (0, 7, *state_of([*base, new.record()]))
    assert attempt(broker.port, "d2", "device-2", "pw2") == ACCEPTED
    answer = service.send([wire.delete_record("device-2"), wire.delete_record("nobody")], seq=8)
    assert (answer.status, answer.state_seq, answer.accounts, answer.digest) == (0, 8, *state_of(base))
    assert attempt(broker.port, "d2", "device-2", "pw2") == REFUSED[4]


def test_full_load_with_reset(broker, registry, service, clients):
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok
    other = account("device-3", "pw3")
    answer = service.send([wire.RESET_RECORD, SERVICE.record(), DEVICE.record(), other.record()], seq=20)
    assert (answer.status, answer.accounts, answer.digest) == (0, *state_of([SERVICE.record(), DEVICE.record(),
                                                                               other.record()]))
    # Unchanged accounts keep their sessions through a full load.
    assert device.is_connected() and service.is_connected()
    assert service.query().accounts == 3


def test_changed_password_kicks_the_session(broker, registry, service, clients):
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok
    rekeyed = account(DEVICE_USER, "new-password", acls=DEVICE.acls)
    assert service.send([rekeyed.record()]).status == 0
    device.wait_disconnect()
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == REFUSED[4]
    assert attempt(broker.port, "d1", DEVICE_USER, "new-password") == ACCEPTED


def test_disabled_account_is_refused_and_its_session_kicked(broker, registry, service, clients):
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok
    disabled = wire.Account(DEVICE.username, DEVICE.verifier, wire.DISABLED, "", DEVICE.acls)
    assert service.send([disabled.record()]).status == 0
    device.wait_disconnect()
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == REFUSED[4]
    assert service.send([DEVICE.record()]).status == 0
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED


def test_deleted_account_is_kicked(broker, registry, service, clients):
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.ok
    assert service.send([wire.delete_record(DEVICE_USER)]).accounts == 1
    device.wait_disconnect()


def test_acl_narrowing_stops_deliveries_without_disconnect(broker, registry, service, clients):
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(device)
    assert device.subscribe("broadcast/#") == [0]
    sender = account("sender", "pw", acls=[(wire.WRITE, "broadcast/#")])
    assert service.send([sender.record()]).status == 0
    pub = Client(broker.port, "sender", "pw", client_id="s1")
    clients.append(pub)
    pub.publish("broadcast/a", b"one")
    assert device.message() == ("broadcast/a", b"one", False)
    narrowed = account(DEVICE_USER, DEVICE_PASSWORD, acls=[(wire.READ | wire.WRITE, "devices/device-1/#")])
    assert service.send([narrowed.record()]).status == 0
    pub.publish("broadcast/a", b"two")
    # A marker the device may still receive proves "two" was not delivered (same publisher, in order).
    marker = account("sender", "pw", acls=[(wire.WRITE, "broadcast/#"), (wire.WRITE, "devices/device-1/#")])
    assert service.send([marker.record()]).status == 0
    assert device.subscribe("devices/device-1/#") == [0]
    pub.publish("devices/device-1/marker", b"m")
    assert device.message() == ("devices/device-1/marker", b"m", False)
    assert device.messages.empty()
    assert device.is_connected()
    assert device.disconnected.empty()


def test_access_bits_publish_subscribe_receive(start_broker, registry, clients):
    reader = account("reader", "pw", acls=[(wire.READ, "r/#")])
    writer = account("writer", "pw", acls=[(wire.WRITE, "r/#"), (wire.WRITE, "w/#")])
    both = account("both", "pw", acls=[(wire.READ | wire.WRITE, "b/+/x")])
    broker = start_broker([SERVICE, reader, writer, both])
    r = Client(broker.port, "reader", "pw", client_id="r")
    w = Client(broker.port, "writer", "pw", client_id="w")
    b = Client(broker.port, "both", "pw", client_id="b")
    clients.extend([r, w, b])
    assert r.subscribe("r/#") == [0]
    assert r.subscribe("r/a/+") == [0]      # covered by r/#
    assert r.subscribe("w/#") == [128]      # not readable
    assert w.subscribe("r/#") == [128]      # write only
    assert b.subscribe("b/1/x") == [0]
    assert b.subscribe("b/#") == [128]      # wider than b/+/x
    assert b.subscribe("#") == [128]
    w.publish("r/a/b", b"1")
    assert r.message()[:2] == ("r/a/b", b"1")
    # The writer may not publish outside its patterns: the broker drops it silently (3.1.1).
    r.publish("r/x", b"reader-cannot-write")
    b.publish("b/1/x", b"self")
    assert b.message() == ("b/1/x", b"self", False)
    w.publish("r/z", b"2")
    assert r.message()[:2] == ("r/z", b"2")
    while (m := r.message(0.2)) is not None:
        assert m[1] != b"reader-cannot-write"


def test_retained_messages_are_checked_on_delivery(start_broker, registry, clients):
    writer = account("writer", "pw", acls=[(wire.WRITE, "ret/#")])
    reader = account("reader", "pw", acls=[(wire.READ, "ret/open"), (wire.READ, "ret/+")])
    narrow = account("narrow", "pw", acls=[(wire.READ, "ret/open")])
    broker = start_broker([SERVICE, writer, reader, narrow])
    w = Client(broker.port, "writer", "pw", client_id="w")
    clients.append(w)
    w.publish("ret/open", b"o", retain=True)
    w.publish("ret/closed", b"c", retain=True)
    r = Client(broker.port, "reader", "pw", client_id="r")
    n = Client(broker.port, "narrow", "pw", client_id="n")
    clients.extend([r, n])
    assert r.subscribe("ret/+") == [0]
    assert sorted([r.message(), r.message()]) == [("ret/closed", b"c", True), ("ret/open", b"o", True)]
    assert n.subscribe("ret/open") == [0]
    assert n.message() == ("ret/open", b"o", True)
    assert n.subscribe("ret/+") == [128]


def test_wills_are_checked(start_broker, registry, clients):
    dev = account("willer", "pw", acls=[(wire.WRITE, "wills/willer")])
    watcher = account("watcher", "pw", acls=[(wire.READ, "wills/#")])
    broker = start_broker([SERVICE, dev, watcher])
    w = Client(broker.port, "watcher", "pw", client_id="watch")
    clients.append(w)
    assert w.subscribe("wills/#") == [0]
    for topic, payload in [("wills/other", b"forbidden"), ("wills/willer", b"allowed")]:
        client = Client(broker.port, "willer", "pw", client_id="willer", will=(topic, payload))
        assert client.ok
        client.c.loop_stop()
        client.c.socket().close()  # an unclean end: the Will is published (if allowed)
    assert w.message() == ("wills/willer", b"allowed", False)
    assert w.message(0.3) is None


def test_dollar_topics_only_for_admin_and_service(start_broker, registry, clients):
    admin = account("admin", "pw", wire.ADMIN, acls=[(wire.READ, "$SYS/#"), (wire.READ, "#")])
    plain = account("plain", "pw", acls=[(wire.READ, "#"), (wire.READ, "$SYS/#")])
    broker = start_broker([SERVICE, admin, plain])
    a = Client(broker.port, "admin", "pw", client_id="a")
    p = Client(broker.port, "plain", "pw", client_id="p")
    clients.extend([a, p])
    assert a.subscribe("$SYS/broker/uptime") == [0]
    assert p.subscribe("$SYS/broker/uptime") == [128]
    assert p.subscribe("$SYS/#") == [128]
    assert p.subscribe(wire.RESPONSE_TOPIC) == [128]
    assert a.subscribe(wire.RESPONSE_TOPIC) == [128]  # the response is for service accounts only
    assert a.subscribe("#") == [0]
    assert a.message(15)[0].startswith("$SYS/")  # $SYS/broker/uptime is published every sys_interval
    service = Service(broker.port)
    clients.append(service)
    assert service.suback == [1]                      # the response: service accounts only, no pattern needed
    assert service.subscribe(wire.CONTROL_TOPIC) == [128]  # the control topic is write-only
    assert service.subscribe("$registry/#") == [0]    # its own $ pattern
    assert service.subscribe("$SYS/#") == [128]       # no pattern for it


def test_non_service_control_message_is_refused_and_changes_nothing(broker, registry, service, clients):
    before = service.query()
    admin = account("admin", "pw", wire.ADMIN, acls=[(wire.WRITE, "$CONTROL/#"), (wire.READ | wire.WRITE, "#")])
    assert service.send([admin.record()]).status == 0
    after_put = service.query()
    for name, pw in [(DEVICE_USER, DEVICE_PASSWORD), ("admin", "pw")]:
        other = Client(broker.port, name, pw, client_id=f"x-{name}")
        clients.append(other)
        other.publish(wire.CONTROL_TOPIC, wire.control_message(99, [wire.RESET_RECORD]))
        assert other.subscribe(wire.RESPONSE_TOPIC) == [128]
    assert service.answer(0.5) is None
    now = service.query()
    assert (now.state_seq, now.accounts, now.digest) == (after_put.state_seq, after_put.accounts, after_put.digest)
    assert before.accounts + 1 == after_put.accounts


@pytest.mark.parametrize("payload", [
    b"", b"CRC2", b"CRC1" + bytes(8), b"CRC2" + bytes(8) + b"X",
    wire.control_message(5, [wire.delete_record("a"), b"P\x00\x00"]),
    wire.control_message(5, [account("x", "y").record()[:-1]]),
    wire.control_message(5, [wire.Account("bad\0name", bytes(32)).record()]),
    wire.control_message(5, [wire.Account("f", bytes(32), 8).record()]),
    wire.control_message(5, [wire.Account("f", bytes(32), 16).record()]),  # no such flag
    wire.control_message(5, [wire.Account("a", bytes(32), acls=((1, "a/#/b"),)).record()]),
    wire.control_message(5, [wire.Account("a", bytes(32), acls=((4, "a"),)).record()]),
    wire.control_message(5, [wire.Account("a", bytes(32), acls=((1, "a+"),)).record()]),
    wire.control_message(5, [wire.Account("u" * 1025, bytes(32)).record()]),
    wire.control_message(5, [wire.RESET_RECORD, b"W\x00"]),
], ids=lambda p: p[:40].hex())
def test_malformed_control_message_is_refused_and_state_kept(broker, registry, service, payload):
    before = service.query()
    service.send_raw(payload)
    answer = service.answer()
    assert answer.status == 1
    assert (answer.state_seq, answer.accounts, answer.digest) == (before.state_seq, before.accounts, before.digest)
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED
    lines = [line for line in broker.plugin_log() if "control message refused" in line]
    assert len(lines) == 1
    service.send_raw(payload)  # a second one within the minute: answered, not logged again
    assert service.answer().status == 1
    assert len([line for line in broker.plugin_log() if "control message refused" in line]) == 1


def test_window_record_opens_and_closes(broker, registry, service):
    assert attempt(broker.port, "c", "stranger", "pw") == REFUSED[4]  # locked: counted, not reported
    assert registry.next(wire.Knocks).total == 1
    assert service.send([wire.window_record(time.time() + 60)]).status == 0
    assert attempt(broker.port, "c", "stranger", "pw") == REFUSED[4]
    assert registry.next(wire.Attempt).username == b"stranger"
    assert service.send([wire.window_record(None)]).status == 0
    assert attempt(broker.port, "c", "stranger2", "pw") == REFUSED[4]
    assert registry.next(wire.Knocks).names == ((b"stranger2", 1),)


# --- 3. reports ---

def test_locked_knocks_arrive_as_one_report(broker, registry):
    for _ in range(5):
        assert attempt(broker.port, "k", "knocker", "pw") == REFUSED[4]
    assert attempt(broker.port, "k", "other", "pw") == REFUSED[4]
    knocks = registry.next(wire.Knocks)
    assert knocks.total == 6 and dict(knocks.names) == {b"knocker": 5, b"other": 1}


def _knocks_until(registry: Registry, n: int) -> list[wire.Knocks]:
    reports, total = [], 0
    while total < n:
        reports.append(registry.next(wire.Knocks, timeout=10))
        total += reports[-1].total
    assert total == n
    return reports


def test_knock_report_caps_distinct_names(broker, registry):
    """1,024 names at most; total counts every attempt."""
    n = 1100
    for i in range(n):
        assert attempt(broker.port, "k", f"knocker-{i:05d}", "pw") == REFUSED[4]
    reports = _knocks_until(registry, n)
    assert all(len(r.names) <= 1024 for r in reports)
    if len(reports) == 1:  # the usual case: 1,100 refusals take well under the report's second
        assert reports[0].names[:2] == ((b"knocker-00000", 1), (b"knocker-00001", 1))
        assert len(reports[0].names) == 1024


def test_knock_report_fits_in_32_kib(broker, registry):
    n = 100
    for i in range(n):
        assert attempt(broker.port, "k", f"{i:04d}" + "x" * 1020, "pw") == REFUSED[4]
    raw = registry.raw()
    knocks = wire.parse_datagram(raw)
    while isinstance(knocks, wire.Presence):
        raw = registry.raw()
        knocks = wire.parse_datagram(raw)
    assert len(raw) <= 32 * 1024
    assert 0 < len(knocks.names) < n
    rest = _knocks_until(registry, n - knocks.total) if knocks.total < n else []
    assert knocks.total + sum(r.total for r in rest) == n


@pytest.mark.parametrize("level", [3, 4, 5])
def test_unlocked_unknown_name_is_reported_kind_0(start_broker, registry, level):
    broker = start_broker(unlocked_until=OPEN)
    assert attempt(broker.port, "new-cid", "new-device", "s3cret pw", level=level) == REFUSED[level]
    report = registry.next(wire.Attempt)
    assert (report.protocol, report.kind, report.username, report.password, report.client_id, report.peer) == \
        (level, wire.UNKNOWN, b"new-device", b"s3cret pw", b"new-cid", b"127.0.0.1")
    assert_no_report_since(broker, registry)


def test_unlocked_wrong_password_is_a_rekey(start_broker, registry):
    admin = account("admin", "pw", wire.ADMIN)
    broker = start_broker([SERVICE, DEVICE, admin], unlocked_until=OPEN)
    assert attempt(broker.port, "d1", DEVICE_USER, "another-password") == REFUSED[4]
    report = registry.next(wire.Attempt)
    assert (report.kind, report.username, report.password) == (wire.REKEY, DEVICE_USER.encode(), b"another-password")
    # Admin and service accounts are never re-keyed this way.
    assert attempt(broker.port, "a", "admin", "guess") == REFUSED[4]
    assert attempt(broker.port, "s", SERVICE_USER, "guess") == REFUSED[4]
    assert_no_report_since(broker, registry)


def test_locked_wrong_password_is_not_reported(broker, registry):
    assert attempt(broker.port, "d1", DEVICE_USER, "another-password") == REFUSED[4]
    assert attempt(broker.port, "k", "knocker", "pw") == REFUSED[4]
    assert registry.next(wire.Knocks).names == ((b"knocker", 1),)


def test_presence_logins_and_disconnects(broker, registry, clients):
    first = registry.next(wire.Presence)
    assert first.reset and first.changes == ()  # the first report after start, even with nothing in it
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    assert device.ok
    assert registry.changes(1) == [(True, DEVICE_USER.encode(), b"d1")]
    device.close()
    assert registry.changes(1) == [(False, DEVICE_USER.encode(), b"d1")]
    # Refused logins and unknown names are not presence.
    assert attempt(broker.port, "d1", DEVICE_USER, "wrong") == REFUSED[4]
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED
    changes = registry.changes(2)
    assert changes == [(True, DEVICE_USER.encode(), b"d1"), (False, DEVICE_USER.encode(), b"d1")]
    assert not any(p.reset for p in registry.presence)


def test_presence_batches_many_logins(start_broker, registry, clients):
    accounts = [SERVICE] + [account(f"dev-{i}", "pw") for i in range(40)]
    broker = start_broker(accounts)
    for i in range(40):
        assert attempt(broker.port, f"c{i}", f"dev-{i}", "pw") == ACCEPTED
    changes = registry.changes(80)
    assert sorted(c for c in changes if c[0]) == sorted((True, f"dev-{i}".encode(), f"c{i}".encode())
                                                       for i in range(40))
    assert len(registry.presence) == 0


# --- 4. client-id ownership ---

def test_another_account_cannot_take_a_live_client_id(start_broker, registry, clients):
    other = account("intruder", "pw")
    broker = start_broker([SERVICE, DEVICE, other])
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="shared-id")
    clients.append(device)
    assert device.ok
    assert attempt(broker.port, "shared-id", "intruder", "pw") == REFUSED[4]
    assert device.is_connected() and device.disconnected.empty()
    assert device.subscribe("devices/device-1/#") == [0]
    # The same account reconnecting with its own client id takes its session over, as MQTT says.
    assert attempt(broker.port, "shared-id", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED
    device.wait_disconnect()
    # Once nobody holds it (clean session), anyone may use it.
    assert attempt(broker.port, "shared-id", "intruder", "pw") == ACCEPTED


def test_persistent_claim_survives_disconnect_while_the_account_exists(start_broker, registry, clients):
    other = account("intruder", "pw")
    broker = start_broker([SERVICE, DEVICE, other])
    service = Service(broker.port)
    clients.append(service)
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="keep-id", clean=False)
    assert device.ok
    device.close()
    wait_until(lambda: "Client keep-id disconnected" in broker.log(), message="the device's disconnect")
    assert attempt(broker.port, "keep-id", "intruder", "pw", level=4) == REFUSED[4]
    assert attempt(broker.port, "keep-id", DEVICE_USER, DEVICE_PASSWORD, level=4) == ACCEPTED
    assert service.send([wire.delete_record(DEVICE_USER)]).status == 0
    assert attempt(broker.port, "keep-id", "intruder", "pw") == ACCEPTED


# --- 5. hostile input ---

@pytest.mark.parametrize("size", [60 * 1024, 65535])
def test_huge_username_refused_without_report(start_broker, registry, size):
    broker = start_broker(unlocked_until=OPEN)
    assert attempt(broker.port, "huge", b"u" * size, b"pw") == REFUSED[4]
    assert broker.alive()
    assert_no_report_since(broker, registry)


def test_huge_password_and_client_id_refused_without_report(start_broker, registry):
    broker = start_broker(unlocked_until=OPEN)
    assert attempt(broker.port, "c", "dev", b"\xff" * 65535) == REFUSED[4]
    assert attempt(broker.port, b"c" * 65535, "dev", "pw") == REFUSED[4]
    assert attempt(broker.port, b"c" * 2000, DEVICE_USER, DEVICE_PASSWORD) == REFUSED[4]  # over the client id cap
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("field, cap", [("username", 1024), ("password", 4096), ("client_id", 1024)])
def test_field_caps(start_broker, registry, field, cap):
    broker = start_broker(unlocked_until=OPEN)

    def fields(n):
        values = {"client_id": b"cid", "username": b"dev", "password": b"pw"}
        values[field] = b"x" * n
        return values

    at_cap = fields(cap)
    assert attempt(broker.port, at_cap["client_id"], at_cap["username"], at_cap["password"]) == REFUSED[4]
    assert getattr(registry.next(wire.Attempt), field) == b"x" * cap
    over = fields(cap + 1)
    assert attempt(broker.port, over["client_id"], over["username"], over["password"]) == REFUSED[4]
    assert_no_report_since(broker, registry)


def test_password_with_nul_and_invalid_utf8_reported_raw(start_broker, registry):
    broker = start_broker(unlocked_until=OPEN)
    assert attempt(broker.port, "nul", "dev", b"ab\x00cd") == REFUSED[4]
    assert registry.next(wire.Attempt).password == b"ab"
    raw = b"\xff\xfe\xc0\x80\xed\xa0\x80 end"
    assert attempt(broker.port, "bin", "dev", raw) == REFUSED[4]
    assert registry.next(wire.Attempt).password == raw


@pytest.mark.parametrize("username", [b"\xff\xfe", b"a\x00b", b"a\x01b"], ids=["invalid-utf8", "nul", "control"])
@pytest.mark.parametrize("level", [3, 4, 5])
def test_malformed_username_never_reaches_the_plugin(start_broker, registry, username, level):
    broker = start_broker(unlocked_until=OPEN)
    expected = NO_CONNACK if level in (4, 5) else REFUSED[3]
    assert attempt(broker.port, "bad", username, b"pw", level=level) == expected
    assert broker.alive()
    assert_no_report_since(broker, registry)


@pytest.mark.parametrize("username", [None, b""], ids=["no-username", "empty-username"])
def test_no_username_is_refused_without_report(start_broker, registry, username):
    broker = start_broker(unlocked_until=OPEN)
    assert attempt(broker.port, "anon", username, None) == REFUSED[4]
    assert_no_report_since(broker, registry)


def test_log_lines_escape_device_strings(start_broker, registry, clients):
    other = account("intr\u00e9der", "pw")
    broker = start_broker([SERVICE, DEVICE, other])
    device = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="cid\u00e9")
    clients.append(device)
    assert attempt(broker.port, "cid\u00e9".encode(), "intr\u00e9der".encode(), "pw") == REFUSED[4]
    for line in broker.plugin_log():
        assert all(32 <= ord(ch) < 127 for ch in line), line
    assert DEVICE_PASSWORD not in broker.log()
    assert any("\\xc3\\xa9" in line for line in broker.plugin_log())


# --- 6. never blocks ---

def _flood(broker, capsys, label: str, count: int = 200) -> None:
    start = time.monotonic()
    answers = [attempt(broker.port, f"flood{i}", f"flood-{i}", "flood-password-Zq7") for i in range(count)]
    elapsed = time.monotonic() - start
    assert answers == [REFUSED[4]] * count
    with capsys.disabled():
        print(f"\n[registry plugin] {label}: {count} refusals in {elapsed:.3f}s = {count / elapsed:.0f}/s")
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED


def _send_warnings(broker, reason: str) -> list[str]:
    return [line for line in broker.plugin_log() if "cannot reach" in line and reason in line]


def test_flood_without_receiver(start_broker, short_dir, capsys):
    broker = start_broker(unlocked_until=OPEN)  # nobody bound at registry.sock
    _flood(broker, capsys, "no receiver")
    assert len(wait_until(lambda: _send_warnings(broker, "No such file or directory"), message="ENOENT warning")) == 1
    assert "flood-password-Zq7" not in broker.log()
    registry = Registry(short_dir / "registry.sock")  # the service comes up later: found without a restart
    try:
        assert attempt(broker.port, "late", "late-device", "pw") == REFUSED[4]
        assert registry.next(wire.Attempt).username == b"late-device"
    finally:
        registry.close()


def _reports_after_filler(registry: Registry, count: int, timeout: float = 10.0) -> list[bytes]:
    """The next ``count`` attempt reports (their usernames), skipping the junk that filled the socket and
    presence reports."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        data = registry.raw(max(0.01, deadline - time.monotonic()))
        if data.startswith(b"filler"):
            continue
        item = wire.parse_datagram(data)
        if isinstance(item, wire.Attempt):
            got.append(item.username)
    return got


def test_flood_with_a_receiver_that_falls_behind(start_broker, short_dir, capsys):
    """The service's socket is full (Linux queues 10 datagrams): the plugin keeps the attempts, in order, and
    they reach the service once it reads again (a fleet powered on together is recorded whole: issue 16);
    the broker answers as fast as ever and logs no password."""
    registry = Registry(short_dir / "registry.sock", rcvbuf=4096)
    try:
        broker = start_broker(unlocked_until=OPEN)
        assert registry.fill() > 0
        _flood(broker, capsys, "full receiver")
        assert "flood-password-Zq7" not in broker.log()
        assert _reports_after_filler(registry, 200) == [f"flood-{i}".encode() for i in range(200)]
        assert_no_report_since(broker, registry)
    finally:
        registry.close()


def test_flood_with_a_receiver_that_never_reads_is_bounded(start_broker, short_dir, capsys):
    """What waits is bounded (1,024 attempts): beyond, attempts are dropped with one warning."""
    registry = Registry(short_dir / "registry.sock", rcvbuf=4096)
    try:
        broker = start_broker(unlocked_until=OPEN)
        assert registry.fill() > 0
        _flood(broker, capsys, "receiver that never reads", count=1100)
        try:
            assert len(wait_until(lambda: _send_warnings(broker, "Resource temporarily unavailable"),
                                  message="EAGAIN warning")) == 1
        except AssertionError:
            raise AssertionError("\n".join(broker.plugin_log())) from None
        assert "flood-password-Zq7" not in broker.log()
        assert _reports_after_filler(registry, 1024) == [f"flood-{i}".encode() for i in range(1024)]
        assert_no_report_since(broker, registry)
    finally:
        registry.close()


@pytest.mark.parametrize("option, warning", [(None, "plugin_opt_socket not set"),
                                             ("relative/registry.sock", "must be an absolute path"),
                                             ("/" + "x" * 120, "is longer than 107 bytes")])
def test_unusable_socket_option_still_works(start_broker, registry, option, warning):
    broker = start_broker(socket_option=option, unlocked_until=OPEN)
    assert any(warning in line for line in broker.plugin_log())
    assert attempt(broker.port, "c", "dev", "pw") == REFUSED[4]
    assert attempt(broker.port, "d1", DEVICE_USER, DEVICE_PASSWORD) == ACCEPTED
    assert registry.pending() is None


def test_presence_of_a_takeover_is_one_login_more(broker, registry, clients):
    """The same account and client id logging in again: its login is reported, the old session's end is not
    (presence is a set of (username, client id))."""
    registry.next(wire.Presence)  # the reset report
    first = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(first)
    assert registry.changes(1) == [(True, DEVICE_USER.encode(), b"d1")]
    second = Client(broker.port, DEVICE_USER, DEVICE_PASSWORD, client_id="d1")
    clients.append(second)
    first.wait_disconnect()
    assert registry.changes(1) == [(True, DEVICE_USER.encode(), b"d1")]
    second.close()
    assert registry.changes(1) == [(False, DEVICE_USER.encode(), b"d1")]


def test_full_load_without_an_account_kicks_it_and_logs_a_few_names(start_broker, registry, clients):
    accounts = [SERVICE] + [account(f"dev-{i}", "pw") for i in range(15)]
    broker = start_broker(accounts)
    service = Service(broker.port)
    clients.append(service)
    devices = [Client(broker.port, f"dev-{i}", "pw", client_id=f"c{i}") for i in range(15)]
    clients.extend(devices)
    assert all(d.ok for d in devices)
    answer = service.send([wire.RESET_RECORD, SERVICE.record()])
    assert (answer.accounts, answer.digest) == state_of([SERVICE.record()])
    for device in devices:
        device.wait_disconnect()
    assert service.is_connected()
    lines = wait_until(lambda: [line for line in broker.plugin_log() if "more accounts" in line], message="summary")
    assert "5 more accounts" in lines[0]
    assert len([line for line in broker.plugin_log() if "disconnecting the sessions of" in line]) == 10


def test_sighup_keeps_the_state(broker, registry, service, clients):
    """Mosquitto 2.0.11 does not re-initialise v5 plugins on a reload: accounts put by control survive it."""
    extra = account("device-9", "pw9")
    put = service.send([extra.record()], seq=42)
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "Reloading config" in broker.log(), message="the reload")
    assert attempt(broker.port, "d9", "device-9", "pw9") == ACCEPTED
    now = service.query()
    assert (now.state_seq, now.accounts, now.digest) == (42, put.accounts, put.digest)
