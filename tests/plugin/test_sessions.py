"""Client-id ownership and presence under a random sequence of logins, takeovers and disconnects by several
accounts sharing a few client ids, against a model of the contract (BASIC_AUTH step 4, presence as a set)."""

from __future__ import annotations

import random
import socket

import pytest

from broker.mosquitto import plugin_wire as wire

from .conftest import ACCEPTED, REFUSED, SERVICE, Service, account, connect_packet

ACCOUNTS = [f"acct-{i}" for i in range(4)]
CLIENT_IDS = [f"cid-{i}" for i in range(5)]


def _eof(sock: socket.socket, timeout: float = 5.0) -> None:
    """Wait until the broker closes this connection (after MOSQ_EVT_DISCONNECT has run)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError("the broker did not close the connection") from None


def _connect(port: int, cid: str, user: str, password: str, clean: bool) -> tuple[int, socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(connect_packet(cid.encode(), user.encode(), password.encode(), clean=clean))
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        assert chunk, "no CONNACK"
        data += chunk
    return data[3], sock


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_logins_match_the_model(start_broker, registry, seed):
    rng = random.Random(seed)
    broker = start_broker([SERVICE] + [account(name, "pw") for name in ACCOUNTS])
    assert registry.next(wire.Presence).reset
    service = Service(broker.port)
    assert registry.changes(1) == [(True, b"registry-service", b"registry-service")]
    exists = set(ACCOUNTS)
    live: dict[str, tuple[str, bool, socket.socket]] = {}   # client id -> (account, clean, connection)
    persisted: dict[str, str] = {}                          # client id -> account of an offline persistent session
    expected: list[list[tuple[bool, bytes, bytes]]] = []  # segments: a kick's disconnects come in any order
    seen = {"refused by a live owner": 0, "refused by a persistent owner": 0, "takeover": 0,
            "stale claim taken": 0, "kick": 0}
    try:
        for _ in range(300):
            op = rng.random()
            if op < 0.08:  # the service deletes an account (its sessions go) or puts it back
                user = rng.choice(ACCOUNTS)
                if user in exists:
                    assert service.send([wire.delete_record(user)]).status == 0
                    exists.discard(user)
                    kicked = [cid for cid, (owner, _, _) in live.items() if owner == user]
                    for cid in kicked:
                        _eof(live.pop(cid)[2])
                    if kicked:
                        seen["kick"] += 1
                        expected.append([(False, user.encode(), cid.encode()) for cid in kicked])
                else:
                    assert service.send([account(user, "pw").record()]).status == 0
                    exists.add(user)
                continue
            if op < 0.6 or not live:
                user, cid, clean = rng.choice(ACCOUNTS), rng.choice(CLIENT_IDS), rng.random() < 0.5
                wrong = rng.random() < 0.1 or user not in exists
                owner = live[cid][0] if cid in live else persisted.get(cid)
                if owner is not None and cid not in live and owner not in exists and user in exists:
                    # A persistent claim whose account is gone: dropped when another account presents the
                    # client id (whatever its password).
                    seen["stale claim taken"] += 1
                    persisted.pop(cid)
                    owner = None
                code, sock = _connect(broker.port, cid, user, "bad" if wrong else "pw", clean)
                if wrong or (owner is not None and owner != user):
                    assert code == REFUSED[4], (user, cid, owner)
                    sock.close()
                    if not wrong:
                        seen["refused by a live owner" if cid in live else "refused by a persistent owner"] += 1
                    continue
                assert code == ACCEPTED, (user, cid, owner)
                expected.append([(True, user.encode(), cid.encode())])
                if cid in live:  # the same account takes its session over: the old one is closed, not reported
                    seen["takeover"] += 1
                    _eof(live[cid][2])
                    live[cid][2].close()
                persisted.pop(cid, None)
                live[cid] = (user, clean, sock)
            else:
                cid = rng.choice(sorted(live))
                user, clean, sock = live.pop(cid)
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                _eof(sock)
                sock.close()
                expected.append([(False, user.encode(), cid.encode())])
                if not clean:
                    persisted[cid] = user
        changes = registry.changes(sum(map(len, expected)))
        for segment in expected:
            got, changes = changes[:len(segment)], changes[len(segment):]
            assert sorted(got) == sorted(segment)
        assert broker.alive()
        assert all(seen.values()), seen  # the sequence exercised every rule
    finally:
        service.close()
        for _, _, sock in live.values():
            sock.close()
