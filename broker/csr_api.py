"""``POST /api/client-registry/csr``: the explicit flow for devices that identify by certificate.

The body is the device's PKCS#10 CSR as it is (PEM or DER, ``curl --data-binary @device.csr``), or a JSON
object ``{"csr": "<PEM>", "context": {...}, "permissions": [...], "roles": [...]}`` when the device has more
to say (the same fields as ``/register``; told apart by a first character ``{``). The CSR's common name is the
username; the registry never sees the device's private key.

Answers (JSON): 423 locked; 202 pending, with the pairing code (the first 8 hex characters of the SHA-256 of
the CSR's public key, which the device can print) and the fingerprint; 201 granted, with ``certificate`` (PEM,
signed by the site CA) and ``ca`` (the site CA's certificate, the chain the device trusts): a device polls by
sending the same CSR again; 400 a CSR the registry refuses (one line: not a CSR, wrong signature, a key or
subject it does not accept, not UTF-8); 413 a CSR over 16 KiB; 409 a reserved name or an existing user
(another key); 403 denied; 429 flood limit. Plain HTTP or HTTPS alike: nothing here depends on the transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from store.certificates import MAX_CSR_BYTES
from store.device_text import quoted

from .certificates import TlsFiles

CSR_PATH = "/api/client-registry/csr"

log = logging.getLogger(__name__)


def _answer(code: int, /, **body: Any) -> web.Response:
    headers = {"Retry-After": "60"} if code == 429 else None
    return web.json_response(body, status=code, headers=headers)


def _too_large(size: int) -> web.Response:
    return _answer(413, error="too_large", message=f"the CSR is {size:,} bytes; at most {MAX_CSR_BYTES:,} are accepted")


def csr_of(raw: bytes) -> tuple[dict[str, Any] | None, web.Response | None]:
    """The request's fields (``csr`` as bytes or text) from a raw CSR or a JSON body, or the answer refusing it."""
    if not raw.lstrip().startswith(b"{"):
        if len(raw) > MAX_CSR_BYTES:
            return None, _too_large(len(raw))
        return {"csr": raw}, None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, _answer(400, error="malformed", field="body", message=f"body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return None, _answer(400, error="malformed", field="body", message="body must be a JSON object")
    csr = data.get("csr")
    if not isinstance(csr, str):
        return None, _answer(400, error="invalid", field="csr", message="csr must be the CSR as PEM text")
    if len(csr.encode("utf-8", "surrogatepass")) > MAX_CSR_BYTES:
        return None, _too_large(len(csr.encode("utf-8", "surrogatepass")))
    return data, None  # what it asks for besides is checked by record_csr


class CsrEndpoint:
    """The handler; ``wake``, ``granted`` and ``health`` as :class:`broker.http_api.RegisterAPI`'s."""

    def __init__(self, reg: Any, read_body: Callable[[web.Request, str], Awaitable[bytes | web.Response]],
                 wake: Callable[[], None], granted: Callable[[str, str], Awaitable[Any]],
                 health: Callable[[], dict]) -> None:
        self.reg = reg
        self.read_body = read_body
        self.wake = wake
        self.granted = granted
        self.health = health

    async def post(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        raw = await self.read_body(request, "csr")
        if isinstance(raw, web.Response):
            return raw
        data, refused = csr_of(raw)
        if refused is None:
            assert data is not None
            try:
                response, username = await self._decide(data, peer)
            except Exception as exc:  # a bug or the database gone: one log line, 500 in JSON
                log.error(f"http csr from {peer}: 500 {exc!r}")
                return _answer(500, error="internal", message="internal error; see the server log")
        else:
            response, username = refused, None
        body = json.loads(response.text or "{}")
        said = body.get("status") or body.get("error") or ""
        if response.status in (400, 409, 413, 429):
            said += f" ({body.get('message')})"
        who = f"user={quoted(username)} " if username else ""
        log.info(f"http csr {who}from {peer}: {response.status} {said}")
        return response

    async def _decide(self, data: dict[str, Any], peer: str) -> tuple[web.Response, str | None]:
        problem = self.health().get("database", "ok")
        if problem != "ok":
            why = f"the registry cannot record requests now: {problem}"
            return _answer(503, error="unavailable", message=why), None
        res = await asyncio.to_thread(self.reg.record_csr, data["csr"], None, peer,
                                      requested_permissions=data.get("permissions"), context=data.get("context"),
                                      requested_roles=data.get("roles"))
        request = res.request
        username = getattr(request, "username", None)
        outcome = res.outcome
        if res.accepted or outcome == "granted":
            self.wake()
        if outcome == "granted":
            if username:
                await self.granted(username, "")  # its account is in Mosquitto before the certificate is out
            return _answer(201, status="granted", username=username, certificate=res.certificate,
                           ca=await asyncio.to_thread(self._ca_pem)), username
        if outcome in ("pending", "retry"):
            return _answer(202, status="pending", username=username, pairing_code=res.pairing_code,
                           fingerprint=getattr(request, "certificate", None), request_id=getattr(request, "id", None),
                           message="waiting for the operator; send the same CSR again to poll"), username
        if outcome == "locked":
            return _answer(423, error="locked", message="the registry is locked; ask the operator to unlock it"), None
        if outcome == "invalid":
            return _answer(400, error="invalid", field=res.field or "csr", message=res.reason), None
        if outcome in ("reserved", "known_user", "conflict"):
            return _answer(409, error="conflict" if outcome == "conflict" else outcome, message=res.reason), username
        if outcome == "denied":
            return _answer(403, error="denied", message="the operator denied this request"), username
        if outcome == "flood":
            return _answer(429, error="flood", message=res.reason), None
        return _answer(500, error="internal", message=f"unexpected outcome {outcome!r}"), username

    def _ca_pem(self) -> str | None:
        try:
            return TlsFiles.for_database(self.reg.location).ca_cert.read_text()
        except OSError:
            return None
