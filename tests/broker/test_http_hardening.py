"""The HTTP API under a hostile client: slow headers and bodies, held connections, deep JSON, malformed values,
password guessing, and no traceback on stderr. Real servers (Mosquitto under an EmbeddedServer, or `serve`),
real sockets."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.broker.conftest import ServerThread, wait_until

PATH = "/api/client-registry/register"
DEFAULT_HEADER_TIMEOUT = DEFAULT_BODY_TIMEOUT = 5.0  # HTTPLimits' defaults, what `serve` uses
DEFAULT_MAX_CONNECTIONS = 256
LINGER_SLACK = 2.5  # after a 408 the server still reads for a second, so the client sees the answer


def post(port: int, body: bytes | dict, source: str = "127.0.0.1", timeout: float = 10) -> tuple[int, dict, dict]:
    """(status, headers, JSON body), from the given local address (any 127.x.y.z is a different peer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", PATH, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"not JSON": raw[:200]}
        return resp.status, dict(resp.getheaders()), answer
    finally:
        conn.close()


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response (headers and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def drip_until_closed(sock: socket.socket, first: bytes, drip: bytes, every: float, limit: float) -> tuple[float,
                                                                                                           bytes]:
    """Send ``first``, then ``drip`` one byte every ``every`` seconds, until the server closes the connection
    (or ``limit`` seconds pass): (seconds it took, what the server sent)."""
    start = time.monotonic()
    sock.sendall(first)
    sock.settimeout(every)
    received = b""
    for byte in drip * 1000:
        if time.monotonic() - start > limit:
            break
        try:
            chunk = sock.recv(4096)
            if not chunk:
                return time.monotonic() - start, received
            received += chunk
        except TimeoutError:
            pass
        except ConnectionError:
            return time.monotonic() - start, received
        try:
            sock.send(bytes([byte]))
        except OSError:
            return time.monotonic() - start, received
    return time.monotonic() - start, received


def lines_with(server: ServerThread, text: str) -> list[str]:
    return [line for line in list(server.lines) if text in line]


# -- slow clients --------------------------------------------------------------------------------------------
def test_slow_headers_are_cut_within_the_timeout(server):
    port = server.http_port
    slow = socket.create_connection(("127.0.0.1", port))
    silent = socket.create_connection(("127.0.0.1", port))  # connects and sends nothing at all
    try:
        took, answer = drip_until_closed(slow, f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode(),
                                         b"X-Slow: 1234567890\r\n", every=0.2, limit=DEFAULT_HEADER_TIMEOUT + 5)
        assert took < DEFAULT_HEADER_TIMEOUT + 1.5, f"slow headers held the connection for {took:.1f} s"
        assert answer == b""  # cut, not answered: there was no request to answer
        silent.settimeout(5)
        assert silent.recv(100) == b""
    finally:
        slow.close()
        silent.close()
    wait_until(lambda: len(lines_with(server, "no complete request headers within 5 s")) == 2,
               message="one line per cut connection")
    assert len(lines_with(server, "bytes received")) == 1 and len(lines_with(server, "nothing received")) == 1
    status, _, _ = post(port, {"username": "after-slow", "password": "long-enough"})
    assert status == 423  # the server still answers (locked)


def test_slow_body_is_cut_within_the_timeout(server, admin_reg):
    admin_reg.unlock(300, actor="test")
    sock = socket.create_connection(("127.0.0.1", server.http_port))
    try:
        head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: 400\r\n\r\n").encode()
        took, answer = drip_until_closed(sock, head + b'{"username": ', b'"slow-body-dev" ', every=0.2,
                                         limit=DEFAULT_BODY_TIMEOUT + 5)
    finally:
        sock.close()
    assert took < DEFAULT_BODY_TIMEOUT + LINGER_SLACK, f"a slow body held the connection for {took:.1f} s"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "timeout"
    wait_until(lambda: lines_with(server, "408 body not received within 5 s"), message="the 408 line")
    assert admin_reg.requests() == []


# -- held connections -----------------------------------------------------------------------------------------
def test_connections_over_the_limit_are_refused_with_one_line(server, admin_reg):
    port = server.http_port
    held = []
    try:
        for _ in range(DEFAULT_MAX_CONNECTIONS):  # each one served once, then kept open (keep-alive)
            sock = socket.create_connection(("127.0.0.1", port))
            held.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        for _ in range(3):
            extra = socket.create_connection(("127.0.0.1", port))
            try:
                extra.settimeout(5)
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_response(extra)
                assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "busy"
                assert extra.recv(100) == b""  # and closed
            finally:
                extra.close()
        assert len(lines_with(server, "connection limit reached")) == 1
    finally:
        for sock in held:
            sock.close()
    admin_reg.unlock(300, actor="test")

    def served() -> bool:
        try:
            return post(port, {"username": "after-the-flood", "password": "long-enough"}, timeout=5)[0] == 202
        except OSError:
            return False

    wait_until(served, message="a normal request once the held connections are gone")
    assert len(lines_with(server, "connection limit reached")) == 1
    assert [line for line in server.lines if "Traceback" in line] == []


# -- bodies the parser cannot take ----------------------------------------------------------------------------
def test_deep_json_and_huge_numbers_are_400_body_promptly(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
    deep = b"[" * 5000 + b"]" * 5000
    for body in (b'{"username": ' + deep + b', "password": "long-enough"}',
                 b'{"username": "deep-dev", "password": "long-enough", "context": {"a": ' + deep + b"}}",
                 b'{"username": "num-dev", "password": "long-enough", "context": {"n": ' + b"7" * 5000 + b"}}"):
        status, _, answer = post(port, body, timeout=5)
        assert status == 400 and answer["field"] == "body", answer

    def nested(levels: int) -> dict:
        value: dict = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    # 32 levels in all (the body's object is the first) are accepted, 33 are not.
    status, _, answer = post(port, {"username": "deep-33", "password": "long-enough", "context": nested(32)})
    assert status == 400 and answer["field"] == "body" and "32 deep" in answer["message"]
    status, _, answer = post(port, {"username": "deep-32", "password": "long-enough", "context": nested(31)})
    assert status == 202, answer
    assert len(lines_with(server, "400 malformed (body: ")) == 4
    assert [r.username for r in admin_reg.requests()] == ["deep-32"]


@pytest.mark.parametrize("field, body", [
    ("username", b'{"username": "dev-\\ud800", "password": "long-enough"}'),
    ("password", b'{"username": "sur-dev", "password": "long-\\udfff-pw"}'),
    ("context", b'{"username": "sur-dev", "password": "long-enough", "context": {"serial": "\\ud800"}}'),
    ("context", b'{"username": "sur-dev", "password": "long-enough", "context": {"\\udc80": 1}}'),
    ("permissions", b'{"username": "sur-dev", "password": "long-enough", '
                    b'"permissions": [{"resource": "a/\\ud800", "operation": "read"}]}'),
], ids=["username", "password", "context-value", "context-key", "permissions"])
def test_lone_surrogate_is_400_naming_the_field(server, admin_reg, field, body):
    admin_reg.unlock(300, actor="test")
    status, _, answer = post(server.http_port, body)
    assert status == 400 and answer["field"] == field, answer
    assert admin_reg.requests() == []
    [line] = lines_with(server, "http register")
    assert f"400 invalid ({field}: " in line
    line.encode("utf-8")  # the log line itself is valid UTF-8: the surrogate is escaped


# -- password guessing ----------------------------------------------------------------------------------------
def test_wrong_passwords_per_name_are_throttled(server, admin_reg):
    port = server.http_port
    admin_reg.add_user("taken-dev", "right-password", actor="test")
    for i in range(5):
        status, _, answer = post(port, {"username": "taken-dev", "password": f"guess-{i}"})
        assert status == 409 and answer["error"] == "conflict"  # a device may learn that the name is taken
    status, headers, answer = post(port, {"username": "taken-dev", "password": "guess-5"})
    assert status == 429 and answer["error"] == "throttled"
    assert 1 <= int(headers["Retry-After"]) <= 60
    # While throttled no password is checked for that name: the right one is refused too, from any address.
    assert post(port, {"username": "taken-dev", "password": "right-password"})[0] == 429
    assert post(port, {"username": "taken-dev", "password": "guess-6"}, source="127.0.0.2")[0] == 429
    assert post(port, {"username": "taken-dev", "password": "right-password"}, source="127.0.0.2")[0] == 429
    # The address itself is not blocked by one name's guesses.
    admin_reg.add_user("other-dev", "other-password", actor="test")
    assert post(port, {"username": "other-dev", "password": "other-password"})[0] == 201
    throttled = lines_with(server, "429 throttled (5 wrong passwords for this name in 60 s; retry after")
    assert len(throttled) == 4 and all("user='taken-dev'" in line for line in throttled)
    assert not any("guess-" in line or "right-password" in line for line in server.lines)


def test_wrong_passwords_per_address_are_throttled(server, admin_reg):
    port = server.http_port
    for i in range(21):
        admin_reg.add_user(f"fleet-{i:02d}", f"password-{i:02d}", actor="test")
    for i in range(20):  # one wrong guess per name: no name is throttled, the address is after 20
        assert post(port, {"username": f"fleet-{i:02d}", "password": "wrong-guess"})[0] == 409
    status, headers, answer = post(port, {"username": "fleet-20", "password": "wrong-guess"})
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60, answer
    assert post(port, {"username": "fleet-20", "password": "password-20"})[0] == 429
    assert post(port, {"username": "fleet-20", "password": "password-20"}, source="127.0.0.2")[0] == 201
    assert len(lines_with(server, "429 throttled (20 wrong passwords from this address in 60 s")) == 2


def test_parallel_guesses_cannot_pass_the_limit(server, admin_reg):
    admin_reg.add_user("racy-dev", "right-password", actor="test")
    with ThreadPoolExecutor(max_workers=25) as pool:
        statuses = list(pool.map(lambda i: post(server.http_port, {"username": "racy-dev",
                                                                    "password": f"guess-{i:03d}"})[0], range(50)))
    assert statuses.count(409) == 5 and statuses.count(429) == 45


def test_right_password_after_the_window_is_201(db_path, admin_reg, clock):
    from broker.http_api import HTTPLimits

    st = ServerThread(db_path, http_limits=HTTPLimits(clock=clock)).start()
    try:
        port = st.http_port
        admin_reg.add_user("patient-dev", "right-password", actor="test")
        for i in range(5):
            assert post(port, {"username": "patient-dev", "password": f"guess-{i}"})[0] == 409
        status, headers, _ = post(port, {"username": "patient-dev", "password": "right-password"})
        assert status == 429 and headers["Retry-After"] == "60"
        clock.advance(30)
        status, headers, _ = post(port, {"username": "patient-dev", "password": "right-password"})
        assert status == 429 and headers["Retry-After"] == "30"
        clock.advance(30)
        status, _, answer = post(port, {"username": "patient-dev", "password": "right-password"})
        assert status == 201 and answer["status"] == "granted"
    finally:
        st.stop()


def test_throttle_is_bounded_and_forgets(clock):
    from store.throttle import SlidingWindow, WrongPasswords, peer_key

    window = SlidingWindow(5, 60, max_keys=1000, clock=clock)
    for i in range(100_000):
        assert window.hit(f"key-{i}") is not None
    assert len(window) == 1000
    for _ in range(4):
        window.hit("key-99999")
    assert window.hit("key-99999") is None and 59 < window.wait("key-99999") <= 60
    clock.advance(61)
    assert window.wait("key-99999") == 0.0 and window.hit("key-99999") is not None

    guesses = WrongPasswords(clock=clock)
    for i in range(100_000):  # a flood of distinct names from distinct addresses
        guesses.wrong(f"name-{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(guesses.by_name) <= 10_000 and len(guesses.by_peer) <= 10_000
    # A check counts before it runs; a right password takes it back.
    for _ in range(5):
        check = guesses.check("dev-a", "10.9.9.9")
        assert check is not None
    assert guesses.check("dev-a", "10.9.9.9") is None
    assert guesses.wait("dev-a", "10.9.9.9")[1] == "5 wrong passwords for this name in 60 s"
    check = guesses.check("dev-b", "10.9.9.9")
    check.right()
    assert guesses.by_name.wait("dev-b") == 0.0
    # One IPv6 host holds a /64; an IPv4-mapped address is its IPv4 address.
    assert peer_key("2001:db8::1") == peer_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert peer_key("::ffff:10.0.0.7") == "10.0.0.7"


# -- stderr stays quiet ---------------------------------------------------------------------------------------
def test_serve_writes_no_traceback_for_hostile_clients(tmp_path):
    from tests.broker.test_serve import start, wait_serving

    proc = start(str(tmp_path / "registry.db"))
    try:
        _, port, lines = wait_serving(proc)
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        hostile = [
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n",  # bad second request
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # TLS to the HTTP port
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"us",  # goes away
        ]
        for data in hostile:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)  # the client goes away; the server answers (or not) and closes
                while sock.recv(65536):
                    pass
        for body in (b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                     b'{"username": "sur-\\ud800", "password": "long-enough"}',
                     b'{"username": "n-dev", "password": "long-enough", "context": {"n": ' + b"1" * 5000 + b"}}"):
            assert post(port, body)[0] == 400
        wait_until(lambda: sum("http register from" in line for line in err_lines) >= 4, timeout=10,
                   message="the register lines")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines + err_lines)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Error handling request" not in err, err
    assert "http request from 127.0.0.1: 400" in err  # aiohttp's refusals as our one-liners
