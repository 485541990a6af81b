"""What a registration may contain. Each check returns None or the one-line rule that was broken."""

from __future__ import annotations

import json
import re
import unicodedata

from .topics import ACCESS_VALUES, filter_problem

USERNAME_MIN, USERNAME_MAX = 3, 128
PASSWORD_MIN, PASSWORD_MAX = 5, 1024
MAX_REQUESTED_PERMISSIONS = 100
MAX_CONTEXT_BYTES = 16 * 1024
ROLE_MAX = 64
MAX_REQUESTED_ROLES = 20
# ASCII only: a role name is typed in commands, scripts and HTTP bodies and becomes part of a broker role's
# name, so it cannot pass for another one (no look-alikes, no '/', '+', '#', spaces or control characters).
_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def normalise_username(username):
    """The one form of a name that every rule sees and the store keeps: Unicode NFC, so a composed "é" and
    "e" + U+0301 are the same name. Called where a name enters the store (attempts, add_user, grant and
    every lookup by name); anything that is not a string is returned as it is, for the rules to refuse."""
    if isinstance(username, str) and not username.isascii():
        return unicodedata.normalize("NFC", username)
    return username


def text_problem(value, field: str) -> str | None:
    """A string that UTF-8 can carry, or the rule it breaks: bytes (what a broker failed to decode) and
    strings holding a lone surrogate (what a JSON "\\ud800" escape decodes to) are refused."""
    if isinstance(value, (bytes, bytearray)):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return f"{field} must be valid UTF-8"
        return f"{field} must be a string, not bytes"
    if not isinstance(value, str):
        return f"{field} must be a string"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{field} must be valid UTF-8 (lone surrogate U+{ord(value[exc.start]):04X})"
    return None


def username_problem(username) -> str | None:
    problem = text_problem(username, "username")
    if problem:
        return problem
    username = normalise_username(username)  # the rules are about the name as it will be stored
    if len(username) < USERNAME_MIN:
        return f"username must be at least {USERNAME_MIN} characters"
    if len(username) > USERNAME_MAX:
        return f"username must be at most {USERNAME_MAX} characters"
    if "+" in username or "#" in username:
        return "username must not contain '+' or '#'"
    if _has_control(username):  # includes NUL
        return "username must not contain control characters"
    if username != username.strip():
        return "username must not start or end with whitespace"
    return None


def nfc_problem(username) -> str | None:
    """A device must send its name in NFC, the form the store keeps: Mosquitto and the registry plugin compare
    names byte for byte, so a device sending another form (``e`` + U+0301 for ``é``) could never log in as the
    account it would be granted. Checked on the name as sent, before it is normalised."""
    if isinstance(username, str) and not username.isascii() and not unicodedata.is_normalized("NFC", username):
        return "username must be sent in Unicode NFC form (the broker compares names byte for byte)"
    return None


RESERVED_PREFIX = "client-registry-"  # the service's and the console's own accounts: never a device's


def reserved_problem(username: str, site_account: bool = False) -> str | None:
    """Names the registry never hands to a device: its own accounts (the service's lives only in the broker
    plugin, the console's is created by the server), and in attach mode every account the site's broker
    already has (``site_account``: the store looks the name up in ``site_accounts``), which the registry did
    not create and never modifies or shadows. Checked when a device asks, again at grant time, and when an
    operator adds a user."""
    if normalise_username(username).casefold().startswith(RESERVED_PREFIX):
        return f"usernames starting with {RESERVED_PREFIX!r} are reserved for the registry's own accounts"
    if site_account:
        return "this username is an account of the site's own broker, which the registry does not manage"
    return None


def role_name_problem(name) -> str | None:
    problem = text_problem(name, "role name")
    if problem:
        return problem
    if not name:
        return "role name is empty"
    if len(name) > ROLE_MAX:
        return f"role name must be at most {ROLE_MAX} characters"
    if not _ROLE_NAME.match(name):
        return "role name must be ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def requested_roles_problem(items) -> str | None:
    """For the HTTP flow: a list of role names (whether they exist is decided at grant time)."""
    if items is None:
        return None
    if not isinstance(items, list):
        return "roles must be a list of role names"
    if len(items) > MAX_REQUESTED_ROLES:
        return f"roles must have at most {MAX_REQUESTED_ROLES} entries"
    for index, item in enumerate(items):
        problem = role_name_problem(item)
        if problem:
            return f"roles[{index}]: {problem}"
    return None


