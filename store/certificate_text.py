"""How a certificate request and a certificate-bound user are named to an operator, the one place for the CLI
and the dashboard: a request's identity (``csr``: it sent a CSR, granting signs it; ``cert``: it presented a
certificate on a TLS listener) and what to compare before granting (subject, issuer, serial, validity, key
type, fingerprint); a user's binding (``cert-only``: it identifies by the certificate the registry signed and
has no password; ``cert``: bound to a certificate, with its password). Device strings are returned as they
are: callers escape them (``printable``, ``safe_text``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .views import UserView

CSR, CERT, CERT_ONLY = "csr", "cert", "cert-only"


def request_identity(req: Any) -> str | None:
    """``csr``, ``cert`` or None (a password only)."""
    if getattr(req, "csr", False):
        return CSR
    return CERT if getattr(req, "certificate", None) else None


def user_binding(user: UserView) -> str | None:
    """``cert-only`` (``UserView.certificate_only``), ``cert`` or None."""
    if user.certificate_only:
        return CERT_ONLY
    return CERT if user.certificate else None


def _day(moment: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(moment)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def certificate_fields(req: Any) -> list[tuple[str, str]]:
    """(label, value) pairs describing a request's certificate or CSR; [] for a password request."""
    identity = request_identity(req)
    if identity is None:
        return []
    info = getattr(req, "certificate_info", None) or {}
    fields = [("identity", "CSR: granting signs it with the site CA" if identity == CSR
               else "certificate presented over TLS" + (" (a rotation: another certificate for this user)"
                                                         if getattr(req, "rotation", False) else ""))]
    fields.append(("subject", str(info.get("subject", "?"))))
    if identity == CSR:
        fields.append(("key type", str(info.get("key_type", "?"))))
    else:
        fields += [("issuer", str(info.get("issuer", "?"))), ("serial", str(info.get("serial", "?"))),
                   ("valid", f"{_day(info.get('not_before'))} to {_day(info.get('not_after'))}")]
    fields.append(("fingerprint", str(req.certificate) + (" (SHA-256 of the public key)" if identity == CSR
                                                           else " (SHA-256 of the certificate)")))
    return fields
