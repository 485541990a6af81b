"""The signer a registry is opened with where it may grant CSR requests (the service, the CLI's `grant`, the
dashboard): the site CA beside the database (`TlsFiles.for_database`), read when a CSR is granted, not when the
registry is opened, so a CA made by `client-registry tls init` after a process started is used at its next
grant; without one, granting a CSR request is refused in one line saying how to make it."""

from __future__ import annotations

from typing import Any

from cryptography import x509

from store import open_registry
from store.certificates import CertificateSigner, CheckedCsr
from store.location import resolve

from .certificates import DEVICE_DAYS, CertificateError, TlsFiles, load_ca, sign_device


def site_signer(location: str, days: int = DEVICE_DAYS) -> CertificateSigner:
    """Signs a checked CSR with the site CA of the database at ``location``, valid ``days`` days."""
    files = TlsFiles.for_database(location)

    def sign(checked: CheckedCsr) -> x509.Certificate:
        if not files.ca_cert.exists() and not files.ca_key.exists():
            raise CertificateError(f"no site CA beside the database ({files.ca_cert}): "
                                   f"make one with `client-registry tls init`")
        return sign_device(load_ca(files), checked, days)

    return sign


def open_signing_registry(db: str | None, *, certificate_days: int = DEVICE_DAYS, **options: Any) -> Any:
    """``store.open_registry`` with the site CA's signer (see the module's docstring)."""
    location = resolve(db)
    return open_registry(location, signer=site_signer(location, certificate_days), **options)