def password_problem(password) -> str | None:
    problem = text_problem(password, "password")  # never normalised: the broker compares it byte for byte
    if problem:
        return problem
    if len(password) < PASSWORD_MIN:
        return f"password must be at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"password must be at most {PASSWORD_MAX} characters"
    return None


def permission_problem(pattern, access) -> str | None:
    problem = text_problem(pattern, "topic pattern") or filter_problem(pattern)
    if problem:
        return problem
    if access not in ACCESS_VALUES:
        return f"access must be one of {', '.join(ACCESS_VALUES)}"
    return None


def requested_permissions_problem(items) -> str | None:
    """For the HTTP flow: [{"resource": pattern, "operation": access}, ...]."""
    if items is None:
        return None
    if not isinstance(items, list):
        return "permissions must be a list"
    if len(items) > MAX_REQUESTED_PERMISSIONS:
        return f"permissions must have at most {MAX_REQUESTED_PERMISSIONS} entries"
    for index, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"resource", "operation"}:
            return f"permissions[{index}] must be an object with exactly 'resource' and 'operation'"
        problem = permission_problem(item["resource"], item["operation"])
        if problem:
            return f"permissions[{index}]: {problem}"
    return None


def context_problem(context) -> str | None:
    if context is None:
        return None
    if not isinstance(context, dict):
        return "context must be an object"
    if len(json.dumps(context)) > MAX_CONTEXT_BYTES:
        return f"context must be at most {MAX_CONTEXT_BYTES} bytes as JSON"
    return text_problem(json.dumps(context, ensure_ascii=False), "context")


def registration_problem(username, password, requested_permissions=None, context=None,
                         requested_roles=None) -> tuple[str, str] | None:
    """The first broken rule of a registration as (field, rule), or None: what MQTT and HTTP attempts both obey.
    ``username`` as the device sent it (not normalised: see nfc_problem). Reserved names are the store's to
    refuse (``Base.reserved``: the site's accounts are in the database)."""
    for field, problem in (
        ("username", username_problem(username) or nfc_problem(username)),
        ("password", password_problem(password)),
    ):
        if problem:
            return field, problem
    return asked_problem(requested_permissions, context, requested_roles)


def asked_problem(requested_permissions=None, context=None, requested_roles=None) -> tuple[str, str] | None:
    """The first broken rule of what a registration asks for besides its credentials (a password's or a
    CSR's) as (field, rule), or None."""
    for field, problem in (
        ("permissions", requested_permissions_problem(requested_permissions)),
        ("roles", requested_roles_problem(requested_roles)),
        ("context", context_problem(context)),
    ):
        if problem:
            return field, problem
    return None


def parse_permission(text_or_pair) -> tuple[str, str]:
    """'pattern=access' or (pattern, access) -> (pattern, access); ValueError with the rule when invalid."""
    if isinstance(text_or_pair, str):
        pattern, sep, access = text_or_pair.rpartition("=")
        if not sep:
            raise ValueError(f"permission {text_or_pair!r} must look like PATTERN=ACCESS")
    else:
        pattern, access = text_or_pair
    problem = permission_problem(pattern, access)
    if problem:
        raise ValueError(f"permission {pattern!r}: {problem}")
    return pattern, access


PERMISSION_EXAMPLE = "devices/{username}/#=readWrite"


def parse_permissions(text: str) -> list[tuple[str, str]]:
    """``"a/#=read, b/+=readWrite"`` (separated by commas or spaces) -> ``[("a/#", "read"), ("b/+", "readWrite")]``;
    ValueError naming the first bad word. What the dashboard's dialogs and the CLI's options both read."""
    result: list[tuple[str, str]] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"{part!r}: write PATTERN=ACCESS ({'/'.join(ACCESS_VALUES)}), "
                             f"for example {PERMISSION_EXAMPLE}")
        result.append(parse_permission(part))
    return result
