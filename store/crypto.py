"""Password hashing, fingerprints and pairing codes.

argon2id with t=2, m=19 MiB, p=1: the OWASP minimum for argon2id. On a 2-core gateway one hash costs
about 20-40 ms and 19 MiB, so a burst of registrations cannot exhaust memory, while an offline attack on a
leaked database still pays the memory-hard price per guess. Verifications that succeed are cached by HMAC
(see Registry.authenticate), so reconnect storms do not pay argon2 again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)

# Verified against when the user does not exist, so an unknown name costs the same time as a wrong password.
DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))

SECRET_FILE = "server.secret"


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored_hash or DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def pairing_code(username: str, password: str) -> str:
    """First 6 characters of base32(SHA-256(username + "\\n" + password)): what device firmware prints."""
    digest = hashlib.sha256(f"{username}\n{password}".encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii")[:6]


def fingerprint(secret: bytes, username: str, password: str) -> str:
    """HMAC-SHA256 of name and password under the server secret: matches retries without argon2."""
    message = username.encode("utf-8", "surrogatepass") + b"\0" + password.encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def load_or_create_secret(folder: Path) -> bytes:
    """The server secret, created once beside the database with mode 0600."""
    path = folder / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    # Write a private temporary file, then link it into place: a racing process either wins or reads a
    # complete file, never a half-written one.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value.hex() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return bytes.fromhex(path.read_text().strip())
    finally:
        os.unlink(tmp)
    return value
