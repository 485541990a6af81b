"""The explicit flow over HTTP: curl for the happy path, urllib for each error status."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

from store import pairing_code

PATH = "/api/client-registry/register"


def post(port: int, body: bytes | dict, timeout: float = 10) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def curl(port: int, body: dict) -> tuple[int, dict]:
    res = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                          "--data", json.dumps(body), f"http://127.0.0.1:{port}{PATH}"],
                         capture_output=True, text=True, timeout=20)
    text, _, code = res.stdout.rpartition("\n")
    return int(code), json.loads(text)


CREDS = {"username": "http-dev-1", "password": "http-secret-1",
         "permissions": [{"resource": "devices/http-dev-1/#", "operation": "readWrite"}],
         "context": {"serial": "A-100", "firmware": "1.2.3"}}


def test_locked_pending_granted_with_curl(server, admin_reg):
    port = server.http_port
    status, body = curl(port, CREDS)
    assert status == 423 and body["error"] == "locked"
    assert admin_reg.requests() == []

    admin_reg.unlock(300, actor="test")
    status, body = curl(port, CREDS)
    assert status == 202
    assert body["pairing_code"] == pairing_code(CREDS["username"], CREDS["password"])
    status, body = curl(port, CREDS)  # polling: same request, still pending, still one row
    assert status == 202
    [req] = admin_reg.requests()
    assert req.source == "http" and req.attempts == 2
    assert req.requested_permissions == CREDS["permissions"] and req.context == CREDS["context"]

    [item] = admin_reg.grant([CREDS["username"]], permissions=None, actor="test")  # apply what was asked for
    assert item.ok, item.message
    status, body = curl(port, CREDS)
    assert status == 201 and body["status"] == "granted"
    assert body["permissions"] == CREDS["permissions"]
    assert "password" not in body and CREDS["password"] not in json.dumps(body)
    assert not any(CREDS["password"] in line for line in server.lines)


def test_conflicts(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
    assert post(port, {"username": "twin-dev", "password": "first-pass"})[0] == 202
    status, body = post(port, {"username": "twin-dev", "password": "other-pass"})
    assert status == 409 and body["error"] == "conflict"
    admin_reg.add_user("taken-name", "real-password", actor="test")
    assert post(port, {"username": "taken-name", "password": "guessed-pw"})[0] == 409
    assert post(port, {"username": "taken-name", "password": "real-password"})[0] == 201


def test_bad_input_400(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
    status, body = post(port, b"{not json")
    assert status == 400 and body["field"] == "body"
    status, body = post(port, b"[1, 2]")
    assert status == 400 and body["field"] == "body"
    status, body = post(port, {"password": "long-enough"})
    assert status == 400 and body["field"] == "username"
    status, body = post(port, {"username": "ab", "password": "long-enough"})
    assert status == 400 and body["field"] == "username" and body["message"]
    status, body = post(port, {"username": "good-name", "password": "abc"})
    assert status == 400 and body["field"] == "password"
    status, body = post(port, {"username": "good-name", "password": "long-enough",
                               "permissions": [{"resource": "a/#", "operation": "delete"}]})
    assert status == 400 and body["field"] == "permissions"
    status, body = post(port, {"username": "good-name", "password": "long-enough", "context": "nope"})
    assert status == 400 and body["field"] == "context"
    assert admin_reg.requests() == []


def test_body_over_64k_is_413(server, admin_reg):
    admin_reg.unlock(300, actor="test")
    big = {"username": "big-dev", "password": "long-enough", "context": {"blob": "x" * (70 * 1024)}}
    status, _body = post(server.http_port, big)
    assert status == 413
    assert admin_reg.requests() == []


def test_flood_429(server, admin_reg):
    admin_reg.unlock(300, actor="test")
    statuses = [post(server.http_port, {"username": f"flood-{i:02d}", "password": "long-enough"})[0]
                for i in range(32)]
    assert statuses[:30] == [202] * 30
    assert statuses[30:] == [429, 429]


def test_denied_is_403_and_healthz(server, admin_reg):
    port = server.http_port
    admin_reg.unlock(300, actor="test")
    assert post(port, {"username": "deny-me", "password": "long-enough"})[0] == 202
    [item] = admin_reg.deny(["deny-me"], actor="test")
    assert item.ok
    assert post(port, {"username": "deny-me", "password": "long-enough"})[0] == 403
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"


def test_disabled_is_told_only_to_the_right_password(server, admin_reg):
    port = server.http_port
    admin_reg.add_user("off-dev", "right-password", actor="test")
    admin_reg.disable_user("off-dev", actor="test")
    status, body = post(port, {"username": "off-dev", "password": "wrong-password"})
    assert status == 409 and "disabled" not in json.dumps(body)
    status, body = post(port, {"username": "off-dev", "password": "right-password"})
    assert status == 403 and body["error"] == "disabled"
    admin_reg.enable_user("off-dev", actor="test")
    assert post(port, {"username": "off-dev", "password": "right-password"})[0] == 201
