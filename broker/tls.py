"""The TLS listeners `serve` is asked for: the files they use, checked before anything starts, Mosquitto's lines
for its TLS listener and the HTTPS context of the registration API (the same server certificate).

`broker/certificates.py` makes the site CA's files (`client-registry tls init`); an operator may bring their
own CA and server certificate instead (``--tls-cert``/``--tls-key``/``--tls-ca``). The CRL (``crlfile``) is
set whenever the CA is the registry's own: the registry signs device certificates with it and revokes them
there; a CA of the site's is the site's to revoke with.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path

from .address import ANY_HOST, MQTTS_PORT
from .certificates import TlsFiles

TLS_PORT = MQTTS_PORT


class TlsError(ValueError):
    """A TLS file that cannot be used; str() is one line."""


@dataclass(frozen=True)
class TlsSettings:
    cert: Path  # the server certificate (its chain after it), PEM
    key: Path
    ca: Path | None = None  # the CA device certificates are checked against (and clients told to trust)
    crl: Path | None = None  # Mosquitto's crlfile: only with the registry's own CA
    bind: tuple[str, int] = (ANY_HOST, TLS_PORT)
    require_certificate: bool = False  # every device presents a certificate signed by ``ca``
    http: bool = False  # the registration API over HTTPS too
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_database(cls, location: str, **options) -> TlsSettings:
        """The files `tls init` made beside the database, with their CRL."""
        files = TlsFiles.for_database(location)
        return cls(files.server_cert, files.server_key, files.ca_cert, files.crl, **options)

    def checked(self) -> TlsSettings:
        """The same settings once every file has been read and the key found to match the certificate, with
        the HTTPS context; TlsError names the first file that cannot be used."""
        if self.require_certificate and self.ca is None:
            raise TlsError("--tls-require-certificate needs the CA that signs device certificates (--tls-ca)")
        for path in (self.cert, self.key, self.ca, self.crl):
            if path is not None:
                _readable(path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError:
            raise TlsError(f"{self.key} is not the key of {self.cert}, or one of them is not PEM") from None
        if self.ca is not None:
            try:
                ssl.create_default_context(cafile=str(self.ca))
            except ssl.SSLError:
                raise TlsError(f"{self.ca} holds no PEM CA certificate") from None
        return replace(self, context=context)

    def mosquitto_lines(self) -> list[str]:
        """The options that follow this listener's ``listener`` line. No ``use_identity_as_username``: with it
        Mosquitto never asks the registry plugin (see docs/ARCHITECTURE.md, TLS)."""
        lines = [f"certfile {self.cert}", f"keyfile {self.key}"]
        if self.ca is not None:
            lines.append(f"cafile {self.ca}")
        if self.require_certificate:
            lines.append("require_certificate true")
        if self.crl is not None:
            lines.append(f"crlfile {self.crl}")
        return lines

    def files(self) -> list[Path]:
        return [p for p in (self.cert, self.key, self.ca, self.crl) if p is not None]


def _readable(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TlsError(f"{path} not found (make the TLS files with `client-registry tls init`)") from None
    except IsADirectoryError:
        raise TlsError(f"{path} is a folder, not a PEM file") from None
    except OSError as exc:
        raise TlsError(f"cannot read {path} ({exc.strerror})") from None
