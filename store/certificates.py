"""What a device's certificate signing request (PKCS#10 CSR) may be, and how it is described to an operator.

A CSR is a registration: its subject's common name is the username the device asks for, so it passes the same
rules as a name sent over MQTT or HTTP (`validation.py`), and its key is one the site accepts. Everything a
device sends is bounded before it is parsed and refused with one line (`CsrRefused`). The registry never sees
a device's private key: a CSR holds the public key and a signature proving the device has the private one.

Two fingerprints, both SHA-256 in lowercase hex (what ``sha256sum`` prints, so firmware or a shell can show
its own): a CSR's is of its public key (DER SubjectPublicKeyInfo), what an operator compares before signing; a
certificate's is of the certificate (DER), what the broker plugin binds an account to. A pairing code is the
first 8 characters of either.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from .errors import InvalidValueError
from .validation import nfc_problem, normalise_username, reserved_problem, text_problem, username_problem

MAX_CSR_BYTES = 16 * 1024  # an RSA-8192 CSR in PEM with a long subject is about 5 KiB
MAX_SUBJECT_CHARS = 1024
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192  # the maximum bounds the work of checking a device's signature
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
PAIRING_CHARS = 8
ACCEPTED_KEYS = "RSA 2048-8192 bits, EC P-256 or P-384, or Ed25519"
MAX_NAME_CHARS = 1024  # a presented certificate's subject or issuer, as the plugin cuts it
_FINGERPRINT = re.compile(r"[0-9a-f]{64}\Z")


class CsrRefused(InvalidValueError):
    """A CSR the registry does not accept; str() is one line saying why."""


@dataclass(frozen=True)
class CheckedCsr:
    """A CSR that passed every rule: what an operator is shown, and the request itself for signing."""

    username: str  # the subject's common name, NFC
    subject: str  # RFC 4514 text
    key_type: str  # "RSA 2048", "EC P-256", "Ed25519"
    fingerprint: str  # SHA-256 of the public key (DER SubjectPublicKeyInfo), lowercase hex
    request: x509.CertificateSigningRequest

    @property
    def pairing_code(self) -> str:
        return pairing_code(self.fingerprint)

    def describe(self) -> list[str]:
        """Lines for an operator (CLI, dashboard details): what to compare with the device before approving."""
        return [f"subject      {self.subject}", f"key          {self.key_type}",
                f"fingerprint  {self.fingerprint}", f"pairing code {self.pairing_code}"]

    def info(self) -> dict[str, Any]:
        """What a CSR request shows an operator (JSON), beside its fingerprint."""
        return {"subject": self.subject, "key_type": self.key_type}

    def pem(self) -> str:
        """The CSR as PEM text (what a request keeps until it is decided: it holds only a public key)."""
        return self.request.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def __repr__(self) -> str:
        return f"CheckedCsr({self.username!r}, {self.key_type}, {self.pairing_code})"


@dataclass(frozen=True)
class PresentedCertificate:
    """The client certificate a device presented on a TLS listener (read by the broker plugin, verified by
    Mosquitto against the listener's CA): what an implicit-flow request records and its user is bound to."""

    fingerprint: str  # SHA-256 of the certificate's DER, lowercase hex
    subject: str  # RFC 2253/4514 text
    issuer: str
    serial: int
    not_before: float  # epoch seconds
    not_after: float

    @property
    def pairing_code(self) -> str:
        return pairing_code(self.fingerprint)

    @classmethod
    def of(cls, certificate: x509.Certificate) -> PresentedCertificate:
        return cls(certificate_fingerprint(certificate), certificate.subject.rfc4514_string(),
                   certificate.issuer.rfc4514_string(), certificate.serial_number,
                   certificate.not_valid_before_utc.timestamp(), certificate.not_valid_after_utc.timestamp())

    def problem(self) -> str | None:
        """None when every field has the shape the plugin reports, else the rule broken (one line)."""
        if not isinstance(self.fingerprint, str) or not _FINGERPRINT.match(self.fingerprint):
            return "a certificate fingerprint is 64 lowercase hex characters (SHA-256)"
        for value, what in ((self.subject, "certificate subject"), (self.issuer, "certificate issuer")):
            broken = text_problem(value, what)
            if broken:
                return broken
            if len(value) > MAX_NAME_CHARS:
                return f"the {what} is longer than {MAX_NAME_CHARS} characters"
        if not isinstance(self.serial, int) or self.serial < 0 or self.serial.bit_length() > 512:
            return "a certificate serial is a number of at most 64 bytes"
        return None

    def info(self) -> dict[str, Any]:
        """What a request shows an operator (JSON): nothing secret, the fingerprint is kept beside it."""
        return {"subject": self.subject, "issuer": self.issuer, "serial": serial_text(self.serial),
                "not_before": self.not_before, "not_after": self.not_after}


# Signs a checked CSR with the site CA. The store never imports broker/: whoever opens a Registry that may
# grant CSR requests passes one in (broker.certificates.sign_device with the loaded CA, and its validity).
CertificateSigner = Callable[[CheckedCsr], x509.Certificate]


def serial_text(serial: int) -> str:
    """A serial as stored and shown: lowercase hex, as ``openssl x509 -serial`` prints it (ignoring case)."""
    return format(serial, "x")


def pairing_code(fingerprint: str) -> str:
    """The first characters of a fingerprint: what the device prints and the operator compares."""
    return fingerprint[:PAIRING_CHARS]


def public_key_fingerprint(key) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER: what the registry plugin computes for a client's certificate."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def key_problem(key) -> str | None:
    """None for a key the site accepts, else the rule it breaks."""
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            return f"an RSA key must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {key.key_size}"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return f"EC curve {key.curve.name} is not accepted (P-256 or P-384)"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return f"{type(key).__name__.removeprefix('_').replace('PublicKey', '') or 'this'} keys are not accepted " \
           f"({ACCEPTED_KEYS})"


def key_type(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {EC_CURVES.get(key.curve.name, key.curve.name)}"
    return "Ed25519"


def check_csr(data: bytes | str) -> CheckedCsr:
    """Parse a PKCS#10 CSR (PEM or DER, at most MAX_CSR_BYTES) and check every rule; CsrRefused otherwise."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise CsrRefused("a CSR in PEM form must be ASCII") from None
    if not isinstance(data, (bytes, bytearray)):
        raise CsrRefused("a CSR must be bytes (PEM or DER)")
    data = bytes(data)
    if len(data) > MAX_CSR_BYTES:
        raise CsrRefused(f"the CSR is {len(data):,} bytes; at most {MAX_CSR_BYTES:,} are accepted")
    if not data.strip():
        raise CsrRefused("the CSR is empty")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            request = x509.load_pem_x509_csr(data)
        else:
            request = x509.load_der_x509_csr(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CsrRefused("not a PKCS#10 certificate signing request (PEM or DER)") from None
    try:
        with warnings.catch_warnings():  # a DSA key: refused below, not worth a warning on stderr
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            key = request.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRefused(f"the CSR's public key cannot be read ({ACCEPTED_KEYS})") from None
    problem = key_problem(key)
    if problem:
        raise CsrRefused(problem)
    try:
        valid = request.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CsrRefused("the CSR's signature does not match its public key")
    username, subject = _subject(request)
    return CheckedCsr(username, subject, key_type(key), public_key_fingerprint(key), request)


def _subject(request: x509.CertificateSigningRequest) -> tuple[str, str]:
    """The username (the one common name) and the subject as text, or CsrRefused."""
    try:
        with warnings.catch_warnings():  # a CN over X.509's 64 characters: the username rule says it below
            warnings.simplefilter("ignore", UserWarning)
            name = request.subject
        attributes = list(name)
        text = name.rfc4514_string()
        values = [(attribute.oid, attribute.value) for attribute in attributes]
    except (ValueError, UnicodeDecodeError):
        raise CsrRefused("the CSR's subject cannot be read (not valid UTF-8, or malformed)") from None
    if any(len(rdn) != 1 for rdn in name.rdns):
        raise CsrRefused("the CSR's subject must not hold multi-valued names (a '+' in the subject)")
    for _, value in values:
        if not isinstance(value, str):
            raise CsrRefused("the CSR's subject holds a value that is not text")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
            raise CsrRefused("the CSR's subject must not contain control or formatting characters")
    if len(text) > MAX_SUBJECT_CHARS:
        raise CsrRefused(f"the CSR's subject is longer than {MAX_SUBJECT_CHARS} characters")
    names = [value for oid, value in values if oid == NameOID.COMMON_NAME and isinstance(value, str)]  # all are
    if len(names) != 1:
        raise CsrRefused("the CSR's subject must hold exactly one common name (CN): the username"
                         + (f", not {len(names)}" if names else ""))
    username = names[0]
    for problem in (username_problem(username), nfc_problem(username), reserved_problem(username)):
        if problem:
            raise CsrRefused(f"the CSR's common name is not a valid username: {problem}")
    return normalise_username(username), text  # NFC already (nfc_problem)
