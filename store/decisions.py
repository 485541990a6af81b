"""The operator's decisions on requests: grant (a new user from a request, a re-key or a certificate rotation of
an existing one, a CSR signed) and deny. An approval rule grants through :meth:`Decisions.grant_one` too. A part of
:class:`store.registry.Registry`, the one entry point."""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .access import AccessCache
from .base import Base, Part
from .certificates import CertificateSigner, certificate_fingerprint, check_csr, public_key_fingerprint, serial_text
from .database import guarded, run_sql
from .errors import InvalidValueError, RefusedError, StoreError
from .expiry import Expiry
from .roles import Roles
from .validation import normalise_username, parse_permission, text_problem
from .views import ItemResult, RequestView

DENY_BATCH = 500  # requests denied per transaction: a flood clears fast, the writer lock is held briefly


class Decisions(Part):
    def __init__(self, base: Base, cache: AccessCache, roles: Roles, expiry: Expiry,
                 signer: CertificateSigner | None = None) -> None:
        super().__init__(base)
        self.cache, self.roles, self.expiry = cache, roles, expiry
        self.signer = signer  # signs a granted CSR (Registry's ``signer``); None: CSR requests cannot be granted

    def _resolve_items(self, items: Iterable[Any]) -> list[tuple[str, list[int] | str]]:
        """Each item (id or username) with the ids of its pending requests, or an error string (hand-written
        SQL: Peewee's query building cost ~1 ms an item, 14 s for a glob deny of 10,000)."""
        out: list[tuple[str, list[int] | str]] = []
        for item in items:
            text = normalise_username(str(item))
            problem = text_problem(text, "name")
            if problem:
                out.append((text, problem))
                continue
            if text.isdigit():
                found = run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "id" = ?', (int(text),)).fetchone()
                out.append((text, [found[0]] if found else f"no request #{text}"))
                continue
            ids = [i for (i,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                         '"status" = \'pending\' ORDER BY "id"', (text,))]
            if not ids:
                latest = run_sql(self.db, 'SELECT "status" FROM "requests" WHERE "username" = ? ORDER BY "id" DESC'
                                 ' LIMIT 1', (text,)).fetchone()
                out.append((text, f"{text!r} has no pending request" + (f" (it is {latest[0]})" if latest else "")))
            else:
                out.append((text, ids))
        return out

    @guarded
    def grant(self, ids_or_names: Iterable[Any], permissions: Iterable[Any] | None = (), actor: str = "cli",
              force: bool = False, requested: bool = False, roles: Iterable[str] = ()) -> list[ItemResult]:
        """Create users from pending requests. ``permissions`` (``"PATTERN=ACCESS"`` or pairs) is the template
        every granted user gets, ``roles`` (names) the roles; ``requested=True`` also gives each device what it
        asked for (HTTP requests: permissions and roles), the template winning where both name a pattern and
        the operator's roles coming first. ``permissions=None`` is ``requested=True`` alone. An unknown role
        is refused before anything is written; a requested one refuses that request only."""
        if permissions is None:
            permissions, requested = (), True
        try:
            template = [parse_permission(p) for p in permissions]
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        roles = [r.name for r in self.roles.existing(list(roles))]
        self.expiry.expire_stale()
        results: list[ItemResult] = []
        for item, rows in self._resolve_items(ids_or_names):
            if isinstance(rows, str):
                results.append(ItemResult(item, False, rows))
                continue
            if len(rows) > 1:
                results.append(ItemResult(item, False, (
                    f"{item!r} has {len(rows)} conflicting requests "
                    f"(#{', #'.join(map(str, rows))}): grant one by id with force")))
                continue
            results.append(self.grant_one(item, rows[0], template, requested, actor, force, roles))
        self.base.scrub_secrets(any(r.ok for r in results))
        return results

    def grant_one(self, item: str, request_id: int, template: list[tuple[str, str]], requested: bool, actor: str,
                  force: bool, roles: Iterable[str] = (), **detail: Any) -> ItemResult:
        """``detail``: more for the request.granted event (an approval rule names itself there). Hand-written
        SQL: an approval rule runs this for every device it admits (peewee's query building cost ~1.2 ms of the
        1.8 ms a device took, measured with 2,000 admissions)."""
        now = self.base.clock()
        with self.base.write():
            row = self._request_row(request_id)  # re-read inside the transaction: another operator may have decided
            if row.status != "pending":
                return ItemResult(item, False, f"request #{row.id} ({row.username}) is already {row.status}",
                                  RequestView.of(row))
            reserved = self.base.reserved(row.username)  # again: the site may have created the name since
            if reserved:
                return ItemResult(item, False, f"request #{row.id} ({row.username}): {reserved}", RequestView.of(row))
            rivals = [r for (r,) in run_sql(self.db, 'SELECT "id" FROM "requests" WHERE "username" = ? AND '
                                                     '"status" = \'pending\' AND "id" <> ?',
                                            (row.username, row.id)).fetchall()]
            if rivals and not force:
                return ItemResult(item, False, (
                    f"request #{row.id} ({row.username}) conflicts with #"
                    f"{', #'.join(str(r) for r in rivals)}: confirm with force"), RequestView.of(row),
                    needs_force=True)
            existing = self.base.user_row(row.username) if row.rekey or row.rotation or \
                self.base.is_user(row.username) else None
            if existing is not None and row.rekey:
                return self._grant_rekey(item, row, existing, actor, force, now)
            if existing is not None and row.rotation:
                return self._grant_rotation(item, row, existing, actor, force, now)
            if existing is not None:
                return ItemResult(item, False, f"{row.username!r} is already a user", RequestView.of(row))
            perms = [(p["resource"], p["operation"]) for p in json.loads(row.requested_permissions or "[]")
                     ] if requested else []
            perms += template  # after the requested ones: the operator's access wins for the same pattern
            wanted = list(roles) + (json.loads(row.requested_roles or "[]") if requested else [])
            try:
                role_rows = self.roles.existing(wanted) if wanted else []
            except RefusedError as exc:  # a role the device asked for is gone (or never was): grant nothing
                return ItemResult(item, False, f"request #{row.id} ({row.username}): {exc}", RequestView.of(row))
            bound: tuple[str | None, str | None, str | None] = (row.certificate, None, None)  # fingerprint, serial, PEM
            if row.csr is not None:
                signed = self._sign(row)
                if isinstance(signed, str):
                    return ItemResult(item, False, f"request #{row.id} ({row.username}): {signed}",
                                      RequestView.of(row))
                bound = signed
            (user_id,) = run_sql(self.db, 'INSERT INTO "users" ("name", "verifier", "client_id", "admin", "disabled", '
                                          '"created_at", "created_by", "created_how", "certificate", '
                                          '"certificate_serial", "certificate_pem") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '
                                          '?, ?) RETURNING "id"',
                                 (row.username, row.verifier, row.client_id, False, False, now, actor,
                                  f"registration-{row.source}", *bound)).fetchone()
            for pattern, access in dict(perms).items():
                run_sql(self.db, 'INSERT INTO "permissions" ("user_id", "pattern", "access") VALUES (?, ?, ?)',
                        (user_id, pattern, access))
            for position, role in enumerate(role_rows):  # a new user: its roles in order, from 0
                run_sql(self.db, 'INSERT INTO "user_roles" ("user_id", "role_id", "position") VALUES (?, ?, ?)',
                        (user_id, role.id, position))
            run_sql(self.db, 'UPDATE "requests" SET "status" = \'granted\', "decided_by" = ?, "decided_at" = ?, '
                             '"pairing_code" = NULL, "csr" = NULL WHERE "id" = ?', (actor, now, row.id))
            for rival in rivals:
                run_sql(self.db, 'UPDATE "requests" SET "status" = \'denied\', "decided_by" = ?, "decided_at" = ?, '
                                 '"pairing_code" = NULL, "csr" = NULL WHERE "id" = ?', (actor, now, rival))
                self.base.event(actor, "request.denied", row.username, request_id=rival,
                                reason=f"rival of granted request #{row.id}")
            self.base.event(actor, "request.granted", row.username, request_id=row.id,
                            permissions=[{"pattern": p, "access": a} for p, a in dict(perms).items()],
                            roles=[r.name for r in role_rows], **detail)
        self.cache.invalidate(row.username)
        row.status, row.decided_by, row.decided_at, row.pairing_code, row.csr = "granted", actor, now, None, None
        return ItemResult(item, True, f"granted {row.username} (request #{row.id})", RequestView.of(row))

    def _request_row(self, request_id: int) -> SimpleNamespace:
        """One request's columns as attributes (what RequestView.of reads), without a model instance."""
        cursor = run_sql(self.db, 'SELECT * FROM "requests" WHERE "id" = ?', (request_id,))
        found = cursor.fetchone()
        if found is None:
            raise RefusedError(f"no request #{request_id}")
        row = SimpleNamespace(**dict(zip([c[0] for c in cursor.description], found, strict=True)))
        row.conflict, row.rekey, row.rotation = bool(row.conflict), bool(row.rekey), bool(row.rotation)
        return row

    def _sign(self, row: Any) -> tuple[str, str, str] | str:
        """The certificate signed for a CSR request as (fingerprint, hex serial, PEM), or why not (one line)."""
        if self.signer is None:
            return "no site CA to sign its CSR with here (grant it where the registry's CA is, e.g. the service)"
        try:
            certificate: x509.Certificate = self.signer(check_csr(row.csr))
        except StoreError as exc:  # the CA's files are missing or unreadable (broker.certificates.CertificateError)
            return f"cannot sign its CSR: {exc}"
        if public_key_fingerprint(certificate.public_key()) != row.certificate:
            raise RuntimeError("the signer returned a certificate for another key")  # a bug, never a device's doing
        return (certificate_fingerprint(certificate), serial_text(certificate.serial_number),
                certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))

    def _grant_rekey(self, item: str, row: Any, user: Any, actor: str, force: bool, now: float) -> ItemResult:
        """A re-key request (inside grant_one's transaction): with force the user's password becomes the one
        the device sent, and its live sessions are disconnected; its permissions and roles stay as they are."""
        if not force:
            return ItemResult(item, False, (
                f"request #{row.id} ({row.username}) is a new password for an existing user (a re-flashed or "
                f"replaced device?): confirm with force"), RequestView.of(row),
                needs_force=True)
        run_sql(self.db, 'UPDATE "users" SET "verifier" = ? WHERE "id" = ?', (row.verifier, user.id))
        run_sql(self.db, 'UPDATE "requests" SET "status" = \'granted\', "decided_by" = ?, "decided_at" = ?, '
                         '"pairing_code" = NULL WHERE "id" = ?', (actor, now, row.id))
        self.base.event(actor, "user.password_changed", row.username, request_id=row.id, rekey=True)
        self.base.event(actor, "request.granted", row.username, request_id=row.id, rekey=True, permissions=[], roles=[])
        self.cache.invalidate(row.username)
        row.status, row.decided_by, row.decided_at, row.pairing_code = "granted", actor, now, None
        return ItemResult(item, True, f"re-keyed {row.username} (request #{row.id}): its new password is in effect",
                          RequestView.of(row))

    def _grant_rotation(self, item: str, row: Any, user: Any, actor: str, force: bool, now: float) -> ItemResult:
        """A rotation request (inside grant_one's transaction): with force the user is bound to the certificate
        the device presented (the broker kicks its sessions); its password, permissions and roles stay."""
        if not force:
            return ItemResult(item, False, (
                f"request #{row.id} ({row.username}) binds an existing user to another certificate (a renewed or "
                f"replaced device?): confirm with force"), RequestView.of(row),
                needs_force=True)
        run_sql(self.db, 'UPDATE "users" SET "certificate" = ? WHERE "id" = ?', (row.certificate, user.id))
        run_sql(self.db, 'UPDATE "requests" SET "status" = \'granted\', "decided_by" = ?, "decided_at" = ?, '
                         '"pairing_code" = NULL WHERE "id" = ?', (actor, now, row.id))
        self.base.event(actor, "user.certificate_changed", row.username, request_id=row.id)
        self.base.event(actor, "request.granted", row.username, request_id=row.id, rotation=True, permissions=[],
                        roles=[])
        self.cache.invalidate(row.username)
        row.status, row.decided_by, row.decided_at, row.pairing_code = "granted", actor, now, None
        return ItemResult(item, True, f"bound {row.username} to its new certificate (request #{row.id})",
                          RequestView.of(row))

    @guarded
    def deny(self, ids_or_names: Iterable[Any], actor: str = "cli") -> list[ItemResult]:
        """Deny pending requests, in transactions of up to ``DENY_BATCH`` (clearing a flood of 10,000 by glob
        took 7.7 s by ids, one transaction each)."""
        results: list[ItemResult] = []
        plan: list[tuple[str, int | str]] = []  # (item, request id or why it resolves to none), in the items' order
        for item, ids in self._resolve_items(ids_or_names):
            plan += [(item, ids)] if isinstance(ids, str) else [(item, request_id) for request_id in ids]
        for start in range(0, len(plan), DENY_BATCH):
            now = self.base.clock()
            with self.base.write():
                for item, request_id in plan[start:start + DENY_BATCH]:
                    if isinstance(request_id, str):
                        results.append(ItemResult(item, False, request_id))
                        continue
                    row = self._request_row(request_id)
                    if row.status != "pending":
                        results.append(ItemResult(item, False, f"request #{row.id} ({row.username}) is already"
                                                  f" {row.status}", RequestView.of(row)))
                        continue
                    run_sql(self.db, 'UPDATE "requests" SET "status" = \'denied\', "decided_by" = ?, "decided_at" = ?,'
                            ' "pairing_code" = NULL, "csr" = NULL WHERE "id" = ?', (actor, now, row.id))
                    self.base.event(actor, "request.denied", row.username, request_id=row.id)
                    row.status, row.decided_by, row.decided_at, row.pairing_code = "denied", actor, now, None
                    results.append(ItemResult(item, True, f"denied {row.username} (request #{row.id})",
                                              RequestView.of(row)))
        self.base.scrub_secrets(any(r.ok for r in results))
        return results
