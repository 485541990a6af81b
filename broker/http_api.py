"""The HTTP API (explicit flow): ``POST /api/client-registry/register``, ``POST /api/client-registry/csr``
(devices that identify by certificate: broker/csr_api.py) and ``GET /healthz``.

Status codes: 423 locked, 202 pending (body has the pairing code), 201 granted (body lists the permissions; at the
first request already when an approval rule admits it),
409 different password pending / user exists with another password, 403 denied by the operator or user
disabled, 400 malformed JSON or invalid field (body names the field and the rule), 408 body not received in
time, 413 body over 64 KiB, 429 flood limit or too many wrong passwords (with ``Retry-After``), 503 too many open
connections. Every answer is a JSON object; the password is never echoed or logged.

The listener is bounded (:class:`HTTPLimits`): request headers and bodies must arrive within a few seconds, at
most ``max_connections`` connections are open at once (the next ones are answered 503 and closed, with one log
line when the limit is reached), JSON nests at most ``max_json_depth`` deep, and wrong-password checks are
throttled per name and per address (``store.throttle``). Every refused request is one log line; aiohttp's own
loggers are kept quiet (no traceback reaches stderr).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from aiohttp import web

from store.device_text import quoted
from store.throttle import WRONG_PASSWORD_WINDOW, WRONG_PASSWORDS_PER_NAME, WRONG_PASSWORDS_PER_PEER, WrongPasswords
from store.validation import registration_problem

from .csr_api import CSR_PATH, CsrEndpoint

REGISTER_PATH = "/api/client-registry/register"
MAX_BODY = 64 * 1024
LINGER = 1.0  # seconds a refused or timed-out connection may still send before it is closed
REPORT_EVERY = 60.0  # seconds between two "connection limit reached" lines
MAX_REFUSING = 64  # connections being answered 503 at once; more are closed without an answer

log = logging.getLogger(__name__)

# aiohttp logs a traceback per broken request on these; every line goes through ours (log) instead.
_QUIET = logging.getLogger("client_registry.http.aiohttp")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass(frozen=True)
class HTTPLimits:
    """What one HTTP client may hold or try; the defaults are what ``serve`` uses."""

    max_connections: int = 256  # open at once; the next ones are answered 503 and closed
    header_timeout: float = 5.0  # from a connection's opening (or the first byte after a request) to its headers
    body_timeout: float = 5.0  # for the whole body, once the headers are in
    idle_timeout: float = 15.0  # an idle keep-alive connection is closed after this
    max_headers: int = 64
    max_json_depth: int = 32  # arrays and objects nested in the body
    wrong_passwords_per_name: int = WRONG_PASSWORDS_PER_NAME
    wrong_passwords_per_peer: int = WRONG_PASSWORDS_PER_PEER
    wrong_password_window: float = WRONG_PASSWORD_WINDOW
    clock: Callable[[], float] = time.monotonic  # of the wrong-password throttle


def _answer(code: int, /, *, retry_after: int = 60, **body: Any) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if code in (429, 503) else None
    return web.json_response(body, status=code, headers=headers)


def _summary(response: web.Response) -> str:
    body = json.loads(response.text or "{}")
    summary = body.get("status") or body.get("error") or ""  # never the pairing code: it narrows the password
    if response.status == 400:
        summary += f" ({body.get('field')}: {body.get('message')})"
    elif response.status == 429:
        summary += f" ({body.get('message')})"
    return summary


def _bad(field: str, rule: str) -> web.Response:
    return _answer(400, error="invalid", field=field, message=rule)


_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.S)  # an escape pair, a quote or a bracket


def _too_deep(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep, found before parsing (the parser recurses);
    one pass, linear in the body's size whatever it holds."""
    depth = 0
    in_string = False
    for token in _TOKENS.finditer(raw):
        ch = token.group()
        if ch == b'"':
            in_string = not in_string
        elif in_string or len(ch) == 2:
            continue
        elif ch in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _parse(raw: bytes, max_depth: int = HTTPLimits.max_json_depth) -> tuple[dict[str, Any] | None,
                                                                               web.Response | None]:
    if _too_deep(raw, max_depth):
        return None, _answer(400, error="malformed", field="body",
                             message=f"body must not nest arrays and objects more than {max_depth} deep")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, _answer(400, error="malformed", field="body", message=f"body is not valid JSON: {exc}")
    except (ValueError, RecursionError):  # e.g. an integer of more than 4,300 digits
        return None, _answer(400, error="malformed", field="body", message="body holds a number too long to read")
    if not isinstance(data, dict):
        return None, _answer(400, error="malformed", field="body", message="body must be a JSON object")
    # The rules themselves live in the store, shared with the MQTT path.
    broken = registration_problem(data.get("username"), data.get("password"), data.get("permissions"),
                                  data.get("context"), data.get("roles"))
    if broken:
        return None, _bad(*broken)
    return data, None


