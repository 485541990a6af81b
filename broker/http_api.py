"""The HTTP API (explicit flow): ``POST /api/client-registry/register`` and ``GET /healthz``.

Status codes: 423 locked, 202 pending (body has the pairing code), 201 granted (body lists the permissions),
409 different password pending / user exists with another password, 403 denied by the operator or user
disabled, 400 malformed JSON or invalid field (body names the field and the rule), 413 body over 64 KiB,
429 flood limit. Every answer is a JSON object; the password is never echoed or logged.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

from store.validation import registration_problem

from .plugins import EVENT_OUTCOMES, safe

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


class RegisterAPI:
    """Calls that may run argon2 (authenticate, record_attempt) go to ``argon2_pool`` (the server's argon2
    executor; None = asyncio's default); ``wake`` is called after an attempt that wrote an event (the relay)."""

    def __init__(self, reg: Any, log: Callable[[str], None], *, argon2_pool: Executor | None = None,
                 wake: Callable[[], None] | None = None) -> None:
        self.reg = reg
        self.log = log
        self.argon2_pool = argon2_pool
        self.wake = wake or (lambda: None)

    async def _argon2(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self.argon2_pool, functools.partial(fn, *args, **kwargs))

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
        return _answer(200, status="ok", unlocked=status.unlocked, pending=status.pending)

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
        res = await self._argon2(
            reg.record_attempt, username, password, None, peer, "http",
            requested_permissions=data.get("permissions"), context=data.get("context"))
        outcome = res.outcome
        if outcome in EVENT_OUTCOMES:
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
        if not reg.authenticate_cached(username, password):
            res = await self._argon2(reg.login, username, password, None, None, "http")
            if res.outcome == "disabled":  # only said to a caller who knows the password
                return _answer(403, error="disabled", message="this user is disabled")
            if not res.accepted:
                return _answer(409, error="conflict", message="this username already exists with another password")
        user = await asyncio.to_thread(reg.user, username)
        return _answer(201, status="granted", username=username, permissions=_permissions(user))
