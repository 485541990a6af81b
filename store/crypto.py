"""Verifiers, pairing codes and the server secret.

A password is never stored. Requests and users keep an HMAC-SHA256 verifier of name and password under a
per-database server secret: enough to recognise a retry, or a granted device's first login, with one HMAC.
The registry plugin checks every known device against the same verifier inside Mosquitto (it reads the
secret), so no Python runs for a known device's login (docs/SECURITY.md says what each file gives an attacker).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from .private_files import write_private


def pairing_code(username: str, password: str) -> str:
    """First 6 characters of base32(SHA-256(username + "\\n" + password)): what device firmware prints."""
    digest = hashlib.sha256(f"{username}\n{password}".encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii")[:6]


def verifier(secret: bytes, username: str, password: str) -> str:
    """HMAC-SHA256 of name and password under the server secret (hex)."""
    message = username.encode("utf-8", "surrogatepass") + b"\0" + password.encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def certificate_only_verifier(secret: bytes, username: str) -> str:
    """The stored verifier of a user that identifies by a certificate alone (its CSR was signed): an HMAC of a
    message starting with 0xFF, a byte no UTF-8 text holds, so no ``name NUL password`` is ever that message
    and no password matches it, here or in the broker plugin. The plugin is given the empty password's
    verifier instead, with the certificate binding in the same record (store/access.py)."""
    message = b"\xffcertificate-only\0" + username.encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    """Constant-time comparison of two verifiers (None never matches)."""
    return a is not None and hmac.compare_digest(a, b)


def load_or_create_secret(path: Path) -> bytes:
    """The server secret of one database (``registry.secret`` beside ``registry.db``), created once, 0600."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    value = secrets.token_bytes(32)
    # A racing process either created it first (its secret wins) or reads our whole file, never half of one.
    if not write_private(path, value.hex() + "\n", replace=False):
        return bytes.fromhex(path.read_text().strip())
    return value