def _permissions(user: Any) -> list[dict[str, str]]:
    return [{"resource": pattern, "operation": access} for pattern, access in (user.permissions if user else [])]


async def _nothing(*args: Any) -> None:
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class RegisterAPI:
    """``wake`` is called after an attempt that wrote an event (the relay); ``granted(username, password)``
    makes sure the broker has the account of a device that proved its password (it may poll before the relay
    ran).
    ``limits`` bound what a client may hold or try; serve the app with :meth:`site` to apply all of them."""

    def __init__(self, reg: Any, *, wake: Callable[[], None] | None = None,
                 granted: Callable[[str, str], Awaitable[Any]] | None = None,
                 health: Callable[[], dict] | None = None, limits: HTTPLimits | None = None) -> None:
        self.reg = reg
        self.wake = wake or (lambda: None)
        self.granted = granted or _nothing
        self.health = health or dict
        self.limits = limits or HTTPLimits()
        self.guesses = WrongPasswords(self.limits.wrong_passwords_per_name, self.limits.wrong_passwords_per_peer,
                                      self.limits.wrong_password_window, clock=self.limits.clock)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_in_request], logger=_QUIET)
        app.router.add_post(REGISTER_PATH, self.register)
        app.router.add_post(CSR_PATH, CsrEndpoint(self.reg, self.read_body, self.wake, self.granted, self.health).post)
        app.router.add_get("/healthz", self.healthz)
        return app

    def listener(self, host: str, port: int, ssl: SSLContext | None = None) -> HTTPListener:
        """This API served on ``host:port`` (over HTTPS with ``ssl``) with the connection limit and the header
        timeout applied, and aiohttp's errors reported as one log line each."""
        return HTTPListener(self.app(), host, port, self.limits, ssl)

    async def healthz(self, request: web.Request) -> web.Response:
        broker = self.health()
        if broker.get("broker_state", "running") != "running":
            return _answer(503, status="error", message=f"the broker is {broker['broker_state']}", **broker)
        if broker.get("database", "ok") != "ok":
            return _answer(503, status="error", message=broker["database"], **broker)
        if broker.get("changes", "ok") != "ok":
            return _answer(503, status="error", message=broker["changes"], **broker)
        try:
            status = await asyncio.to_thread(self.reg.status)
        except Exception as exc:
            return _answer(503, status="error", message=str(exc), **broker)
        return _answer(200, status="ok", unlocked=status.unlocked, pending=status.pending, **broker)

    async def read_body(self, request: web.Request, what: str) -> bytes | web.Response:
        """The whole body within the time limit, or the answer (413, 408, 400) already logged."""
        peer = request.remote or "?"
        timeout = self.limits.body_timeout
        try:
            return await asyncio.wait_for(request.read(), timeout)
        except web.HTTPRequestEntityTooLarge:
            log.info(f"http {what} from {peer}: 413 body over {MAX_BODY} bytes")
            return _answer(413, error="too_large", message=f"body must not exceed {MAX_BODY} bytes")
        except TimeoutError:
            log.info(f"http {what} from {peer}: 408 body not received within {timeout:g} s; connection closed")
            response = _answer(408, error="timeout", message=f"the body must arrive within {timeout:g} s")
            response.force_close()
            return response
        except Exception as exc:  # the client went away, or sent a broken chunked body
            log.info(f"http {what} from {peer}: 400 body could not be read ({type(exc).__name__})")
            response = _answer(400, error="malformed", field="body", message="the body could not be read")
            response.force_close()
            return response

    async def register(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        raw = await self.read_body(request, "register")
        if isinstance(raw, web.Response):
            return raw
        data, problem = _parse(raw, self.limits.max_json_depth)
        if problem is not None:
            log.info(f"http register from {peer}: 400 {_summary(problem)}")
            return problem
        assert data is not None
        wait, _ = self.guesses.wait(data["username"], peer)
        if wait > 0:  # no password is checked for this name or from this address until the window has passed
            response = self._throttled(data["username"], peer)
            log.info(f"http register user={quoted(data['username'])} from {peer}: 429 {_summary(response)}")
            return response
        try:
            response = await self._decide(data, peer)
        except Exception as exc:  # a bug or the database gone: say so in the log, answer 500 in JSON
            log.error(f"http register user={quoted(data['username'])} from {peer}: 500 {exc!r}")
            return _answer(500, error="internal", message="internal error; see the server log")
        log.info(f"http register user={quoted(data['username'])} from {peer}: {response.status} {_summary(response)}")
        return response

    async def _decide(self, data: dict[str, Any], peer: str) -> web.Response:
        reg = self.reg
        username, password = data["username"], data["password"]
        problem = self.health().get("database", "ok")
        if problem != "ok":  # the database vanished under the server: record nothing, anywhere
            return _answer(503, error="unavailable", message=f"the registry cannot record requests now: {problem}",
                           retry_after=10)
        if await asyncio.to_thread(reg.is_user, username):
            return await self._existing(username, password, peer)
        res = await asyncio.to_thread(
            reg.record_attempt, username, password, None, peer, "http",
            requested_permissions=data.get("permissions"), context=data.get("context"),
            requested_roles=data.get("roles"))
        outcome = res.outcome
        if res.accepted or outcome == "granted":
            self.wake()
        if outcome == "granted":  # an approval rule admitted it: the account exists before the answer
            await self.granted(username, password)
            user = await asyncio.to_thread(reg.user, username)
            return _answer(201, status="granted", username=username, permissions=_permissions(user))
        if outcome == "known_user":  # became a user between the two calls
            return await self._existing(username, password, peer)
        if outcome == "locked":
            return _answer(423, error="locked", message="the registry is locked; ask the operator to unlock it")
        if outcome == "invalid":
            return _bad(res.field or "body", res.reason)
        if outcome == "reserved":  # the registry's own names, the site's accounts: taken, said why
            return _answer(409, error="reserved", message=res.reason)
        if outcome == "flood":
            return _answer(429, error="flood", message=res.reason)
        if outcome in ("pending", "retry"):
            request = res.request
            return _answer(202, status="pending", username=username, pairing_code=res.pairing_code,
                           request_id=getattr(request, "id", None),
                           message="waiting for the operator; repeat this request to poll")
        if outcome == "conflict":  # a password other than the pending request's: a wrong guess too
            self.guesses.wrong(username, peer)
            return _answer(409, error="conflict",
                           message="another request with a different password is pending for this username")
        if outcome == "denied":
            return _answer(403, error="denied", message="the operator denied this request")
        return _answer(500, error="internal", message=f"unexpected outcome {outcome!r}")

    def _throttled(self, username: str, peer: str) -> web.Response:
        wait, why = self.guesses.wait(username, peer)
        seconds = max(1, math.ceil(wait))
        return _answer(429, error="throttled", message=f"{why}; retry after {seconds} s", retry_after=seconds)

    async def _existing(self, username: str, password: str, peer: str) -> web.Response:
        reg = self.reg
        check = self.guesses.check(username, peer)  # counted as a wrong guess until proven right
        if check is None:
            return self._throttled(username, peer)
        res = await asyncio.to_thread(reg.login, username, password, None, None, "http")
        if res.outcome == "invalid":  # another Unicode form of a user's name (store.validation.nfc_problem)
            return _bad("username", res.reason)
        if res.outcome == "disabled":  # only said to a caller who knows the password
            check.right()
            return _answer(403, error="disabled", message="this user is disabled")
        if not res.accepted:
            return _answer(409, error="conflict", message="this username already exists with another password")
        check.right()
        await self.granted(username, password)
        user = await asyncio.to_thread(reg.user, username)
        return _answer(201, status="granted", username=username, permissions=_permissions(user),
                       roles=list(user.roles) if user else [])


# -- the bounded listener -----------------------------------------------------------------------------------
@web.middleware
async def _in_request(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell the connection that its headers are in (their deadline no longer applies) and when it is done."""
    protocol = request.protocol
    if isinstance(protocol, _Handler):
        protocol.request_started()
    try:
        return await handler(request)
    finally:
        if isinstance(protocol, _Handler):
            protocol.request_finished()


class _Handler(web.RequestHandler):
    """aiohttp's connection handler with a deadline for request headers, counted by its :class:`_Connections`,
    and aiohttp's error reports turned into one log line each."""

    def __init__(self, gate: _Connections, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self._received = 0  # bytes since the deadline was set
        self._peer = "?"
        self._counted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if data and not self._busy and self.transport is not None:  # aiohttp itself calls this with b""
            if self._deadline is None:  # the first byte of the next request on a kept-alive connection
                self._arm()
            self._received += len(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        try:
            super().connection_lost(exc)
        finally:
            if self._counted:
                self._counted = False
                self._gate.closed()

    def request_started(self) -> None:
        self._busy = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def request_finished(self) -> None:
        self._busy = False

    def _arm(self) -> None:
        self._received = 0
        self._deadline = asyncio.get_running_loop().call_later(self._gate.limits.header_timeout, self._late)

    def _late(self) -> None:
        self._deadline = None
        if self._busy or self.transport is None:
            return
        received = f"{self._received} bytes received" if self._received else "nothing received"
        log.info(f"http: closed a connection from {self._peer}: no complete request headers within "
                       f"{self._gate.limits.header_timeout:g} s ({received})")
        self.force_close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            reason = repr(exc) if exc is not None else (message or "")
            text = "internal error; see the server log"
        else:
            reason = message or (str(exc) if exc is not None else "")
            text = _one_line(reason) or "malformed request"
        log.log(logging.ERROR if status >= 500 else logging.INFO,
                f"http request from {request.remote or self._peer}: {status} {quoted(_one_line(reason), 160)}")
        if request.writer.output_size > 0:  # some of a response was sent: the connection is broken
            raise ConnectionError("a response was already being sent")
        response = _answer(status, error="malformed" if status < 500 else "internal", message=text[:200])
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        try:
            what = str(args[0]) % args[1:] if args else "error"
        except (TypeError, ValueError):
            what = " ".join(map(str, args))
        detail = f": {exc!r}" if isinstance(exc, BaseException) else ""
        log.error(f"http: {quoted(_one_line(what + detail), 200)} (connection from {self._peer})")


_BUSY_BODY = json.dumps({"error": "busy", "message": "too many open connections; try again shortly"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


class _Refusal(asyncio.Protocol):
    """A connection over the limit: answered 503 at once, read and ignored for a moment (so the client sees
    the answer rather than a reset), then closed."""

    def __init__(self, gate: _Connections) -> None:
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.gate.refusing) >= MAX_REFUSING:
            transport.abort()  # type: ignore[attr-defined]
            return
        self.gate.refusing.add(self)
        transport.write(_BUSY)  # type: ignore[attr-defined]
        if transport.can_write_eof():  # type: ignore[attr-defined]
            transport.write_eof()  # type: ignore[attr-defined]
        self._timer = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.gate.refusing.discard(self)


class _Connections:
    """The listener's protocol factory: at most ``limits.max_connections`` open :class:`_Handler` connections;
    the ones over the limit get a :class:`_Refusal`, and the log one line when the limit is reached (at most
    one every ``REPORT_EVERY`` seconds, counting the refusals it did not report)."""

    def __init__(self, server: web.Server, limits: HTTPLimits) -> None:
        self.server = server
        self.limits = limits
        self.open = 0
        self.refusing: set[_Refusal] = set()
        self._full = False
        self._reported_at: float | None = None
        self._unreported = 0

    def __call__(self) -> asyncio.BaseProtocol:
        limits = self.limits
        if self.open >= limits.max_connections:
            self._refused()
            return _Refusal(self)
        self.open += 1
        return _Handler(self, self.server, loop=asyncio.get_running_loop(), access_log=None, logger=_QUIET,
                        keepalive_timeout=max(limits.idle_timeout, 2 * limits.header_timeout),
                        lingering_time=LINGER, max_headers=limits.max_headers)

    def closed(self) -> None:
        self.open -= 1
        if self.open < self.limits.max_connections:
            self._full = False

    def _refused(self) -> None:
        now = time.monotonic()
        if self._full or (self._reported_at is not None and now - self._reported_at < REPORT_EVERY):
            self._full = True
            self._unreported += 1
            return
        self._full = True
        earlier = f" ({self._unreported} more refused since the last report)" if self._unreported else ""
        log.warning(f"http: connection limit reached ({self.limits.max_connections} open); new connections are "
                 f"answered 503 and closed until some close{earlier}")
        self._reported_at = now
        self._unreported = 0

    def close_refusals(self) -> None:
        for refusal in list(self.refusing):
            if refusal.transport is not None:
                refusal.transport.abort()


class HTTPListener:
    """An aiohttp application served with aiohttp's public API: the runner's request server handles the
    connections, but the listening socket is ours (``loop.create_server``) so that every new connection goes
    through the gate (:class:`_Connections`) first. ``await start()`` returns the bound ``(host, port)``;
    ``await stop()`` stops listening, drops the 503 answers still lingering, then closes the open connections
    and the application (``AppRunner.cleanup``)."""

    BACKLOG = 128  # aiohttp's TCPSite default

    def __init__(self, app: web.Application, host: str, port: int, limits: HTTPLimits,
                 ssl: SSLContext | None = None) -> None:
        self.ssl = ssl  # the handshake runs before the gate's protocol sees the connection (asyncio's sslproto)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.host = host
        self.port = port
        self.limits = limits
        self._gate: _Connections | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> tuple[str, int]:
        await self.runner.setup()
        try:
            assert self.runner.server is not None  # set up above
            self._gate = _Connections(self.runner.server, self.limits)
            self._server = await asyncio.get_running_loop().create_server(
                self._gate, self.host, self.port, backlog=self.BACKLOG, reuse_address=True, ssl=self.ssl,
                ssl_handshake_timeout=self.limits.header_timeout if self.ssl is not None else None)
        except BaseException:
            await self.runner.cleanup()
            raise
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; the open ones are closed by the runner below
        if self._gate is not None:
            self._gate.close_refusals()
        await self.runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
