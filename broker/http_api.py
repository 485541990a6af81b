"""The HTTP API (explicit flow): ``POST /api/client-registry/register`` and ``GET /healthz``.

Status codes: 423 locked, 202 pending (body has the pairing code), 201 granted (body lists the permissions),
409 different password pending / user exists with another password, 403 denied by the operator or user
disabled, 400 malformed JSON or invalid field (body names the field and the rule), 413 body over 64 KiB,
429 flood limit. Every answer is a JSON object; the password is never echoed or logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from store.validation import registration_problem

from .log_text import safe

REGISTER_PATH = "/api/client-registry/register"
MAX_BODY = 64 * 1024


def _answer(code: int, /, **body: Any) -> web.Response:
    headers = {"Retry-After": "60"} if code == 429 else None
    return web.json_response(body, status=code, headers=headers)


def _summary(response: web.Response) -> str:
    body = json.loads(response.body)
    summary = body.get("status") or body.get("error") or ""
    if body.get("pairing_code"):
        summary += f" pairing={body['pairing_code']}"
    if response.status == 400:
        summary += f" ({body.get('field')}: {body.get('message')})"
    return summary


def _bad(field: str, rule: str) -> web.Response:
    return _answer(400, error="invalid", field=field, message=rule)


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, web.Response | None]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, _answer(400, error="malformed", field="body", message=f"body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return None, _answer(400, error="malformed", field="body", message="body must be a JSON object")
    # The rules themselves live in the store, shared with the MQTT path.
    broken = registration_problem(data.get("username"), data.get("password"), data.get("permissions"),
                                  data.get("context"))
    if broken:
        return None, _bad(*broken)
    return data, None


def _permissions(user: Any) -> list[dict[str, str]]:
    return [{"resource": pattern, "operation": access} for pattern, access in (user.permissions if user else [])]


async def _nothing(*args: Any) -> None:
    return None


class RegisterAPI:
    """``wake`` is called after an attempt that wrote an event (the relay); ``hold(request_id, password)``
    keeps a pending device's password in memory for its grant; ``granted(username, password)`` makes sure
    the broker has the account of a device that proved its password (it may poll before the relay ran)."""

    def __init__(self, reg: Any, log: Callable[[str], None], *, wake: Callable[[], None] | None = None,
                 hold: Callable[[int, str], None] | None = None,
                 granted: Callable[[str, str], Awaitable[Any]] | None = None,
                 health: Callable[[], dict] | None = None) -> None:
        self.reg = reg
        self.log = log
        self.wake = wake or (lambda: None)
        self.hold = hold or (lambda request_id, password: None)
        self.granted = granted or _nothing
        self.health = health or dict

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(REGISTER_PATH, self.register)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            status = await asyncio.to_thread(self.reg.status)
        except Exception as exc:
            return _answer(503, status="error", message=str(exc))
        broker = self.health()
        if broker.get("broker_state", "running") != "running":
            return _answer(503, status="error", message=f"the broker is {broker['broker_state']}", **broker)
        return _answer(200, status="ok", unlocked=status.unlocked, pending=status.pending, **broker)

    async def register(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.log(f"http register from {peer}: 413 body over {MAX_BODY} bytes")
            return _answer(413, error="too_large", message=f"body must not exceed {MAX_BODY} bytes")
        data, problem = _parse(raw)
        if problem is not None:
            self.log(f"http register from {peer}: 400 {_summary(problem)}")
            return problem
        assert data is not None
        try:
            response = await self._decide(data, peer)
        except Exception as exc:  # a bug or the database gone: say so in the log, answer 500 in JSON
            self.log(f"http register user={safe(data['username'])} from {peer}: 500 {exc!r}")
            return _answer(500, error="internal", message="internal error; see the server log")
        self.log(f"http register user={safe(data['username'])} from {peer}: {response.status} {_summary(response)}")
        return response

    async def _decide(self, data: dict[str, Any], peer: str) -> web.Response:
        reg = self.reg
        username, password = data["username"], data["password"]
        if await asyncio.to_thread(reg.is_user, username):
            return await self._existing(username, password)
        res = await asyncio.to_thread(
            reg.record_attempt, username, password, None, peer, "http",
            requested_permissions=data.get("permissions"), context=data.get("context"))
        outcome = res.outcome
        if res.accepted:
            self.hold(res.request.id, password)
            self.wake()
        if outcome == "known_user":  # became a user between the two calls
            return await self._existing(username, password)
        if outcome == "locked":
            return _answer(423, error="locked", message="the registry is locked; ask the operator to unlock it")
        if outcome == "invalid":
            return _bad(res.field or "body", res.reason)
        if outcome == "flood":
            return _answer(429, error="flood", message=res.reason)
        if outcome in ("pending", "retry"):
            request = res.request
            return _answer(202, status="pending", username=username, pairing_code=res.pairing_code,
                           request_id=getattr(request, "id", None),
                           message="waiting for the operator; repeat this request to poll")
        if outcome == "conflict":
            return _answer(409, error="conflict",
                           message="another request with a different password is pending for this username")
        if outcome == "denied":
            return _answer(403, error="denied", message="the operator denied this request")
        return _answer(500, error="internal", message=f"unexpected outcome {outcome!r}")

    async def _existing(self, username: str, password: str) -> web.Response:
        reg = self.reg
        res = await asyncio.to_thread(reg.login, username, password, None, None, "http")
        if res.outcome == "disabled":  # only said to a caller who knows the password
            return _answer(403, error="disabled", message="this user is disabled")
        if not res.accepted:
            return _answer(409, error="conflict", message="this username already exists with another password")
        await self.granted(username, password)
        user = await asyncio.to_thread(reg.user, username)
        return _answer(201, status="granted", username=username, permissions=_permissions(user))
