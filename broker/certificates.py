"""The site's certificate authority as files: a CA and a server certificate for a quick start, device
certificates signed from checked CSRs, and the revocation list Mosquitto reads (its listener's ``crlfile``).

The rules of what a CSR may be live in `store/certificates.py`; this module makes and writes files. Every file
is private (0600, or 0640 for Mosquitto's group) and replaced atomically, named after the database as the other
companion files are (``registry.db`` -> ``registry.tls-ca.pem`` beside it). A device's private key is never
made or written here: the device keeps it and sends a CSR.

Measured in Mosquitto 2.0.11's source: the listener loads ``crlfile`` at start, and again on SIGHUP (the
reload recreates the TLS context of a listener with certfile, keyfile, crlfile and require_certificate); a
reload changes nothing for connections already open, and an expired CRL makes OpenSSL refuse every client,
so the CRL written here is valid for years and rewritten whole on each revocation.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from store.certificates import CheckedCsr
from store.errors import RefusedError
from store.location import companion
from store.private_files import write_private

DEVICE_DAYS = 365
CA_DAYS = 10 * 365
SERVER_DAYS = 825  # the longest server certificate lifetime browsers and most TLS stacks accept
CRL_DAYS = 10 * 365  # OpenSSL refuses every client once nextUpdate passes: the file is rewritten on change
MAX_DEVICE_DAYS = 10 * 365
CLOCK_SKEW = dt.timedelta(minutes=5)  # a device whose clock is a little behind still accepts its certificate


class CertificateError(RefusedError):
    """A file of the site CA is missing, unreadable or would be overwritten; str() is one line."""


@dataclass(frozen=True)
class TlsFiles:
    """Where one database's TLS files live (``registry.tls-*`` beside ``registry.db``)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    crl: Path

    @classmethod
    def for_database(cls, location: str) -> TlsFiles:
        return cls(*(companion(location, name) for name in
                     ("tls-ca.pem", "tls-ca.key", "tls-server.pem", "tls-server.key", "tls-crl.pem")))

    def all(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.ca_key, self.server_cert, self.server_key, self.crl)

    def listener_options(self) -> list[str]:
        """Mosquitto's options for the TLS listener whose ``listener`` line they follow: a client certificate
        signed by the site CA is required at the handshake, revoked serials are refused, and basic auth still
        runs (no ``use_identity_as_username``: with it Mosquitto never asks the registry plugin)."""
        return [f"cafile {self.ca_cert}", f"certfile {self.server_cert}", f"keyfile {self.server_key}",
                "require_certificate true", f"crlfile {self.crl}"]


@dataclass(frozen=True)
class SiteCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def __repr__(self) -> str:  # the key stays out of logs
        return f"SiteCA({self.certificate.subject.rfc4514_string()!r})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(certificate: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _signing_hash(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(common_name: str = "client-registry site CA", days: int = CA_DAYS) -> SiteCA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    return SiteCA(certificate, key)


def _leaf(ca: SiteCA, subject: x509.Name, public_key, days: int, usage: x509.ObjectIdentifier,
          names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca.certificate.subject)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, _signing_hash(ca.key))


def make_server_certificate(ca: SiteCA, hosts: Iterable[str], days: int = SERVER_DAYS,
                            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for the broker (and the HTTPS API), valid for each host name or IP address."""
    hosts = list(dict.fromkeys(hosts))
    if not hosts:
        raise CertificateError("a server certificate needs at least one host name or address")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return _leaf(ca, subject, key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH, names), key


def sign_device(ca: SiteCA, csr: CheckedCsr, days: int = DEVICE_DAYS) -> x509.Certificate:
    """The device's certificate: subject CN = its username (nothing else of the CSR is copied, requested
    extensions included), a random serial, clientAuth only, at most ``days`` (and never past the CA)."""
    if not 1 <= days <= MAX_DEVICE_DAYS:
        raise CertificateError(f"a device certificate is valid for 1 to {MAX_DEVICE_DAYS} days, not {days}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, csr.username)])
    return _leaf(ca, subject, csr.request.public_key(), days, ExtendedKeyUsageOID.CLIENT_AUTH)


def build_crl(ca: SiteCA, revoked: Iterable[tuple[int, dt.datetime]], days: int = CRL_DAYS,
              ) -> x509.CertificateRevocationList:
    """The revocation list of (serial, revoked at) pairs, signed by the CA; an empty list is valid too (a
    listener with ``crlfile`` needs a file from its first start)."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(now).next_update(now + dt.timedelta(days=days)))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca.key, _signing_hash(ca.key))


# -- files -----------------------------------------------------------------------------------------------------

def init_files(files: TlsFiles, hosts: Iterable[str], group: int | None = None) -> SiteCA:
    """A new site CA, a server certificate for ``hosts`` and an empty CRL, written 0600 (0640 for ``group``,
    Mosquitto's, which reads all but the CA key). Refuses to overwrite any of them."""
    existing = [path for path in files.all() if path.exists()]
    if existing:
        raise CertificateError(f"{existing[0]} exists already: remove the TLS files to make a new CA")
    ca = make_ca()
    server, server_key = make_server_certificate(ca, hosts)
    files.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    write_private(files.ca_key, _key_pem(ca.key))
    write_private(files.ca_cert, _pem(ca.certificate), group=group)
    write_private(files.server_key, _key_pem(server_key), group=group)
    write_private(files.server_cert, _pem(server) + _pem(ca.certificate), group=group)  # the chain Mosquitto sends
    write_crl(files, build_crl(ca, ()), group)
    return ca


def load_ca(files: TlsFiles) -> SiteCA:
    try:
        certificate = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertificateError(f"{exc.filename} not found: make the site CA first") from None
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename} ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{files.ca_cert} or {files.ca_key} is not a PEM certificate and key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CertificateError(f"{files.ca_key} holds an unsupported key ({type(key).__name__}): the site CA's key "
                               "must be EC, RSA or Ed25519")
    if certificate.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f"{files.ca_key} is not the key of {files.ca_cert}")
    return SiteCA(certificate, key)


def write_crl(files: TlsFiles, crl: x509.CertificateRevocationList, group: int | None = None) -> None:
    """Replace Mosquitto's ``crlfile`` atomically: a broker (re)loading it reads the old list or the new one."""
    write_private(files.crl, _pem(crl), group=group)


def revoke(files: TlsFiles, revoked: Iterable[tuple[int, dt.datetime]], group: int | None = None) -> None:
    """Rewrite the CRL with every revoked serial (the store keeps the list; this file is derived from it).
    Mosquitto reads it on SIGHUP or restart; open connections are the registry plugin's to kick."""
    write_crl(files, build_crl(load_ca(files), revoked), group)


def pem(certificate: x509.Certificate) -> bytes:
    """A certificate as the PEM bytes a device fetches."""
    return _pem(certificate)
