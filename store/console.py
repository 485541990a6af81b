"""The console account: an admin the dashboard uses to log in to the broker without typing a password.

Created on the server's first start with a random password kept beside the database (mode 0600), or taken
from $CLIENT_REGISTRY_CONSOLE_PASSWORD.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from .private_files import write_private
from .registry import CONSOLE_USER, Registry

CREDENTIALS_FILE = "console.credentials"  # registry.db -> registry.console.credentials
ENV_PASSWORD = "CLIENT_REGISTRY_CONSOLE_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password by accident
        return f"Credentials(username={self.username!r}, password=***)"


def read_console_credentials(reg: Registry) -> Credentials | None:
    env = os.environ.get(ENV_PASSWORD)
    if env:
        return Credentials(CONSOLE_USER, env)
    try:
        password = reg.companion(CREDENTIALS_FILE).read_text().strip()
    except OSError:
        return None
    return Credentials(CONSOLE_USER, password) if password else None


def ensure_console_account(reg: Registry) -> Credentials:
    """The console admin exists, is enabled, and its password is the one on file (or in the environment)."""
    creds = read_console_credentials(reg)
    if creds is None:
        creds = Credentials(CONSOLE_USER, secrets.token_urlsafe(24))
        write_private(reg.companion(CREDENTIALS_FILE), creds.password + "\n")
    user = reg.user(CONSOLE_USER)
    if user is None:
        reg.add_user(CONSOLE_USER, creds.password, admin=True, actor="server", how="console")
    elif not reg.authenticate(CONSOLE_USER, creds.password):
        if user.disabled:
            reg.enable_user(CONSOLE_USER, actor="server")
        if not reg.authenticate(CONSOLE_USER, creds.password):
            reg.set_password(CONSOLE_USER, creds.password, actor="server")
    return creds
