"""Where the broker's hot paths run: one Registry.login per uncached CONNECT, in the argon2 executor; cached
credentials and permissions answered without it; abandoned CONNECTs skipped; the relay woken by local writes.
Behaviour only (call counts, thread names, what was recorded); the costs are measured in bench/."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

from broker.amqtt_fixes import ConnectGate, GateSession
from tests.broker import mqtt_raw
from tests.broker.clients import Paho
from tests.broker.conftest import ServerThread


def _spy(st: ServerThread, name: str) -> list[str]:
    """Record the thread of every call of st.reg.<name> (the Registry the server uses)."""
    threads: list[str] = []
    real = getattr(st.reg, name)

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    setattr(st.reg, name, spy)
    return threads


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _connack(port: int, client_id: str, username: str, password: str) -> int | None:
    sock = mqtt_raw.open_socket(port)
    try:
        sock.sendall(mqtt_raw.connect(client_id, username, password))
        return mqtt_raw.read_connack(sock)
    finally:
        sock.close()


def test_gate_hands_the_plugins_a_light_session_without_the_password_in_its_repr():
    raw = mqtt_raw.connect("cid-1", "sensor-1", "s3cret-pw", clean=False)
    session = asyncio.run(ConnectGate(None)._parse(raw, ("10.0.0.9", 4242), lambda: True))
    assert type(session) is GateSession
    assert (session.client_id, session.clean_session, session.username, session.password,
            session.remote_address, session.remote_port) == ("cid-1", False, "sensor-1", "s3cret-pw", "10.0.0.9", 4242)
    assert session.gone() is True and "s3cret-pw" not in repr(session)


def test_logins_run_in_the_argon2_executor_once_then_from_the_cache(db_path, admin_reg):
    admin_reg.add_user("dev", "dev-pw", actor="op")
    admin_reg.permit("dev", "sensors/#", "readWrite", actor="op")
    st = ServerThread(db_path).start()
    try:
        assert st.srv._argon2_pool._max_workers == os.cpu_count()
        logins, authorizations = _spy(st, "login"), _spy(st, "authorize")
        assert _connack(st.mqtt_port, "c1", "dev", "dev-pw") == 0
        assert logins and all(name.startswith("cr-argon2") for name in logins) and len(logins) == 1
        assert _connack(st.mqtt_port, "c2", "dev", "dev-pw") == 0
        assert len(logins) == 1, "a cached login must not reach the argon2 executor"
        assert _connack(st.mqtt_port, "c3", "dev", "wrong-pw") == 5
        assert len(logins) == 2, "a wrong password pays the full check even when the user is cached"

        client = Paho(st.mqtt_port, "dev", "dev-pw", client_id="c4").connect()
        try:
            assert client.subscribe("sensors/#") == [1]
            assert client.subscribe("sensors/a/#") == [1]
            client.publish("sensors/a/t", b"21")
            assert client.next_message(timeout=5) == ("sensors/a/t", b"21")
        finally:
            client.close()
        # Only the first permission check read the database (in a worker thread); the rest hit the cache.
        assert len(authorizations) == 1 and not authorizations[0].startswith("cr-argon2")
    finally:
        st.stop()


def test_a_connect_abandoned_while_queued_is_not_checked(db_path, admin_reg):
    admin_reg.unlock(300, actor="op")
    st = ServerThread(db_path).start()
    release = threading.Event()
    try:
        logins = _spy(st, "login")
        pool = st.srv._argon2_pool
        busy = [pool.submit(release.wait, 30) for _ in range(pool._max_workers)]  # every argon2 thread taken
        sock = mqtt_raw.open_socket(st.mqtt_port)
        sock.sendall(mqtt_raw.connect("cid-gone", "sensor-gone", "sensor-pw"))
        time.sleep(0.3)  # the gate reads the CONNECT and queues its check behind the busy threads
        sock.close()
        time.sleep(0.3)  # the server's loop sees the connection closed
        release.set()
        assert all(f.result(10) for f in busy)
        assert _wait_for(lambda: any("mqtt drop user='sensor-gone'" in line for line in st.lines))
        assert logins == [] and admin_reg.status().pending == 0

        # The same device, still connected when its turn comes, is checked and recorded.
        assert _connack(st.mqtt_port, "cid-gone", "sensor-gone", "sensor-pw") == 5
        assert len(logins) == 1 and admin_reg.status().pending == 1
    finally:
        release.set()
        st.stop()


def test_the_relay_is_woken_by_a_local_registration(db_path, admin_reg):
    """With a 60 s poll the relay would sit on the event for a minute; the wake publishes it at once."""
    st = ServerThread(db_path, relay_interval=60.0).start()
    try:
        admin = Paho(st.mqtt_port, st.console.username, st.console.password, client_id="console-t").connect()
        try:
            assert admin.subscribe("$registry/#") == [1]
            admin_reg.unlock(300, actor="op")  # another process: seen with the next read, not published yet
            assert _connack(st.mqtt_port, "cid-7", "sensor-7", "sensor-pw") == 5
            kinds = []
            deadline = time.monotonic() + 10
            while "request.created" not in kinds and time.monotonic() < deadline:
                got = admin.next_message(timeout=1)
                if got is not None:
                    kinds.append(json.loads(got[1])["kind"])
            assert kinds == ["registry.unlocked", "request.created"]
        finally:
            admin.close()
    finally:
        st.stop()


def test_argon2_threads_yield_to_the_event_loop(db_path, admin_reg):
    """argon2 is bulk work: its threads run at a lower priority than the loop (and an embedding dashboard)."""
    st = ServerThread(db_path).start()
    try:
        here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def priority():
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        pool = st.srv._argon2_pool
        assert {pool.submit(priority).result(10) for _ in range(4)} == {min(here + 10, 19)}
    finally:
        st.stop()
