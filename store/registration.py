"""The registration rules: what happens to an attempt of a name that is not a user (recorded, counted as a
knock while locked, matched to an earlier request, refused by the flood limits, admitted by an approval rule),
to a device's certificate signing request (the same rules, its key in place of a password), and to a user's
name tried with another password (a re-key request) or with its password and another certificate (a
rotation request). A part of :class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace
from typing import Any

from cryptography import x509

from . import crypto
from .approval_rules import ApprovalRules
from .base import Base, Part
from .certificates import CheckedCsr, CsrRefused, PresentedCertificate, check_csr, public_key_fingerprint
from .database import guarded, run_sql
from .expiry import Expiry
from .knocks import Knocks
from .validation import asked_problem, normalise_username, registration_problem
from .views import AttemptResult, RequestView
from .window import Window

RETRY_EVENT_EVERY = 10.0  # seconds between request.retried events for one request


REQUEST_COLUMNS = ("username", "verifier", "pairing_code", "client_id", "peer", "source", "requested_permissions",
                   "requested_roles", "context", "first_seen", "last_seen", "attempts", "status", "conflict", "rekey",
                   "certificate", "certificate_info", "csr", "rotation")
INSERT_REQUEST = (f'INSERT INTO "requests" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in REQUEST_COLUMNS)}) '
                  f'VALUES ({", ".join("?" * len(REQUEST_COLUMNS))}) RETURNING "id"')


def _certificate_problem(certificate: Any) -> AttemptResult | None:
    """A presented certificate that is not one (the broker's decoding is checked like any device input)."""
    problem = certificate.problem() if isinstance(certificate, PresentedCertificate) else \
        "a certificate must be a PresentedCertificate"
    return AttemptResult("invalid", problem, field="certificate") if problem else None


class Registration(Part):
    def __init__(self, base: Base, window: Window, expiry: Expiry, knocks: Knocks, rules: ApprovalRules) -> None:
        super().__init__(base)
        self.window, self.expiry, self.knocks, self.rules = window, expiry, knocks, rules
        self.refused: Counter[str] = Counter()  # refusals beyond the flood limits, by this process
        self._retry_event_at: dict[int, float] = {}

    def _opening(self, username: Any, password: Any, rekey: bool, **asked: Any) -> tuple[str, float] | AttemptResult:
        """The checks every attempt passes first, in this order: the registration rules, a reserved name, (for
        a new device) a name that is already a user's, and the window, where a new device's name is counted as
        a knock. The normalised name and the time, or the refusal."""
        broken = registration_problem(username, password, **asked)
        if broken:
            return AttemptResult("invalid", broken[1], field=broken[0])
        return self._admissible(normalise_username(username), rekey)  # NFC already (nfc_problem)

    def _admissible(self, username: str, rekey: bool) -> tuple[str, float] | AttemptResult:
        """The opening checks after the registration rules (a CSR's name passed them in check_csr)."""
        reserved = self.base.reserved(username)
        if reserved:
            return AttemptResult("reserved", reserved, field="username")
        if not rekey and self.base.is_user(username):
            return AttemptResult("known_user", f"{username!r} is already a user")
        now = self.base.clock()
        if not self.window.unlocked(now):
            if not rekey:
                self.knocks.knock(username, now)
            return AttemptResult("locked", "the registry is locked")
        return username, now

    @guarded
    def record_attempt(self, username: Any, password: Any, client_id: str | None = None, peer: str | None = None,
                       source: str = "mqtt", requested_permissions: Any = None, context: Any = None,
                       requested_roles: Any = None, certificate: PresentedCertificate | None = None) -> AttemptResult:
        """Record a registration attempt of a name that is not a user (see :meth:`login` for any name). While
        unlocked, a new request that an approval rule matches is granted at once (outcome "granted").
        ``certificate``: the client certificate the device presented (a TLS listener): its fingerprint is the
        request's pairing code, the same password with another certificate is another request (a conflict),
        and granting binds the user to it."""
        if source not in ("mqtt", "http"):
            raise ValueError(f"unknown source {source!r}")
        if certificate is not None:
            refused = _certificate_problem(certificate)
            if refused:
                return refused
        opened = self._opening(username, password, False, requested_permissions=requested_permissions,
                               context=context, requested_roles=requested_roles)
        if isinstance(opened, AttemptResult):
            return opened
        username, now = opened
        self.expiry.expire_if_due(now)
        code = certificate.pairing_code if certificate else crypto.pairing_code(username, password)
        return self._new_request(username, now, self.base.verifier(username, password), code, client_id, peer,
                                 source, requested_permissions, requested_roles, context,
                                 certificate.fingerprint if certificate else None,
                                 certificate.info() if certificate else None)

    @guarded
    def record_csr(self, csr: Any, client_id: str | None = None, peer: str | None = None,
                   requested_permissions: Any = None, context: Any = None,
                   requested_roles: Any = None) -> AttemptResult:
        """A device's certificate signing request (PKCS#10, PEM or DER; the explicit flow for certificates, over
        HTTPS): checked by :func:`store.certificates.check_csr` (its CN is the username), then recorded as
        :meth:`record_attempt` records a password: locked, a knock; unlocked, a pending request (pairing code:
        the first characters of its public key's fingerprint) that approval rules may grant; the same key
        again, the same request. Granting signs it (Registry's ``signer``). A user's CSR with the key the
        registry signed for it answers "granted" with that certificate: the device fetches it by repeating
        its request. The request keeps the CSR (public) until it is decided."""
        try:
            checked = check_csr(csr)
        except CsrRefused as exc:
            return AttemptResult("invalid", str(exc), field="csr")
        broken = asked_problem(requested_permissions, context, requested_roles)
        if broken:
            return AttemptResult("invalid", broken[1], field=broken[0])
        issued = self._issued(checked)
        if issued is not None:
            return issued
        opened = self._admissible(checked.username, False)
        if isinstance(opened, AttemptResult):
            return opened
        username, now = opened
        self.expiry.expire_if_due(now)
        result = self._new_request(username, now, self.base.certificate_only_verifier(username),
                                   checked.pairing_code, client_id, peer, "http", requested_permissions,
                                   requested_roles, context, checked.fingerprint, checked.info(), checked.pem())
        if result.outcome == "granted":  # an approval rule admitted it: signed in the same transaction
            return self._issued(checked) or result
        return result

    def _issued(self, checked: CheckedCsr) -> AttemptResult | None:
        """The certificate the registry signed for this CSR's key, while its user holds it and is enabled."""
        found = run_sql(self.db, 'SELECT "certificate_pem" FROM "users" WHERE "name" = ? AND "disabled" = ? AND '
                                 '"certificate_pem" IS NOT NULL', (checked.username, False)).fetchone()
        if found is None:
            return None
        certificate = x509.load_pem_x509_certificate(found[0].encode("ascii"))
        if public_key_fingerprint(certificate.public_key()) != checked.fingerprint:
            return None  # another key's: the name is a user (known_user)
        return AttemptResult("granted", "signed: the certificate is attached", certificate=found[0])

    def _new_request(self, username: str, now: float, print_: str, code: str, client_id: str | None,
                     peer: str | None, source: str, requested_permissions: Any, requested_roles: Any, context: Any,
                     fingerprint: str | None = None, info: dict | None = None, csr: str | None = None,
                     ) -> AttemptResult:
        """A new device's attempt after the opening checks: a retry of its request, or a new one (a conflict
        when the name is pending with other credentials), which an approval rule may grant."""
        outcome = self._match_existing(username, print_, client_id, peer, now, fingerprint)
        if outcome:
            return outcome
        refusal = self._flood_refusal(peer, now)
        if refusal:
            return AttemptResult("flood", refusal)

        with self.base.write():
            # Another process may have recorded the same credentials, or granted them, meanwhile.
            if self.base.is_user(username):
                return AttemptResult("known_user", f"{username!r} is already a user")
            outcome = self._match_existing(username, print_, client_id, peer, self.base.clock(), fingerprint)
            if outcome:
                return outcome
            rivals = [r for (r,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                                     '"status" = \'pending\'', (username,)).fetchall()]
            row = SimpleNamespace(
                username=username, verifier=print_, pairing_code=code,
                client_id=client_id, peer=peer, source=source,
                requested_permissions=json.dumps(requested_permissions) if requested_permissions else None,
                requested_roles=json.dumps(list(dict.fromkeys(requested_roles))) if requested_roles else None,
                context=json.dumps(context) if context is not None else None,
                first_seen=now, last_seen=now, attempts=1, status="pending", conflict=bool(rivals), rekey=False,
                certificate=fingerprint, certificate_info=json.dumps(info) if info else None, csr=csr,
                rotation=False, decided_by=None, decided_at=None)
            (row.id,) = run_sql(self.db, INSERT_REQUEST, tuple(getattr(row, c) for c in REQUEST_COLUMNS)).fetchone()
            identity: dict[str, Any] = {} if fingerprint is None else {"identity": "csr" if csr else "certificate"}
            if rivals:
                run_sql(self.db, f'UPDATE "requests" SET "conflict" = ? WHERE "id" IN ({", ".join("?" * len(rivals))})',
                        (True, *rivals))
                self.base.event("registry", "request.conflict", username, request_id=row.id,
                                rival_ids=rivals, source=source, peer=peer, **identity)
            else:
                self.base.event("registry", "request.created", username, request_id=row.id, source=source,
                                peer=peer, client_id=client_id, **identity)
            admitted = None if rivals else self.rules.admit(row)
        if admitted is not None:
            return admitted
        view = RequestView.of(row)
        if rivals:
            what = "password" if fingerprint is None else "password or certificate"
            return AttemptResult("conflict", f"another request for {username!r} has a different {what}",
                                 request=view, pairing_code=code)
        return AttemptResult("pending", "waiting for an operator", request=view, pairing_code=code)

    @guarded
    def record_rekey(self, username: Any, password: Any, client_id: str | None = None, peer: str | None = None,
                     source: str = "mqtt") -> AttemptResult:
        """A user's name tried with another password while unlocked (a re-flashed or replaced device): a
        request flagged ``rekey``, so the operator learns why the device stays out. Never admitted by an
        approval rule; granting it (with force) replaces the user's password. A retry counts on it."""
        return self._user_request(username, password, client_id, peer, source, None)

    @guarded
    def record_rotation(self, username: Any, password: Any, certificate: PresentedCertificate,
                        client_id: str | None = None, peer: str | None = None, source: str = "mqtt") -> AttemptResult:
        """A user bound to a certificate tried with its right password and another certificate while unlocked
        (the plugin's kind 2: a device given a new certificate): a request flagged ``rotation``. Never
        admitted by an approval rule; granting it (with force) binds the user to the new certificate."""
        refused = _certificate_problem(certificate)
        return refused or self._user_request(username, password, client_id, peer, source, certificate)

    def _user_request(self, username: Any, password: Any, client_id: str | None, peer: str | None, source: str,
                      certificate: PresentedCertificate | None) -> AttemptResult:
        """A re-key (``certificate`` None) or rotation request of a user's name."""
        opened = self._opening(username, password, True)
        if isinstance(opened, AttemptResult):
            return opened
        username, now = opened
        if run_sql(self.db, 'SELECT 1 FROM "users" WHERE "name" = ? AND "certificate_pem" IS NOT NULL',
                   (username,)).fetchone():
            return AttemptResult("known_user", f"{username!r} identifies by the certificate the registry signed "
                                               f"for it: it has no password (a new key is a new CSR)")
        print_ = self.base.verifier(username, password)
        fingerprint = certificate.fingerprint if certificate else None
        with self.base.write():
            outcome = self._match_existing(username, print_, client_id, peer, now, fingerprint)
            if outcome:
                return outcome
            refusal = self._flood_refusal(peer, now)
            if refusal:
                return AttemptResult("flood", refusal)
            code = certificate.pairing_code if certificate else crypto.pairing_code(username, password)
            row = SimpleNamespace(
                username=username, verifier=print_, pairing_code=code, client_id=client_id, peer=peer,
                source=source, requested_permissions=None, requested_roles=None, context=None, first_seen=now,
                last_seen=now, attempts=1, status="pending", conflict=False, rekey=certificate is None,
                certificate=fingerprint, certificate_info=json.dumps(certificate.info()) if certificate else None,
                csr=None, rotation=certificate is not None, decided_by=None, decided_at=None)
            (row.id,) = run_sql(self.db, INSERT_REQUEST, tuple(getattr(row, c) for c in REQUEST_COLUMNS)).fetchone()
            flag = {"rotation": True} if certificate else {"rekey": True}
            self.base.event("registry", "request.created", username, request_id=row.id, source=source, peer=peer,
                            client_id=client_id, **flag)
        if certificate:
            return AttemptResult("rotation", f"{username!r} is a user bound to another certificate: a request to "
                                             f"bind it to this one", request=RequestView.of(row), pairing_code=code)
        return AttemptResult("rekey", f"{username!r} is a user with another password: a re-key request",
                             request=RequestView.of(row), pairing_code=code)

    def _match_existing(self, username: str, print_: str, client_id: str | None, peer: str | None,
                        now: float, fingerprint: str | None = None) -> AttemptResult | None:
        """Same name and same credentials (password, and certificate or CSR key) as a stored request: count the
        retry there."""
        R = self.m.Request
        candidates = run_sql(self.db, 'SELECT "id", "verifier", "certificate" FROM "requests" WHERE "username" = ? '
                                      'AND "status" IN (\'pending\', \'denied\')', (username,)).fetchall()
        for request_id, verifier, certificate in candidates:
            if not crypto.same(verifier, print_) or certificate != fingerprint:
                continue
            row = R.get_by_id(request_id)
            row.last_seen, row.attempts = now, row.attempts + 1
            if row.status == "pending":  # a decided row keeps what the operator decided on (counted only)
                row.client_id, row.peer = client_id or row.client_id, peer or row.peer
            run_sql(self.db, 'UPDATE "requests" SET "last_seen" = ?, "attempts" = "attempts" + 1, "client_id" = ?, '
                             '"peer" = ? WHERE "id" = ?', (now, row.client_id, row.peer, row.id))
            if row.status == "pending" and now - self._retry_event_at.get(row.id, 0.0) >= RETRY_EVENT_EVERY:
                if len(self._retry_event_at) > 2 * self.base.config.max_pending:  # a long-running server: stay bounded
                    self._retry_event_at.clear()
                self._retry_event_at[row.id] = now
                self.base.event("registry", "request.retried", username, request_id=row.id, attempts=row.attempts)
            view = RequestView.of(row)
            if row.status == "denied":
                return AttemptResult("denied", "an operator denied this request", request=view,
                                     pairing_code=row.pairing_code)
            return AttemptResult("retry", "still waiting for an operator", request=view,
                                 pairing_code=row.pairing_code)
        return None

    def _flood_refusal(self, peer: str | None, now: float) -> str | None:
        if peer is not None:
            (recent,) = run_sql(self.db, 'SELECT COUNT(*) FROM "requests" WHERE "peer" = ? AND "first_seen" > ?',
                                (peer, now - 60)).fetchone()
            if recent >= self.base.config.per_peer_per_minute:
                self.refused["flood"] += 1
                self.knocks.throttled(peer, now)
                return f"more than {self.base.config.per_peer_per_minute} new requests from {peer} in a minute"
        (pending,) = run_sql(self.db, 'SELECT COUNT(*) FROM "requests" WHERE "status" = \'pending\'').fetchone()
        if pending >= self.base.config.max_pending:
            self.refused["flood"] += 1
            return f"{self.base.config.max_pending} requests are already pending"
        return None
